"""The ceiling for bench/http_bench.py: the smallest WSGI app, served by the same gunicorn.conf.py
(same workers, threads, access log) as the product. Not part of the service.

    gunicorn -c gunicorn.conf.py bench.ceiling_app:app
"""

_BODY = b'{"status":"ok"}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))]


def app(environ, start_response):
    if environ.get("wsgi.input") is not None and environ.get("CONTENT_LENGTH"):
        environ["wsgi.input"].read()  # consume a POST body as the product would
    start_response("200 OK", _HEADERS)
    return [_BODY]

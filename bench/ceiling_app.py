"""References for bench/http_bench.py, served by the same gunicorn.conf.py as the product. Not part of
the service.

    gunicorn -c gunicorn.conf.py 'bench.ceiling_app:app'        # Gunicorn alone
    gunicorn -c gunicorn.conf.py 'bench.ceiling_app:product()'  # the product + a trivial endpoint

`app` is the smallest WSGI app: what Gunicorn itself costs per request. `product()` is the real
service, built from the environment like `app:app`, with one more route, GET /bench/constant, that
answers a constant through every layer a real endpoint passes (Flask, API-key check, security
headers, request metrics): the ceiling of the stack the endpoints are served by.
"""

_BODY = b'{"status":"ok"}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))]

CONSTANT_PATH = "/bench/constant"


def app(environ, start_response):
    if environ.get("wsgi.input") is not None and environ.get("CONTENT_LENGTH"):
        environ["wsgi.input"].read()  # consume a POST body as the product would
    start_response("200 OK", _HEADERS)
    return [_BODY]


def product():
    import app as service  # builds the service from the environment, as `app:app` does

    @service.app.get(CONSTANT_PATH)
    def bench_constant():
        return {"status": "ok"}

    return service.app

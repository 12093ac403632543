"""The reference for bench/http_bench.py: a plain Flask app, nothing of the product's. Not part of the
service.

    gunicorn -c gunicorn.conf.py bench.plain_flask:app

One POST endpoint that parses the JSON body and answers a small JSON object: what a minimal Flask
JSON API costs per request on the product's Gunicorn configuration (gunicorn.conf.py sets the worker
class, threads, access logger and hooks whatever the app is, so this app is served exactly as the
product is). GET /health only tells bench/http_bench.py that the workers are up.
"""

from flask import Flask, request

app = Flask(__name__)

PATH = "/plain"


@app.post(PATH)
def plain():
    body = request.get_json()
    return {"ok": True, "fields": len(body)}


@app.get("/health")
def health():
    return {"status": "ok"}


def limited():
    """The same app behind stock flask-limiter (one limit, fixed window, counters in REDIS_URL,
    X-RateLimit-* headers): what the limiter library alone costs per request. Only for
    `http_bench.py --decompose`; never the reference.

        gunicorn -c gunicorn.conf.py 'bench.plain_flask:limited()'
    """
    import os

    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    limited_app = Flask(__name__)
    limiter = Limiter(get_remote_address, app=limited_app, headers_enabled=True,
                      application_limits=["100000000 per minute"],
                      storage_uri=os.environ["REDIS_URL"],
                      storage_options={"key_prefix": os.environ.get("LIMIT_KEY_PREFIX", "plain-limited")})
    limited_app.post(PATH)(plain)
    limiter.exempt(limited_app.get("/health")(health))
    return limited_app

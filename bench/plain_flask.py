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

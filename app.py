"""The WSGI entry point: `gunicorn -c gunicorn.conf.py app:app`, or `python app.py` for a debug run.

Importing this module builds the production app from the environment; nothing else does that.
Tests and tools call `carbon_optimizer.web.app.create_app(...)` instead. The code lives in the
`carbon_optimizer` package (docs/architecture.md says where each part is).
"""

from carbon_optimizer.web.app import wsgi_app

app = wsgi_app()

if __name__ == "__main__":
    # A single-process debug run on loopback; production runs under Gunicorn.
    app.run(host="127.0.0.1", port=5000)

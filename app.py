"""The WSGI entry point: `gunicorn -c gunicorn.conf.py app:app`, or `python app.py` for a debug run.

Importing this module builds the production app from the environment; nothing else does that.
Tests and tools call `carbon_optimizer.web.app.create_app(...)` instead. The code lives in the
`carbon_optimizer` package (docs/architecture.md says where each part is).

`python app.py [--port N]` is for a developer's machine only (the image runs Gunicorn): Flask's
development server on loopback, the embedded defaults (demo data without an Electricity Maps key)
and DEBUG logging unless LOG_LEVEL says otherwise. Flask's debugger and reloader stay off: the
debugger runs code sent to it.
"""

import argparse
import logging
import os

from carbon_optimizer.web.app import wsgi_app


def _debug_run() -> None:
    parser = argparse.ArgumentParser(description="carbon-optimizer debug server (not for production)")
    parser.add_argument("--port", type=int, default=5000, help="loopback port (default 5000)")
    port = parser.parse_args().port
    os.environ.setdefault("LOG_LEVEL", "DEBUG")  # before the app reads its settings
    debug_app = wsgi_app()
    logging.getLogger("carbon_optimizer.debug_run").debug(
        "Flask development server on 127.0.0.1:%d (debug run; production runs Gunicorn)", port)
    debug_app.run(host="127.0.0.1", port=port, debug=False, use_reloader=False)


if __name__ == "__main__":
    _debug_run()
else:
    app = wsgi_app()

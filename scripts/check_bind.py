#!/usr/bin/env python3
"""`make run`'s first step: is the address Gunicorn will listen on free? Gunicorn alone retries a
taken port for 5 s and then says "Connection in use" without naming the setting that moves it."""

import errno
import os
import socket
import sys

# The same default as gunicorn.conf.py.
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:5000").strip()
if bind.startswith(("unix:", "fd://")):
    sys.exit(0)
host, _, port = bind.rpartition(":")
host = host.strip("[]") or "0.0.0.0"
try:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Gunicorn binds
        probe.bind((host, int(port)))
except ValueError:
    sys.exit(f"make run: GUNICORN_BIND={bind!r} is not HOST:PORT (e.g. 127.0.0.1:5001)")
except OSError as exc:
    taken = exc.errno == errno.EADDRINUSE
    sys.exit(f"make run: cannot listen on {bind} ({'already in use' if taken else exc.strerror}); "
             f"{'another service holds that port: ' if taken else ''}set GUNICORN_BIND to another "
             f"address, e.g. GUNICORN_BIND=127.0.0.1:{int(port) + 1 if port.isdigit() else 5001} make run")

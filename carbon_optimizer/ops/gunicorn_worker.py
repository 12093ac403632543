"""A gthread worker that slow clients cannot stall, and whose own error answers are JSON.

Gunicorn's gthread worker hands a connection to a thread as soon as its first bytes arrive; the
thread then blocks until the whole request head has come in, however long the client takes. Eight
clients sending one header line every few seconds held a worker's threads, and every request that
worker had accepted (a `/health` probe included) waited behind them.

`ReadTimeoutWorker` changes two things (gunicorn.conf.py selects it with `worker_class`):

- The request head is gathered on the worker's event loop, without a thread: a connection goes to
  the thread pool only once its head is complete. A client that has not sent a complete head
  `read_timeout` seconds after it connected (or, on a kept-alive connection, after it began its
  next request) is answered 408 and disconnected. A client that sends nothing at all is just
  disconnected.
- In the thread, every read of the request (the rest of a head, the body) shares one deadline,
  `read_timeout` seconds after the head was complete: a body that does not arrive in time ends
  the request with a 408 (JSON, from the application's error handlers) and the connection closes.

- Probes have a lane of their own: a request whose head is `GET /health` or `GET /metrics` goes to
  a small pool of its own (PROBE_THREADS), so a load balancer's probe and a Prometheus scrape never
  wait behind application requests, however expensive (twenty costly optimize requests at once
  had a `/health` probe queued for 2.4 s), and a flood of probes cannot take the application's
  threads either.

Gunicorn's own answers to requests it refuses before the application sees them (400 malformed
request, 408, 414 request line too long, 431 headers too large, 501 transfer coding) use the
service's JSON envelope, `{"error": {"code": ..., "message": ...}}`, instead of HTML.

TLS on Gunicorn itself or HTTP/2 prior knowledge would need the handshake or preface in the thread:
with either configured, heads are read in threads as before (bounded by the same deadline per read
sequence, but a slow head then holds a thread for up to `read_timeout`).
"""

from __future__ import annotations

import errno
import json
import re
import selectors
import time
from concurrent import futures
from functools import partial

from gunicorn import util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from carbon_optimizer.errors import FailureCode, RequestError

#: Threads per worker for /health and /metrics (see the module's docstring).
PROBE_THREADS = 2
_PROBE_LINES = tuple(f"GET {path}{end}".encode() for path in ("/health", "/metrics") for end in " ?")
_BODY_HEADER = re.compile(rb"\n(content-length[ \t]*:[ \t]*0*[1-9]|transfer-encoding[ \t]*:)", re.IGNORECASE)
#: At most this long to discard a body the application did not read, and then to close the
#: connection gracefully; past it the connection is closed (a slow client cannot hold a thread).
DRAIN_SECONDS = 1.0

#: Seconds a client has to send a complete request head, and then its body. gunicorn.conf.py sets it
#: from GUNICORN_READ_TIMEOUT (post_fork hook).
DEFAULT_READ_TIMEOUT = 5.0

_MESSAGES = {
    400: "malformed HTTP request",
    403: "request forbidden",
    408: "request not received in time",
    414: "request line too long",
    417: "expectation not supported",
    431: "request headers too large",
    500: "internal error",
    501: "transfer coding not supported",
}
_REASONS = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 414: "URI Too Long",
            417: "Expectation Failed", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 501: "Not Implemented"}


def error_code(status: int) -> str:
    """The envelope's `error.code` for a status Gunicorn answers itself."""
    return FailureCode.for_status(status).value


def json_error_response(status: int, message: str | None = None) -> bytes:
    """A complete HTTP/1.1 answer carrying the JSON error envelope; the connection closes after it."""
    body = json.dumps({"error": {"code": error_code(status),
                                 "message": message or _MESSAGES.get(status, "request refused")}},
                      separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "\r\n")
    return head.encode("latin-1") + body


class ReadTimeout(RequestError):
    """A client did not send its request (head or body) before the connection's read deadline.

    A RequestError, so that when the application is the one reading (a body), its error handlers
    answer 408 in the envelope; when Gunicorn is (a head), the worker does."""

    def __init__(self, seconds: float):
        super().__init__(FailureCode.REQUEST_TIMEOUT, f"request not received within {seconds:g} s")


class _DeadlineUnreader(SocketUnreader):
    """Gunicorn's socket reader, with every read bounded by the connection's `read_deadline`."""

    def __init__(self, sock, conn, seconds: float):
        super().__init__(sock)
        self.conn = conn
        self.seconds = seconds

    def chunk(self, size_hint=None):
        deadline = getattr(self.conn, "read_deadline", None)
        if deadline is None:
            return super().chunk(size_hint)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.conn.read_timed_out = True
            raise ReadTimeout(self.seconds)
        previous = self.sock.gettimeout()
        self.sock.settimeout(remaining if not previous else min(previous, remaining))
        try:
            return super().chunk(size_hint)
        except TimeoutError:
            if time.monotonic() < deadline:
                raise  # a shorter timeout someone else set (finish_body): theirs to handle
            self.conn.read_timed_out = True
            raise ReadTimeout(self.seconds) from None
        finally:
            try:
                self.sock.settimeout(previous)
            except OSError:
                pass


class _ErrorCapture:
    """Stands in for the client socket while Gunicorn's handle_error writes its HTML answer, so that
    its status (and its logging and access-log line) are kept and only the body is replaced."""

    def __init__(self):
        self.data = b""

    def gettimeout(self):
        return 0.0

    def setblocking(self, flag):
        pass

    def sendall(self, data):
        self.data += data

    def send(self, data):
        self.data += data
        return len(data)

    def status(self) -> int:
        try:
            return int(self.data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 500


class ReadTimeoutWorker(ThreadWorker):
    """gthread, with request heads gathered on the event loop under a read deadline, bodies read
    under the same deadline, and JSON error answers. See the module's docstring."""

    read_timeout: float = DEFAULT_READ_TIMEOUT

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Connections sending their head, oldest deadline first (every deadline is now +
        # read_timeout when added, so insertion order is deadline order).
        self.gathering: dict[TConn, None] = {}
        self.gather_heads = not self.cfg.is_ssl
        limits = (self.cfg.limit_request_line or 8190) + \
            (self.cfg.limit_request_fields or 100) * ((self.cfg.limit_request_field_size or 8190) + 2)
        self.max_head = max(64 * 1024, limits + 4)

    def init_process(self):
        self.probe_pool = futures.ThreadPoolExecutor(max_workers=PROBE_THREADS,
                                                     thread_name_prefix="probe")
        super().init_process()  # runs the worker's loop until it exits

    def run(self):
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)

    def enqueue_req(self, conn):
        """Probes to their own lane, everything else to Gunicorn's thread pool. A probe that
        announces a body is no probe (a slow body would hold the lane): it goes to the pool."""
        head = getattr(conn, "head", None)
        if head is not None and bytes(head[:16]).startswith(_PROBE_LINES) \
                and not _BODY_HEADER.search(bytes(head)):
            done = self.probe_pool.submit(self.handle, conn)
            done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
            return
        super().enqueue_req(conn)

    # -- the event loop: gather each head without a thread ----------------------------------

    def accept(self, listener):
        if not self.gather_heads:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        if negotiation.prior_knowledge_allowed(self.cfg, client_addr):
            # An HTTP/2 preface is read by conn.init() in the thread: Gunicorn's own path.
            client_sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._gather(conn)

    def on_client_socket_readable(self, conn, client):
        """A kept-alive connection is sending its next request: gather that head too."""
        if not self.gather_heads or conn.is_http2:
            return super().on_client_socket_readable(conn, client)
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._gather(conn)

    def _gather(self, conn):
        conn.head = bytearray()
        conn.scanned = 0
        conn.read_deadline = time.monotonic() + self.read_timeout
        # The head is often in already: no poller round trip then.
        if self._read_head(conn):
            return
        self.gathering[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn, client):
        if conn not in self.gathering:
            return
        if self._read_head(conn, registered=True):
            del self.gathering[conn]

    def _read_head(self, conn, registered: bool = False) -> bool:
        """Read what the client has sent. True when the connection has left the loop (its head is
        complete and went to a thread, or it was closed)."""
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn, registered)
            return True
        conn.head += data
        start = max(conn.scanned - 3, 0)
        complete = conn.head.find(b"\r\n\r\n", start) >= 0 or conn.head.find(b"\n\n", start) >= 0
        conn.scanned = len(conn.head)
        if not complete and len(conn.head) < self.max_head:
            return False
        if registered:
            self.poller.unregister(conn.sock)
        conn.sock.setblocking(True)
        self.enqueue_req(conn)
        return True

    def _drop(self, conn, registered: bool, answer: bytes | None = None):
        if registered:
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
        if answer:
            try:
                conn.sock.send(answer)  # non-blocking, small: fits the socket buffer
            except OSError:
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        super().murder_pending()
        now = time.monotonic()
        while self.gathering:
            conn = next(iter(self.gathering))
            if conn.read_deadline > now and self.alive:
                break
            del self.gathering[conn]
            if conn.head:
                self.log.info("Request head from ip=%s not complete within %g s: 408",
                              conn.client[0] if conn.client else "", self.read_timeout)
            # A client that sent nothing is just disconnected; one part-way through a head is told.
            self._drop(conn, registered=True,
                       answer=json_error_response(408) if conn.head else None)

    # -- the thread: the request, every read under the deadline -------------------------------

    def handle(self, conn):
        head = getattr(conn, "head", None)
        if head is not None:
            conn.head = None
            conn.sock.setblocking(True)
            conn.data_ready = True
            try:
                conn.init()
            except Exception as e:  # as Gunicorn's handle() would
                self.handle_error(None, conn.sock, conn.client, e)
                return False
            if conn.parser is not None and not conn.is_http2:
                self._bound_reads(conn)
                conn.parser.unreader.unread(bytes(head))
            # From a complete head: the rest (a body) must follow within read_timeout.
            conn.read_deadline = time.monotonic() + self.read_timeout
        else:
            # Gunicorn's own path (TLS, HTTP/2, or bytes already buffered from a previous request).
            conn.read_deadline = time.monotonic() + self.read_timeout
            if conn.initialized and conn.parser is not None and not conn.is_http2:
                self._bound_reads(conn)
        conn.read_timed_out = False
        try:
            result = super().handle(conn)
        finally:
            conn.read_deadline = None
        if result is False:
            # Closed here, on this thread, with a short linger: Gunicorn closes on its event loop,
            # where a graceful close waits up to 2 s for the client, holding every connection of
            # the worker (probes included) meanwhile. finish_request then only counts it.
            util.close_graceful(conn.sock, timeout=DRAIN_SECONDS)
            conn.closed_in_thread = True
        return result

    def finish_request(self, conn, fs):
        if getattr(conn, "closed_in_thread", False):
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)

    def _bound_reads(self, conn):
        unreader = conn.parser.unreader
        if type(unreader) is SocketUnreader:
            bounded = _DeadlineUnreader(unreader.sock, conn, self.read_timeout)
            bounded.buf = unreader.buf
            conn.parser.unreader = bounded

    def handle_request(self, req, conn):
        try:
            keepalive = super().handle_request(req, conn)
        finally:
            conn.read_deadline = None
        # Past the deadline (a body that never came), what is left on the socket is unknown: close.
        return keepalive and not getattr(conn, "read_timed_out", False)

    def _keepalive_after(self, conn, keepalive):
        """Discard a body the application did not read (an early 401 or 413) under a deadline that
        holds per read, or close. Gunicorn's own drain reads 1 KiB at a time and checks its
        deadline only between those reads, so a client sending a byte a second kept a thread."""
        if not keepalive:
            return False
        conn.read_deadline = time.monotonic() + DRAIN_SECONDS
        try:
            return bool(conn.parser.finish_body(deadline=conn.read_deadline))
        except (ReadTimeout, OSError):
            return False
        finally:
            conn.read_deadline = None

    # -- Gunicorn's own error answers, as JSON -------------------------------------------------

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, ReadTimeout):
            self.log.info("Request from ip=%s not received within %g s: 408",
                          addr[0] if addr else "", self.read_timeout)
            status = 408
        else:
            capture = _ErrorCapture()
            super().handle_error(req, capture, addr, exc)
            status = capture.status()
        try:
            util.write_nonblock(client, json_error_response(status))
        except Exception:
            self.log.debug("Failed to send error message.")

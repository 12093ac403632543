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
request, 408, 414 request line too long, 417, 431 headers too large, 501 transfer coding) are the
service's JSON error envelope, written by errors.py's ErrorWriter, instead of HTML.

TLS on Gunicorn itself or HTTP/2 prior knowledge would need the handshake or preface in the thread:
with either configured, heads are read in threads as before (bounded by the same deadline per read
sequence, but a slow head then holds a thread for up to `read_timeout`).
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import struct
import time
from concurrent import futures
from functools import partial

from gunicorn import util
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from carbon_optimizer.errors import ErrorWriter, FailureCode, ReadTimeout
from carbon_optimizer.ops.thread_load import DEFAULT_GRACE_SECONDS, ENVIRON_KEY, ThreadLoad

#: Threads per worker for /health and /metrics (see the module's docstring).
PROBE_THREADS = 2
_PROBE_LINES = tuple(f"GET {path}{end}".encode()
                     for path in ("/health", "/health/live", "/metrics") for end in " ?")
_BODY_HEADER = re.compile(rb"\n(content-length[ \t]*:[ \t]*0*[1-9]|transfer-encoding[ \t]*:)", re.IGNORECASE)
#: At most this long to discard a body the application did not read, and then to close the
#: connection gracefully; past it the connection is closed (a slow client cannot hold a thread).
DRAIN_SECONDS = 1.0

#: Seconds a client has to send a complete request head, and then its body. gunicorn.conf.py sets it
#: from GUNICORN_READ_TIMEOUT (post_fork hook).
DEFAULT_READ_TIMEOUT = 5.0
#: Seconds a client has to take a whole response, from its first byte to its last (GUNICORN_WRITE_TIMEOUT).
DEFAULT_WRITE_TIMEOUT = 10.0
#: When the connection table is full, at most this share of it is closed at once to make room.
EVICT_SHARE = 0.1
#: Bytes of incomplete request heads one worker holds at once, over all its connections.
HEAD_BYTES_BUDGET = 8 * 1024 * 1024

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


# Gunicorn's refusals are final (no upstream code): no configured back-off to follow.
_WRITER = ErrorWriter()


def json_error_response(status: int, message: str | None = None) -> bytes:
    """A complete HTTP/1.1 answer for a status Gunicorn chose, written by the service's error
    writer (its code, body and any Retry-After); the connection closes after it."""
    answer = _WRITER.answer(FailureCode.for_status(status), message or _MESSAGES.get(status, "request refused"))
    head = (f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Error')}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(answer.body)}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in answer.headers)
            + "\r\n")
    return head.encode("latin-1") + answer.body


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


class WriteTimeout(TimeoutError):
    """A client did not take its response before the write deadline. A TimeoutError (an OSError),
    so Gunicorn's handle_request passes it through untouched (its access log line and
    post_request hook still run) and the worker closes the connection."""


class _WriteDeadlineSocket:
    """The client socket as the response sees it: every write (headers, body, sendfile) shares one
    deadline, `seconds` after the first byte is written. Gunicorn writes with a blocking sendall
    and sendfile and no limit: a client that never read its answer held the thread for ever."""

    def __init__(self, sock, seconds: float):
        self._sock = sock
        self.seconds = seconds
        self.deadline: float | None = None

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def _remaining(self) -> float:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.seconds
        left = self.deadline - now
        if left <= 0:
            raise WriteTimeout(f"response not taken within {self.seconds:g} s")
        return left

    def _bounded(self, send, *args):
        previous = self._sock.gettimeout()
        # With a timeout, sendall's is the total for the call (Python 3.5+), not per send.
        self._sock.settimeout(self._remaining())
        try:
            return send(*args)
        except TimeoutError:
            raise WriteTimeout(f"response not taken within {self.seconds:g} s") from None
        finally:
            self._sock.settimeout(previous)

    def sendall(self, data):
        return self._bounded(self._sock.sendall, data)

    def send(self, data):
        return self._bounded(self._sock.send, data)

    def sendfile(self, file, offset: int = 0, count: int | None = None):
        """os.sendfile under the deadline. socket.sendfile's timeout applies to each wait for the
        socket, so a client reading a byte now and then kept it going."""
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        out, source, sent = self._sock.fileno(), file.fileno(), 0
        previous = self._sock.gettimeout()
        self._sock.setblocking(False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(out, selectors.EVENT_WRITE)
                while sent < count:
                    try:
                        n = os.sendfile(out, source, offset + sent, min(count - sent, 1 << 20))
                    except BlockingIOError:
                        if not selector.select(self._remaining()):
                            self._remaining()  # raises once the deadline has passed
                        continue
                    if n == 0:  # the file is shorter than said
                        break
                    sent += n
        finally:
            self._sock.settimeout(previous)
        return sent


def _body_in_flight(environ) -> bool:
    """Whether part of the request's body has not reached the server yet. Answering then and
    keeping the connection would mean waiting, on a thread, for a body nobody will read."""
    reader = getattr(environ.get("wsgi.input"), "reader", None)
    if isinstance(reader, LengthReader):
        with reader.unreader.buf.getbuffer() as held:
            return reader.length > held.nbytes
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None  # its end not seen yet; how much remains is unknown
    return False


def _abort(sock) -> None:
    """Close at once with a reset: nothing is left worth delivering, and a graceful close would
    keep unsent bytes (and the socket) in the kernel for a client that does not read."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    util.close(sock)


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
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    ready_grace: float = DEFAULT_GRACE_SECONDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Connections sending their head, oldest deadline first (every deadline is now +
        # read_timeout when added, so insertion order is deadline order).
        self.gathering: dict[TConn, None] = {}
        self.head_bytes = 0  # held by the heads in `gathering`
        self.gather_heads = not self.cfg.is_ssl
        limits = (self.cfg.limit_request_line or 8190) + \
            (self.cfg.limit_request_fields or 100) * ((self.cfg.limit_request_field_size or 8190) + 2)
        self.max_head = max(64 * 1024, limits + 4)

    def init_process(self):
        self.probe_pool = futures.ThreadPoolExecutor(max_workers=PROBE_THREADS,
                                                     thread_name_prefix="probe")
        self.thread_load = ThreadLoad(self.cfg.threads, grace=self.ready_grace)
        # Connections closing: their answer sent, what the client still sends discarded here on
        # the loop until it closes too (or their deadline), so that the kernel does not reset the
        # connection under an answer the client has not read yet. Oldest deadline first.
        self.lingering: dict[TConn, float] = {}
        super().init_process()  # runs the worker's loop until it exits

    def load_wsgi(self):
        super().load_wsgi()
        app, load = self.wsgi, self.thread_load

        def application(environ, start_response):
            environ[ENVIRON_KEY] = load  # for /health's readiness answer

            def start(status, headers, exc_info=None):
                # An answer before the body has come (a 401, 413 or 429 for a request the
                # application refused unread): close after it rather than wait for that body.
                if _body_in_flight(environ):
                    response = getattr(start_response, "__self__", None)  # Gunicorn's Response
                    if hasattr(response, "force_close"):
                        response.force_close()
                return start_response(status, headers, exc_info)
            return app(environ, start)
        self.wsgi = application

    def run(self):
        try:
            super().run()
        finally:
            self.probe_pool.shutdown(wait=False)

    def enqueue_req(self, conn):
        """Probes to their own lane, everything else to Gunicorn's thread pool. A probe that
        announces a body is no probe (a slow body would hold the lane): it goes to the pool."""
        head = getattr(conn, "head", None)
        if head is not None and bytes(head[:20]).startswith(_PROBE_LINES) \
                and not _BODY_HEADER.search(bytes(head)):
            done = self.probe_pool.submit(self.handle, conn)
            done.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
            return
        conn.app_thread = True
        self.thread_load.started()
        super().enqueue_req(conn)

    # -- the event loop: gather each head without a thread ----------------------------------

    def accept(self, listener):
        if not self.gather_heads:
            return super().accept(listener)
        try:
            client_sock, client_addr = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # Out of file descriptors (a limit below worker_connections): make room, as when
                # the table is full, rather than let the error end the worker.
                self.log.warning("Out of file descriptors at %d connections", self.nr_conns)
                self._make_room()
                return
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
        conn.counted = 0
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
        conn.counted += len(data)
        self.head_bytes += len(data)
        if self.head_bytes > HEAD_BYTES_BUDGET and self._over_budget(conn, registered):
            return True
        start = max(conn.scanned - 3, 0)
        complete = conn.head.find(b"\r\n\r\n", start) >= 0 or conn.head.find(b"\n\n", start) >= 0
        conn.scanned = len(conn.head)
        if not complete and len(conn.head) < self.max_head:
            return False
        if registered:
            self.poller.unregister(conn.sock)
        self._uncount(conn)
        conn.sock.setblocking(True)
        self.enqueue_req(conn)
        return True

    def _uncount(self, conn):
        self.head_bytes -= getattr(conn, "counted", 0)
        conn.counted = 0

    def _over_budget(self, conn, registered: bool) -> bool:
        """The heads being gathered hold more than HEAD_BYTES_BUDGET: the largest is refused (431).
        True when that was `conn`. Each head is bounded by Gunicorn's limits (about 800 KiB with
        the defaults), but the worker holds up to worker_connections of them at once."""
        victim = max(self.gathering, key=lambda c: len(c.head), default=conn)
        if len(conn.head) >= len(victim.head):
            victim = conn
        self.log.info("Request heads over %d bytes in this worker: the largest, from ip=%s, refused",
                      HEAD_BYTES_BUDGET, victim.client[0] if victim.client else "")
        if victim is conn:
            self._drop(conn, registered, answer=json_error_response(431))
            return True
        del self.gathering[victim]
        self._drop(victim, registered=True, answer=json_error_response(431))
        return False

    def _drop(self, conn, registered: bool, answer: bytes | None = None):
        self._uncount(conn)
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
        self.murder_lingering()
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

    def _linger(self, conn):
        conn.sock.setblocking(False)
        self.lingering[conn] = conn.linger_until
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))

    def _on_linger_readable(self, conn, client):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.lingered = getattr(conn, "lingered", 0) + len(data)
        if not data or conn.lingered >= 65536:  # the client closed too, or sends too much
            self._end_linger(conn)

    def _end_linger(self, conn):
        del self.lingering[conn]
        self._drop(conn, registered=True)

    def murder_lingering(self):
        now = time.monotonic()
        while self.lingering:
            conn, until = next(iter(self.lingering.items()))
            if until > now and self.alive:
                break
            self._end_linger(conn)

    def set_accept_enabled(self, enabled):
        """The connection table is full (worker_connections): make room by closing idle
        connections, oldest first (kept-alive ones, then ones that have sent nothing yet), rather
        than stop accepting. Thousands of idle connections otherwise filled every worker's table
        and new clients, a balancer's probes included, waited in the listen backlog."""
        if not enabled and self.alive and self._make_room():
            enabled = True
        super().set_accept_enabled(enabled)

    def _make_room(self) -> bool:
        wanted = max(1, int(self.worker_connections * EVICT_SHARE))
        closed = 0
        while closed < wanted and self.keepalived_conns:
            conn = self.keepalived_conns.popleft()
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            self.nr_conns -= 1
            conn.close()
            closed += 1
        for conn in [c for c in self.gathering if not c.head][:wanted - closed]:
            del self.gathering[conn]
            self._drop(conn, registered=True)
            closed += 1
        if closed:
            self.log.info("Connection table full (%d): closed %d idle connections",
                          self.worker_connections, closed)
        return self.nr_conns < self.worker_connections

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
        if result is False and not getattr(conn, "closed_in_thread", False):
            # A graceful close: the answer's end goes out (FIN), then what the client still sends
            # is discarded for up to DRAIN_SECONDS, on the event loop without blocking
            # (finish_request): Gunicorn's close_graceful blocks there, holding every connection
            # of the worker for up to 2 s, and on this thread it held an application thread.
            try:
                conn.sock.shutdown(socket.SHUT_WR)
                conn.linger_until = time.monotonic() + DRAIN_SECONDS
            except OSError:  # already gone
                util.close(conn.sock)
                conn.closed_in_thread = True
        return result

    def finish_request(self, conn, fs):
        if getattr(conn, "app_thread", False):
            conn.app_thread = False
            self.thread_load.finished()
        if getattr(conn, "closed_in_thread", False):
            self.nr_conns -= 1
            return
        if getattr(conn, "linger_until", None) is not None:
            self._linger(conn)
            return
        super().finish_request(conn, fs)

    def _bound_reads(self, conn):
        unreader = conn.parser.unreader
        if type(unreader) is SocketUnreader:
            bounded = _DeadlineUnreader(unreader.sock, conn, self.read_timeout)
            bounded.buf = unreader.buf
            conn.parser.unreader = bounded

    def handle_request(self, req, conn):
        sock = conn.sock
        conn.sock = _WriteDeadlineSocket(sock, self.write_timeout)  # the response writes to it
        try:
            keepalive = super().handle_request(req, conn)
        except WriteTimeout:
            self.log.info("Response to ip=%s not taken within %g s: connection closed",
                          conn.client[0] if conn.client else "", self.write_timeout)
            _abort(sock)
            conn.closed_in_thread = True
            return False
        finally:
            conn.sock = sock
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

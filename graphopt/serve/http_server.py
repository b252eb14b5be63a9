"""The HTTP/1.1 server of the REST API: keep-alive connections served by a bounded pool of threads.

Connections waiting for a request (new, or kept alive after one) hold no thread: a selector
thread watches them, collects each request's bytes as they come (up to GATHER_BYTES) and queues
the connection for the worker pool once the request is whole. A worker parses and answers it
(reading the rest of a larger body itself) and hands the connection back. A request must arrive
within the read timeout of its first byte (else 408); idle connections are closed after it; past
max_connections open connections, a new one is answered 503 at once. So stalled, trickling or
idle clients cost a file descriptor and a small buffer each, never a thread each.
"""

import email.utils
import json
import logging
import queue
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus

from graphopt.serve.errors import (
    BadRequest,
    HeadersTooLarge,
    LengthRequired,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServerBusy,
)
from graphopt.serve.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_WORKERS = 32
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
# A connection the server closes is first drained of what the client still sends, for up to this
# long: closing a socket with unread bytes makes the kernel send a reset, which can destroy the
# reply before the client has read it.
DRAIN_SECONDS = 2.0
# A rejected body up to this many times the limit is read and dropped to keep the connection.
DISCARD_FACTOR = 8
# The selector thread collects a request's bytes itself, up to this many per connection, and
# queues it for a worker once it is whole: a client stalling within them holds no worker. A
# larger body is read by the worker (within the same read timeout).
GATHER_BYTES = 64 * 1024

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$")
_WORKER_FRAMES = re.compile(rb"(?im)^(?:expect|transfer-encoding):")
_REQUEST_LINE = re.compile(r"([A-Z]+) (\S+) HTTP/1\.([01])")


def _gathered(buffer, max_body_bytes):
    """Whether a worker should take the request begun in ``buffer`` now: it is whole, or the rest
    is the worker's to read (a body over GATHER_BYTES, a client waiting for "100 Continue") or to
    refuse (a head or body over its limit, framing it cannot parse)."""
    end = _HEAD_END.search(buffer, 0, MAX_HEAD_BYTES + 4)
    if end is None:
        return len(buffer) > MAX_HEAD_BYTES
    head = buffer[: end.start()]
    if _WORKER_FRAMES.search(head):
        return True
    length = _CONTENT_LENGTH.search(head)
    if length is None or int(length[1]) > max_body_bytes:
        return True
    return len(buffer) - end.end() >= int(length[1]) or len(buffer) >= GATHER_BYTES


_TOO_SLOW = "the request did not arrive within the server's read timeout; send the whole request at once"


class _ClientGone(Exception):
    """The client closed its side or stopped taking the reply: nothing more can be said to it."""


@dataclass
class _Request:
    method: str
    path: str
    headers: dict
    keep_alive: bool
    expects_continue: bool


def _parse_head(head):
    """The request line and headers; BadRequest (or HeadersTooLarge) when they are malformed."""
    lines = head.decode("latin-1").split("\n")
    match = _REQUEST_LINE.fullmatch(lines[0].rstrip("\r"))
    if match is None:
        raise BadRequest(f"malformed request line {lines[0][:80]!r}; send METHOD PATH HTTP/1.1")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise HeadersTooLarge(f"more than {MAX_HEADER_LINES} header lines; send fewer headers")
    headers = {}
    for line in lines[1:]:
        line = line.rstrip("\r")
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"malformed header line {line[:80]!r}; send Name: value")
        name, value = name.lower(), value.strip()
        if name == "content-length" and headers.get(name, value) != value:
            raise BadRequest("conflicting Content-Length headers; send one")
        headers[name] = value
    method, path, minor = match.groups()
    tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = "close" not in tokens if minor == "1" else "keep-alive" in tokens
    return _Request(method, path, headers, keep_alive, headers.get("expect", "").lower() == "100-continue")


def _body_length(request):
    """The body's byte count from Content-Length; a RequestError when the body cannot be framed."""
    if "transfer-encoding" in request.headers:
        raise BadRequest("chunked request bodies are not supported; send a Content-Length")
    value = request.headers.get("content-length")
    if value is None:
        if request.method == "POST":
            raise LengthRequired("a POST needs a Content-Length header")
        return 0
    if not value.isdigit():
        raise BadRequest(f"Content-Length {value[:40]!r} is not a byte count")
    return int(value)


class _Connection:
    """A client socket and the bytes read from it but not used yet."""

    def __init__(self, sock, address):
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.idle_since = time.monotonic()
        self.request_began = None

    def _receive(self, deadline):
        """Append what the client sends next; False when it has closed its side."""
        # past the deadline, bytes already here are still taken (a request that waited in the
        # queue behind slow clients has often arrived whole); only waiting for more is refused
        try:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.0))
            chunk = self.sock.recv(1 << 16)
        except (TimeoutError, BlockingIOError):
            raise RequestTimeout(_TOO_SLOW) from None
        except OSError:
            raise _ClientGone from None
        self.buffer += chunk
        return bool(chunk)

    def read_head(self, deadline):
        """The request line and headers, or None when the client closed before sending any."""
        while True:
            if self.buffer[:1] in (b"\r", b"\n"):  # blank lines before a request are allowed
                del self.buffer[: len(self.buffer) - len(self.buffer.lstrip(b"\r\n"))]
            end = _HEAD_END.search(self.buffer, 0, MAX_HEAD_BYTES + 4)
            if end is not None:
                head = bytes(self.buffer[: end.start()])
                del self.buffer[: end.end()]
                return head
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HeadersTooLarge(f"request line and headers exceed {MAX_HEAD_BYTES} bytes")
            if not self._receive(deadline):
                if self.buffer:
                    raise _ClientGone
                return None

    def read_body(self, length, deadline):
        while len(self.buffer) < length:
            if not self._receive(deadline):
                raise _ClientGone
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body

    def discard(self, length, deadline):
        while length > len(self.buffer):
            length -= len(self.buffer)
            self.buffer.clear()
            if not self._receive(deadline):
                raise _ClientGone
        del self.buffer[:length]

    def send(self, data, timeout):
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(data)
        except OSError:  # includes the timeout of a client that does not read its reply
            raise _ClientGone from None


@dataclass
class RawReply:
    """A reply body that is not JSON (the Prometheus text), with its Content-Type."""

    content_type: str
    payload: bytes


_date = [0, ""]  # (second, Date header value): formatted once a second, not once a reply


def _http_date():
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date[1]


def _response(status, document, headers=(), close=False, head_only=False):
    if isinstance(document, RawReply):
        payload, content_type = document.payload, document.content_type
    else:
        payload, content_type = (
            json.dumps(document, separators=(",", ":")).encode("utf-8"),
            "application/json",
        )
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: graphopt-serve",
        f"Date: {_http_date()}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if close:
        lines.append("Connection: close")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (b"" if head_only else payload)


class RestServer:
    """The HTTP side: a listening socket, a selector thread for waiting connections, worker threads."""

    def __init__(
        self,
        api,
        host,
        port,
        max_body_bytes=DEFAULT_MAX_BODY_BYTES,
        read_timeout=DEFAULT_READ_TIMEOUT_SECONDS,
        max_connections=DEFAULT_MAX_CONNECTIONS,
        workers=DEFAULT_WORKERS,
    ):
        self.api = api  # a RestApi
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.stopping = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # a large backlog: a few dozen clients connecting at once must not overflow it (the
        # kernel would reset them or delay them by a SYN retry, a 1 s latency spike)
        self._listener = socket.create_server((host, port), family=family, backlog=1024)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._handed_back = []  # (connection, what next) from the workers, under _lock
        self._lock = threading.Lock()
        self._ready = queue.SimpleQueue()  # connections with a request gathered; at most max_connections
        # fileno -> connection, both touched by the selector thread only: waiting for (the rest of)
        # a request, and closed by the server and read until the client closes too
        self._waiting = {}
        self._draining = {}
        self._open = 0
        self._thread = None
        self._workers = [
            threading.Thread(target=self._work, name=f"graphopt-rest-{i}", daemon=True)
            for i in range(workers)
        ]

    @property
    def port(self):
        """The bound port (useful when 0 asked for an ephemeral one)."""
        return self._listener.getsockname()[1]

    def start(self):
        """Serve in background threads."""
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._select_loop, name="graphopt-rest", daemon=True)
        self._thread.start()
        for worker in self._workers:
            worker.start()

    def stop(self, grace_seconds):
        """Stop accepting connections, answer requests already arriving (up to grace_seconds), close."""
        deadline = time.monotonic() + grace_seconds
        self.stopping = True
        self._hand_back(None, "stop")
        for _ in self._workers:
            self._ready.put(None)
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        self._hand_back(None, "exit")
        self._thread.join(grace_seconds)
        self.server_close()

    def server_close(self):
        """Close the listening socket (the only thing left open when start() was never called)."""
        self._listener.close()
        self._selector.close()
        self._wake_reader.close()
        self._wake_writer.close()

    # ---- the selector thread: accepting, waiting for requests, draining before close ----

    def _select_loop(self):
        while True:
            for key, _ in self._selector.select(timeout=0.25):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._wake_reader:
                    if not self._take_handed_back():
                        return
                elif key.data == "drain":
                    self._drain(key.fileobj)
                else:
                    self._gather(self._waiting[key.data])
            now = time.monotonic()
            for conn in list(self._waiting.values()):
                if conn.request_began is not None and now - conn.request_began > self.read_timeout:
                    self._time_out(conn)
                elif conn.request_began is None and now - conn.idle_since > self.read_timeout:
                    self._close(conn)
            for conn in list(self._draining.values()):
                if now - conn.idle_since > DRAIN_SECONDS:
                    self._close(conn)

    def _gather(self, conn):
        """Take what a waiting connection sent; queue it for a worker once its request is gathered."""
        try:
            chunk = conn.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)
            return
        if conn.request_began is None:
            conn.request_began = time.monotonic()  # the read timeout counts from the first byte
        conn.buffer += chunk
        if _gathered(conn.buffer, self.max_body_bytes):
            self._selector.unregister(conn.sock)
            del self._waiting[conn.sock.fileno()]
            self._ready.put(conn)

    def _time_out(self, conn):
        self._selector.unregister(conn.sock)
        del self._waiting[conn.sock.fileno()]
        late = RequestTimeout(_TOO_SLOW)
        try:
            conn.sock.send(_response(late.http_status, {"error": str(late)}, close=True))
        except OSError:
            pass
        self._start_draining(conn)

    def _accept(self):
        while not self.stopping:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            # replies go out in one send; no delay for an interim "100 Continue" either
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, address)
            self._open += 1
            if self._open > self.max_connections:
                busy = ServerBusy(f"the server has {self.max_connections} connections open; retry later")
                try:
                    sock.setblocking(False)
                    sock.send(_response(busy.http_status, {"error": str(busy)}, close=True))
                except OSError:
                    pass
                self._start_draining(conn)
            else:
                self._wait_for_request(conn)

    def _wait_for_request(self, conn):
        conn.idle_since = time.monotonic()
        if conn.buffer:  # the client sent its next request along with the last one
            conn.request_began = conn.idle_since
            if _gathered(conn.buffer, self.max_body_bytes):
                self._ready.put(conn)
                return
        conn.sock.setblocking(False)
        self._waiting[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn.sock.fileno())

    def _start_draining(self, conn):
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.setblocking(False)
        except OSError:
            self._close(conn)
            return
        conn.idle_since = time.monotonic()
        self._draining[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, "drain")

    def _drain(self, sock):
        try:
            if sock.recv(1 << 16):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(self._draining[sock.fileno()])

    def _close(self, conn):
        fileno = conn.sock.fileno()
        if self._waiting.pop(fileno, None) is not None or self._draining.pop(fileno, None) is not None:
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._open -= 1

    def _hand_back(self, conn, what_next):
        with self._lock:
            self._handed_back.append((conn, what_next))
        try:
            self._wake_writer.send(b"x")
        except OSError:
            pass

    def _take_handed_back(self):
        """Act on what the workers handed back; False when the loop should end."""
        self._wake_reader.recv(4096)
        with self._lock:
            handed_back, self._handed_back = self._handed_back, []
        for conn, what_next in handed_back:
            if what_next == "stop":
                self._selector.unregister(self._listener)
                self._listener.close()
                for waiting in list(self._waiting.values()):
                    self._close(waiting)
            elif what_next == "exit":
                for conn in list(self._draining.values()):
                    self._close(conn)
                return False
            elif what_next == "wait" and not self.stopping:
                self._wait_for_request(conn)
            elif what_next in ("wait", "drain"):
                self._start_draining(conn)
            else:
                self._close(conn)
        return True

    # ---- worker threads: one request at a time per connection ----

    def _work(self):
        while True:
            conn = self._ready.get()
            if conn is None:
                return
            try:
                what_next = self._serve(conn)
            except Exception:  # noqa: BLE001 - a bug must cost one connection, never a worker
                log.exception("REST connection from %s failed", conn.address)
                what_next = "close"
            self._hand_back(conn, what_next)

    def _serve(self, conn):
        """Answer the request gathered on conn; then "wait" (for another), "drain" or "close"."""
        began, conn.request_began = conn.request_began or time.monotonic(), None
        try:
            keep_alive = self._answer(conn, began + self.read_timeout)
        except _ClientGone:
            return "close"
        return "wait" if keep_alive else "drain"

    def _answer(self, conn, deadline):
        """Read one request (by ``deadline``) and reply to it; True if the connection stays open."""
        try:
            head = conn.read_head(deadline)
            if head is None:
                raise _ClientGone
            request = _parse_head(head)
        except RequestError as exc:
            conn.send(_response(exc.http_status, {"error": str(exc)}, close=True), self.read_timeout)
            return False
        status, document, headers, close = self._respond(conn, request, deadline)
        close = close or not request.keep_alive or self.stopping
        log.debug("%s - %s %s %d", conn.address[0], request.method, request.path, status)
        conn.send(
            _response(status, document, headers, close, head_only=request.method == "HEAD"), self.read_timeout
        )
        return not close

    def _respond(self, conn, request, deadline):
        """(status, JSON document, extra headers, close) for one request whose head is read."""
        try:
            length = _body_length(request)
        except RequestError as exc:
            return exc.http_status, {"error": str(exc)}, (), True  # the body cannot be found
        close = False
        try:
            try:
                action, target = self.api.route(request.method, request.path)
                if length > self.max_body_bytes:
                    raise PayloadTooLarge(
                        f"request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes"
                    )
            except RequestError:
                # An unread body would be taken for the next request: read a moderately large one
                # away; close when it is huge or the client waits for "100 Continue" to send it.
                close = request.expects_continue or length > DISCARD_FACTOR * self.max_body_bytes
                if not close:
                    conn.discard(length, deadline)
                raise
            if action == "metrics":
                conn.discard(length, deadline)
                return 200, RawReply(CONTENT_TYPE, self.api.exposition()), (), False
            if action != "predict":
                conn.discard(length, deadline)
                return 200, getattr(self.api, action)(target), (), False
            if request.expects_continue:
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n", self.read_timeout)
            return 200, self.api.predict(target, conn.read_body(length, deadline)), (), False
        except RequestTimeout as exc:
            return exc.http_status, {"error": str(exc)}, (), True
        except RequestError as exc:
            headers = (("Allow", exc.allow),) if isinstance(exc, MethodNotAllowed) else ()
            return exc.http_status, {"error": str(exc)}, headers, close

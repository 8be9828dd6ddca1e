"""The admin HTTP listener every service runs: /healthz, /readyz, /metrics, plus extra routes.

It runs in its own daemon thread, so a service's main loop (threaded or asyncio) never
blocks it and a busy main loop never makes a liveness probe time out. Services add JSON
views with `route()` and fixed HTML pages with `page()`.

Its port is reachable by every peer of the pod's network, so no peer can exhaust it
(`AdminLimits`, documented in docs/DEVELOPING.md):
- connections are read by one asyncio loop, and complete requests are handled by a fixed
  pool of threads, probes ahead of other views: the number of threads does not grow with
  the number of connections, and slow views queued up do not hold a probe back;
- at most `max_connections` connections: when the table is full, the connection that has
  waited longest on its peer (idle, trickling a request, or not reading its response)
  is closed to make room, so a probe always gets in (a newcomer is refused only while
  every connection waits for a handler thread);
- a request (line and headers, no body accepted) must arrive complete within
  `request_timeout` of its first byte, and fit in `max_head_bytes`; a keep-alive
  connection idle for `idle_timeout` is closed; a response must be taken by the peer
  within `request_timeout`.
Closed connections are counted in `admin_connections_closed_total{reason}`.

If the /metrics exposition raises (a collector, a value that cannot be encoded), /metrics
answers 500 and /readyz 503 naming the failure, until an exposition works again. Every
response carries the suite's headers (patterns/common/http_headers.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from patterns.common.http_headers import NO_STORE, NOSNIFF, STRICT_POLICY, page_policy
from patterns.common.metrics import counter_by

log = logging.getLogger(__name__)

# A check returns (ok, detail); detail is shown in the probe's response body.
Check = Callable[[], tuple[bool, str]]
# A route takes the query parameters and returns (status, content type, body).
Route = Callable[[dict[str, list[str]]], tuple[int, str, bytes]]

TEXT = "text/plain; charset=utf-8"
CLOSE_REASONS = ("idle_timeout", "request_timeout", "evicted", "full", "too_large", "bad_request")


def json_response(payload: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload, default=str).encode()


@dataclass(frozen=True)
class AdminLimits:
    """What one peer may hold of the admin server. With the defaults, the connections hold
    at most about 64 x 2 x 16 KiB of unread requests, and 5 threads serve them all."""

    max_connections: int = 64
    handler_threads: int = 4
    request_timeout: float = 5.0  # from a request's first byte to its end; also per response
    idle_timeout: float = 30.0  # a keep-alive connection with no request
    max_head_bytes: int = 16 * 1024  # request line + headers


class AdminServer:
    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        limits: AdminLimits | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits or AdminLimits()
        self.liveness: list[Check] = []
        self.readiness: list[Check] = []
        self.routes: dict[str, Route] = {}
        self._policies: dict[str, str] = {}
        # The listener is up from the start (the port is taken at once, /metrics answers),
        # but /healthz and /readyz say "starting" until the service has registered its
        # checks and called open_probes(): no probe passes on checks that are not there yet.
        self._probes_open = threading.Event()
        # Why the last /metrics exposition failed (None: it worked): /readyz reports it.
        self._exposition_error: str | None = None
        self._closed = counter_by(
            "admin_connections_closed",
            "Admin HTTP connections closed by the server, by reason.",
            "reason", CLOSE_REASONS, registry,
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=128)
        self._connections: dict[_Connection, None] = {}  # insertion-ordered set
        self._handlers = _DaemonThreads(self.limits.handler_threads, "admin-handler")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._loop_ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="admin-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def route(self, path: str, handler: Route) -> None:
        self.routes[path] = handler

    def page(self, path: str, html: bytes) -> None:
        """Serve the fixed HTML page `html` at `path`, with a Content-Security-Policy that
        admits exactly its own inline scripts and styles (hashed here, once) and fetches
        back to this server."""
        policy = page_policy(html.decode("utf-8"), connect=True)
        self._policies[path] = policy
        self.routes[path] = lambda _query: (200, "text/html; charset=utf-8", html)

    def open_probes(self) -> None:
        """The service's liveness and readiness checks are in place: from now on they
        decide /healthz and /readyz."""
        self._probes_open.set()

    def start(self) -> None:
        self._handlers.start()
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop_ready.wait(timeout=5):
            assert self._loop is not None and self._stop_event is not None
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(timeout=5)
        self._sock.close()
        self._handlers.stop()

    # --- requests -------------------------------------------------------------------

    def _probe(self, checks: list[Check]) -> tuple[int, str, bytes]:
        failures = []
        for check in checks:
            try:
                ok, detail = check()
            except Exception as exc:  # a broken check is a failed check, not a crash
                ok, detail = False, f"check raised {exc!r}"
            if not ok:
                failures.append(detail)
        if failures:
            return 503, TEXT, ("\n".join(failures) + "\n").encode("utf-8", "backslashreplace")
        return 200, TEXT, b"ok\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        try:
            body = generate_latest(self.registry)
        except Exception as exc:
            # One bad collector or label value must not pass silently as an empty scrape:
            # /metrics says 500 and /readyz names the failure until an exposition works.
            if self._exposition_error is None:
                log.exception("metrics exposition failed")
            self._exposition_error = f"metrics exposition failed: {exc!r}"[:500]
            return 500, TEXT, (self._exposition_error + "\n").encode("utf-8", "backslashreplace")
        if self._exposition_error is not None:
            log.info("metrics exposition works again")
            self._exposition_error = None
        return 200, CONTENT_TYPE_LATEST, body

    def _exposition_ok(self) -> tuple[bool, str]:
        # Retried here while failing, so readiness recovers even if nothing scrapes a pod
        # that is not ready.
        if self._exposition_error is not None:
            self._metrics()
        error = self._exposition_error
        return error is None, error or ""

    def _dispatch(self, raw_path: str) -> tuple[int, str, bytes]:
        url = urlsplit(raw_path)
        if url.path in ("/healthz", "/readyz") and not self._probes_open.is_set():
            return 503, TEXT, b"starting: checks not registered yet\n"
        if url.path == "/healthz":
            return self._probe(self.liveness)
        if url.path == "/readyz":
            return self._probe([self._exposition_ok, *self.readiness])
        if url.path == "/metrics":
            return self._metrics()
        handler = self.routes.get(url.path)
        if handler is None:
            return 404, TEXT, b"not found\n"
        return handler(parse_qs(url.query))

    def _respond(self, request: _Request) -> bytes:
        """In a handler thread: the complete response to one request."""
        try:
            status, content_type, body = self._dispatch(request.target)
        except Exception:
            log.exception("admin route failed", extra={"path": request.target})
            status, content_type, body = 500, TEXT, b"internal error\n"
        policy = self._policies.get(request.path, STRICT_POLICY)
        return _response_bytes(
            status,
            content_type,
            body,
            policy=policy,
            close=not request.keep_alive,
            head_only=request.method == "HEAD",
        )

    # --- connections ----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        server = await asyncio.start_server(
            self._connection, sock=self._sock, limit=self.limits.max_head_bytes
        )
        self._loop_ready.set()
        await self._stop_event.wait()
        server.close()
        for connection in list(self._connections):
            connection.abort()

    def _admit(self, connection: _Connection) -> bool:
        if len(self._connections) >= self.limits.max_connections:
            waiting = [c for c in self._connections if not c.handling]
            if not waiting:  # every one waits for a handler: the newcomer waits its turn
                self._closed.labels(reason="full").inc()
                return False
            victim = min(waiting, key=lambda c: c.waiting_since)
            self._forget(victim, "evicted")
            victim.abort()
        self._connections[connection] = None
        return True

    def _forget(self, connection: _Connection, reason: str | None) -> None:
        if self._connections.pop(connection, False) is None and reason is not None:
            self._closed.labels(reason=reason).inc()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        if not self._admit(connection):
            connection.abort()
            return
        reason: str | None = None
        try:
            reason = await self._serve_connection(connection, reader, writer)
            if reason is None:  # a close by the rules: the last response is sent first
                writer.close()
                async with asyncio.timeout(self.limits.request_timeout):
                    await writer.wait_closed()
        except TimeoutError:
            reason = "request_timeout"
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the peer went away
        except asyncio.CancelledError:
            # Aborted (evicted, or the server stops). The task ends normally: on Python
            # 3.11 asyncio's stream callback calls exception() on a cancelled task and
            # logs a CancelledError traceback for every connection open at shutdown.
            pass
        finally:
            self._forget(connection, reason)
            connection.abort()  # whatever is left unsent after a limit is dropped

    async def _serve_connection(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> str | None:
        """Serve requests until the peer closes (None) or a limit closes the connection
        (its reason)."""
        limits = self.limits
        while True:
            try:
                async with asyncio.timeout(limits.idle_timeout):
                    first = await reader.read(1)
            except TimeoutError:
                return "idle_timeout"
            if not first:
                return None
            try:
                # One deadline for the whole head, from its first byte: a peer trickling
                # a byte at a time cannot hold the connection past it.
                async with asyncio.timeout(limits.request_timeout):
                    head = first + await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                return "request_timeout"
            except asyncio.LimitOverrunError:
                await self._send_error(reader, writer, 431, "request head too large")
                return "too_large"
            request = _parse(head)
            if isinstance(request, str):
                await self._send_error(reader, writer, 400, request)
                return "bad_request"
            connection.handling = True
            if request.method in ("GET", "HEAD"):
                # Probes go first: a queue of slow views (a large /api/records) must not
                # make a liveness probe time out.
                probe = request.path in ("/healthz", "/readyz")
                job = self._handlers.submit(self._respond, request, first=probe)
                data = await asyncio.wrap_future(job)
            else:
                data = _response_bytes(
                    405, TEXT, b"method not allowed\n", close=False, extra={"Allow": "GET, HEAD"}
                )
            connection.handling = False
            connection.waiting_since = time.monotonic()
            writer.write(data)
            try:
                async with asyncio.timeout(limits.request_timeout):
                    await writer.drain()
            except TimeoutError:
                return "request_timeout"
            connection.waiting_since = time.monotonic()
            if not request.keep_alive:
                return None

    async def _send_error(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        message: str,
    ) -> None:
        writer.write(_response_bytes(status, TEXT, f"{message}\n".encode(), close=True))
        try:
            async with asyncio.timeout(self.limits.request_timeout):
                await writer.drain()
                writer.write_eof()
                # A lingering close: what the peer still sends is read and dropped until
                # it closes too, because closing with unread input would reset the
                # connection and lose the answer before the peer has read it.
                while await reader.read(64 * 1024):
                    pass
        except (TimeoutError, ConnectionError):
            pass


class _Connection:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.task = asyncio.current_task()
        self.handling = False  # a handler thread is computing its response
        self.waiting_since = time.monotonic()  # since when it waits on its peer

    def abort(self) -> None:
        self.writer.transport.abort()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    keep_alive: bool

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


def _parse(head: bytes) -> _Request | str:
    """A request head (up to and including the blank line), or why it is refused."""
    request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1]:
        return "malformed request line"
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return "malformed header"
        headers[name.lower()] = value.strip()
    # Admin requests carry no body; refusing one keeps the next request's start certain.
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        return "admin requests have no body"
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return _Request(method, target, keep_alive)


def _response_bytes(
    status: int,
    content_type: str,
    body: bytes,
    *,
    close: bool,
    head_only: bool = False,
    policy: str = STRICT_POLICY,
    extra: dict[str, str] | None = None,
) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "Cache-Control": NO_STORE,
        "X-Content-Type-Options": NOSNIFF,
        "Content-Security-Policy": policy,
        **(extra or {}),
    }
    if close:
        headers["Connection"] = "close"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


class _DaemonThreads:
    """A fixed pool of daemon threads running the handlers, jobs submitted `first` ahead
    of the others. Not a ThreadPoolExecutor: that one has no priorities, and it joins its
    threads at interpreter exit, so a handler stuck forever (a check that hangs) would
    hold up the process's exit."""

    def __init__(self, threads: int, name: str) -> None:
        # (rank, order, job): rank 0 first, 1 next, 2 is the stop signal after them all.
        self._jobs: queue.PriorityQueue[
            tuple[int, int, tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put((2, next(self._order), None))

    def submit(
        self, function: Callable[..., Any], *args: Any, first: bool = False
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((0 if first else 1, next(self._order), (lambda: function(*args), future)))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()[2]) is not None:
            function, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

"""The log-collector: a Forward server that stores what it acks, plus a live view.

Events arrive on the Forward port (any carrier mode, acks, optional shared-key
handshake), are appended to JSON-lines files by the record store, and only then acked.
The admin server adds `/` (a live page), `/api/records` and `/api/counts`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from importlib import resources

from prometheus_client import Counter, Gauge, Histogram

from patterns.common.admin import json_response
from patterns.common.forward.server import ForwardMetrics, ForwardServer, keep_request_buffers
from patterns.common.service import Runtime
from patterns.sidecar.collector.config import Config, max_stored_request_bytes
from patterns.sidecar.collector.store import RecordStore

log = logging.getLogger(__name__)

_PAGE = resources.files(__package__).joinpath("live.html")
_COUNTS_TAGS = 100  # tags listed by /api/counts; the others are summed in "other"


def run(config: Config, runtime: Runtime) -> None:
    # Not ready until the Forward port listens (the store may take a while to load); alive
    # meanwhile: loading is not hanging.
    servers: list[ForwardServer] = []
    runtime.admin.readiness.append(
        lambda: (bool(servers) and servers[0].listening, "forward port is not listening")
    )
    runtime.admin.open_probes()
    keep_request_buffers()
    store = RecordStore(
        config.data_dir,
        fsync=config.fsync,
        segment_bytes=config.segment_bytes,
        recent=config.recent_records,
        recent_bytes=config.recent_bytes,
        retention_bytes=config.retention_bytes,
        retention_seconds=config.retention_seconds,
        max_tags=config.max_tags,
        max_request_bytes=max_stored_request_bytes(config.limits),
    )
    store.open()
    try:
        _add_metrics(store, runtime)
        server = _forward_server(config, runtime, store)
        servers.append(server)
        _add_routes(store, config, runtime)
        asyncio.run(_serve(config, runtime, server))
    finally:
        store.close()


def _add_metrics(store: RecordStore, runtime: Runtime) -> None:
    stored = Counter(
        "collector_stored_events_total",
        "Events written to the data files.",
        registry=runtime.registry,
    )
    stored_bytes = Counter(
        "collector_stored_bytes_total",
        "Bytes written to the data files.",
        registry=runtime.registry,
    )
    commit_seconds = Histogram(
        "collector_commit_seconds",
        "Time to write (and fsync) one group of requests.",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        registry=runtime.registry,
    )

    def on_written(events: int, written: int, seconds: float) -> None:
        stored.inc(events)
        stored_bytes.inc(written)
        commit_seconds.observe(seconds)

    store.on_written.append(on_written)
    Gauge(
        "collector_store_bytes",
        "Bytes the data files take now (retention keeps this under COLLECTOR_RETENTION_BYTES).",
        registry=runtime.registry,
    ).set_function(store.stored_bytes)
    dropped = {
        what: Counter(
            f"collector_retention_dropped_{what}_total",
            f"{what.capitalize()} deleted by retention, by reason: size or age.",
            ["reason"],
            registry=runtime.registry,
        )
        for what in ("segments", "records", "bytes")
    }

    def on_dropped(segments: int, records: int, size: int, reason: str) -> None:
        dropped["segments"].labels(reason=reason).inc(segments)
        dropped["records"].labels(reason=reason).inc(records)
        dropped["bytes"].labels(reason=reason).inc(size)

    store.on_dropped.append(on_dropped)


def _add_routes(store: RecordStore, config: Config, runtime: Runtime) -> None:
    answering = threading.Lock()

    def records(query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        tag = query.get("tag", [""])[0] or None
        raw_limit = query.get("limit", ["100"])[0]
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= config.recent_records:
            return json_response(
                {"error": f"limit must be an integer in [1, {config.recent_records}]"}, 400
            )
        # One answer assembled at a time: each holds up to 8 MiB of records, twice.
        with answering:
            lines = store.recent_lines(tag, int(raw_limit))
            return 200, "application/json", b'{"records":[' + b",".join(lines) + b"]}"

    def counts(_query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        # The page polls this every second: at most _COUNTS_TAGS tags, however many exist.
        return json_response(store.counts(_COUNTS_TAGS))

    # With a Content-Security-Policy that admits only the page's own inline blocks.
    runtime.admin.page("/", _PAGE.read_bytes())
    runtime.admin.route("/api/records", records)
    runtime.admin.route("/api/counts", counts)
    runtime.admin.readiness.append(store.writable)


def _forward_server(config: Config, runtime: Runtime, store: RecordStore) -> ForwardServer:
    server = ForwardServer(
        config.forward_host,
        config.forward_port,
        store.append,
        shared_key=config.shared_key,
        users=config.users,
        server_hostname=config.server_hostname,
        limits=config.limits,
        idle_timeout=config.idle_timeout,
        handshake_timeout=config.handshake_timeout,
        frame_timeout=config.frame_timeout,
        max_connections=config.max_connections,
        max_buffered_bytes=config.max_buffered_bytes,
        max_inflight_requests=config.max_inflight_requests,
        metrics=ForwardMetrics(runtime.registry, prefix="collector"),
    )
    return server


async def _serve(config: Config, runtime: Runtime, server: ForwardServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(stop.set)

    runtime.on_stop.append(wake)
    await server.start()
    log.info(
        "collector ready",
        extra={
            "forward_port": server.port,
            "data_dir": str(config.data_dir),
            "shared_key": config.shared_key is not None,
            "fsync": config.fsync,
            "retention_bytes": config.retention_bytes,
            "retention_seconds": config.retention_seconds,
        },
    )
    if not runtime.stopping.is_set():
        await stop.wait()
    await server.stop(config.shutdown_grace)

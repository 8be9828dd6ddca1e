"""The log-shipper: follow files, ship every line over Forward, checkpoint only what is acked.

Two threads: the reader (this service's main thread) reads chunks from the follower and
encodes them; the sender sends one batch at a time, waits for the collector's ack,
retries with backoff until it gets one, and only then commits the batch's chunks (which
saves the checkpoints). The queue between them holds one batch, so the next batch is prepared
while the collector works on the current one, yet at most one batch is ever sent and not
yet checkpointed: after a SIGKILL, at most that batch is sent twice.

A batch holds the chunks of as many files as have lines ready, up to its limits: each
batch costs an ack round trip and a checkpoint save, so a shipper following a thousand
files must not pay them per file. All of a batch's requests are acked before any of its
chunks is committed, and then all of them are committed at once (one save): the one batch
a SIGKILL can get sent twice is sent twice whole, whatever files it spans.

A collector outage stops the sender, then the reader (the queue is full): positions stay
in the files, nothing is dropped, and the backlog metric grows. Readiness does not depend
on the collector, so an outage never gets the sidecar restarted.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from patterns.common.admin import json_response
from patterns.common.follower import CheckpointStore, Chunk, Follower
from patterns.common.forward.client import ForwardClient, ForwardError
from patterns.common.service import Runtime
from patterns.sidecar.shipper.config import Config
from patterns.sidecar.shipper.encode import EntryEncoder, merge_requests
from patterns.sidecar.shipper.metrics import follower_metrics
from patterns.sidecar.shipper.tags import TAG_RULE, Tags, load_rule

log = logging.getLogger(__name__)

_STALL_SECONDS = 60.0  # the reader loop ticks at least every second; this means it hangs
# Lines per batch, besides SHIPPER_BATCH_BYTES: each line costs about 100 bytes plus the
# path in memory and on the wire, so 1 MiB of empty lines would otherwise take ~100 MiB.
MAX_LINES_PER_BATCH = 20_000
# Follower.read reads at least this many bytes, whatever it is asked for: a batch asks for
# more only while this much room is left (see _gather).
FOLLOWER_MIN_READ = 4096


@dataclass(frozen=True)
class Request:
    tag: str  # the Forward tag (tags.py)
    entries: bytes  # the PackedForward entries (encode.py)
    count: int


@dataclass(frozen=True)
class Batch:
    chunks: list[Chunk]  # as read: the chunks of one file in their order
    requests: list[Request]  # one Forward request each, sent in this order

    @property
    def count(self) -> int:
        return sum(request.count for request in self.requests)

    def describe(self) -> dict[str, object]:
        """What logs say about the batch's files: how many, and the first one."""
        return {"files": len({chunk.path for chunk in self.chunks}), "file": self.chunks[0].path}


class Shipper:
    def __init__(self, config: Config, follower: Follower, runtime: Runtime) -> None:
        self.config = config
        self.follower = follower
        self.stopping = runtime.stopping
        self.encoder = EntryEncoder()
        self.client = ForwardClient(
            config.forward.host,
            config.forward.port,
            shared_key=config.forward.shared_key,
            self_hostname=config.self_hostname,
            connect_timeout=config.connect_timeout,
            ack_timeout=config.ack_timeout,
        )
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.deadline = math.inf  # set when shutdown begins
        self.shutdown_begun = threading.Event()
        self.heartbeat = time.monotonic()
        self.sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
        registry = runtime.registry
        self.acked_events = Counter(
            "shipper_events_acked", "Events acknowledged by the collector.", registry=registry
        )
        self.acked_batches = Counter(
            "shipper_batches_acked", "Batches acknowledged by the collector.", registry=registry
        )
        self.retries = Counter(
            "shipper_retries",
            "Batches sent again after a failure (no ack in time, connection refused or lost).",
            ["reason"],
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "shipper_ack_seconds",
            "Time from sending a batch to its ack.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=registry,
        )
        self.collector_up = Gauge(
            "shipper_collector_up",
            "1 if the last attempt to ship to the collector succeeded.",
            registry=registry,
        )
        self.tags = Tags(
            load_rule(TAG_RULE, config.forward.tag),
            config.forward.tag,
            Counter(
                "shipper_tags_refused",
                "Files of a batch sent under FLUENT_TAG because the tag rule's tag was"
                " unusable (once per file per batch).",
                registry=registry,
            ),
        )
        registry.register(follower_metrics(follower))

    # --- lifecycle ----------------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """From the signal handler: ship what we can until SHIPPER_SHUTDOWN_TIMEOUT."""
        if not self.shutdown_begun.is_set():
            self.deadline = time.monotonic() + self.config.shutdown_timeout
            self.shutdown_begun.set()

    def run(self) -> None:
        self.follower.start()
        self.sender.start()
        try:
            self._read_loop()
        finally:
            self._finish()

    def alive(self) -> tuple[bool, str]:
        age = time.monotonic() - self.heartbeat
        if age > _STALL_SECONDS:
            return False, f"reader loop stalled for {age:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.sender.is_alive() and not self.stopping.is_set():
            return False, "sender thread is not running"
        ok, detail = self.follower.healthy()
        if not ok:
            return ok, detail
        return self.alive()

    # --- reader -------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        flushing = False
        while True:
            self.heartbeat = time.monotonic()
            if self.stopping.is_set():
                self.begin_shutdown()
            if self.shutdown_begun.is_set():
                if time.monotonic() >= self.deadline:
                    return
                if not flushing:
                    # The app may be gone for good (a Job's pod dies after us): deliver
                    # an unterminated last line once its file is quiet instead of holding
                    # it. Quiet means SHIPPER_ROTATE_WAIT, but at most half the shutdown
                    # time, so the line is still sent before the deadline.
                    quiet = min(self.config.limits.rotate_wait, self.config.shutdown_timeout / 2)
                    self.follower.flush_incomplete(quiet)
                    flushing = True
            # After SIGTERM: keep going while there is something to read; a quiet
            # follower holding no incomplete line means everything written so far has
            # been handed to the sender.
            timeout = 0.3 if self.shutdown_begun.is_set() else 1.0
            chunk = self.follower.read(
                self.config.batch_bytes, timeout=timeout, max_lines=MAX_LINES_PER_BATCH
            )
            if chunk is None:
                if self.shutdown_begun.is_set() and not self.follower.holds_incomplete():
                    return
                continue
            if not self._enqueue(self._batch(self._gather(chunk))):
                return

    def _gather(self, first: Chunk) -> list[Chunk]:
        """`first` and the chunks of any file that are ready now, up to the batch's limits:
        with many files, one batch (one ack, one checkpoint save) carries many of them.

        Bytes are counted as the file bytes a chunk covers. Each further read asks for
        the room left, and only while at least FOLLOWER_MIN_READ is left, so it reads
        at most that room, plus the file's incomplete line held from an earlier read
        (at most SHIPPER_MAX_LINE_BYTES, already in memory) when this read completes it:
        that is all a batch can exceed SHIPPER_BATCH_BYTES by, as a single read can.
        Lines: each read asks for the lines left (pieces of over-long lines aside, as
        for a single read)."""
        chunks = [first]
        size, lines = first.end - first.start, len(first.lines)
        while True:
            room = self.config.batch_bytes - size
            if room < FOLLOWER_MIN_READ or lines >= MAX_LINES_PER_BATCH:
                return chunks
            chunk = self.follower.read(room, timeout=0, max_lines=MAX_LINES_PER_BATCH - lines)
            if chunk is None:
                return chunks
            chunks.append(chunk)
            size += chunk.end - chunk.start
            lines += len(chunk.lines)

    def _batch(self, chunks: list[Chunk]) -> Batch:
        """One Forward request per tag, or as few as the request limits allow: the entries
        of all chunks with that tag, each entry with its own file."""
        now = time.time()
        tags: dict[str, str] = {}  # path -> tag: the rule runs once per file per batch
        pieces: dict[str, list[tuple[bytes, int]]] = {}  # tag -> (entries, count) in order
        for chunk in chunks:
            tag = tags.get(chunk.path)
            if tag is None:
                tag = tags[chunk.path] = self.tags(chunk.path)
            pieces.setdefault(tag, []).extend(
                self.encoder.requests(chunk.lines, chunk.path, now)
            )
        requests = [
            Request(tag, entries, count)
            for tag, tagged in pieces.items()
            for entries, count in merge_requests(tagged)
        ]
        return Batch(chunks, requests)

    def _enqueue(self, batch: Batch | None) -> bool:
        while True:
            self.heartbeat = time.monotonic()
            if self.stopping.is_set():
                self.begin_shutdown()
            try:
                self.queue.put(batch, timeout=self.config.limits.poll_interval)
                return True
            except queue.Full:
                if time.monotonic() >= self.deadline:
                    return False
                if not self.follower.uses_inotify:
                    self.follower.poll()  # hold files rotated meanwhile open: nothing missed

    def _finish(self) -> None:
        self.begin_shutdown()
        self._enqueue(None)  # the sender stops after the batches before it
        self.sender.join(max(0.0, self.deadline - time.monotonic()) + 1.0)
        if self.sender.is_alive():
            log.warning("shutdown timeout: unacknowledged lines are shipped after the restart")
        if self.follower.holds_incomplete():
            log.warning(
                "shutdown timeout: a last line without newline was still growing; it is"
                " shipped after the restart"
            )
        self.follower.save(final=True)
        backlog = self.follower.backlog_bytes()
        self.follower.close()
        self.client.close()
        log.info("shipper stopped", extra={"backlog_bytes": backlog})

    # --- sender -------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        while True:
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if batch is None:
                return
            for request in batch.requests:
                if not self._deliver(request, batch):
                    return  # shutdown deadline: none committed, read again next time
                self.acked_events.inc(request.count)
            self.follower.commit(*batch.chunks)  # one checkpoint save for all its files
            self.acked_batches.inc()

    def _deliver(self, request: Request, batch: Batch) -> bool:
        """Send until acked (True), or until the shutdown deadline (False)."""
        delay = self.config.retry_min
        failures = 0
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Near the shutdown deadline, never wait longer than the time that is left.
            self.client.ack_timeout = min(self.config.ack_timeout, remaining)
            self.client.connect_timeout = min(self.config.connect_timeout, remaining)
            started = time.monotonic()
            try:
                self.client.send_packed(
                    request.tag, request.entries, request.count, compressed=self.config.compress
                )
            except ForwardError as exc:
                failures += 1
                self.collector_up.set(0)
                self.retries.labels(reason=type(exc).__name__).inc()
                wait = random.uniform(delay / 2, delay)
                log.warning(
                    "sending failed, will retry",
                    extra={
                        "error": str(exc),
                        "failures": failures,
                        "retry_in": round(wait, 3),
                        "lines": request.count,
                        **batch.describe(),
                    },
                )
                delay = min(delay * 2, self.config.retry_max)
                if time.monotonic() + wait >= self.deadline:
                    return False
                if self.shutdown_begun.is_set():
                    time.sleep(wait)
                else:
                    self.shutdown_begun.wait(wait)  # on SIGTERM, try once more at once
                continue
            self.ack_seconds.observe(time.monotonic() - started)
            self.collector_up.set(1)
            if failures:
                log.info("collector reachable again", extra={"failures": failures})
            return True


def run(config: Config, runtime: Runtime) -> None:
    store = CheckpointStore(config.state_dir, fsync=config.checkpoint_fsync)
    follower = Follower(config.paths, store, config.limits)
    shipper = Shipper(config, follower, runtime)
    runtime.on_stop.append(shipper.begin_shutdown)
    runtime.admin.readiness.append(store.check_writable)
    runtime.admin.readiness.append(shipper.ready)
    runtime.admin.liveness.append(shipper.alive)
    runtime.admin.route("/api/files", lambda _query: json_response(follower.files()))
    runtime.admin.open_probes()
    log.info(
        "shipping",
        extra={
            "paths": config.paths,
            "collector": config.forward.address,
            "tag": config.forward.tag,
            "tag_rule": TAG_RULE,
            "inotify": follower.uses_inotify,
            "follow_symlinks": config.limits.follow_symlinks,
        },
    )
    shipper.run()

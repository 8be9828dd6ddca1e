"""The adapter's loop: follow the inputs' files, decode each chunk, update the metrics,
hand the records to the output, then commit the follower's checkpoint.

Checkpoints and multi-line records: a `legacy` record is complete only when the next
record's first line arrives (or after a quiet period, `multiline_flush_seconds`). While
it is being assembled its lines are not emitted, so the checkpoint is committed only up
to its first line: a restart reads the half-assembled traceback again from its start.
The chunks it spans are kept (without their lines) and fully committed once it is out.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from patterns.adapter.log_adapter.config import Config, InputSpec
from patterns.adapter.log_adapter.formats import (
    Context,
    Decoder,
    DecoderClass,
    decoder_class,
    observed_now,
)
from patterns.adapter.log_adapter.metrics import AdapterMetrics
from patterns.adapter.log_adapter.output import Output, Stopped
from patterns.common.follower import CheckpointStore, Chunk, Follower, Limits
from patterns.common.follower.metrics import FollowerMetrics

log = logging.getLogger(__name__)

# Lines per read, besides ADAPTER_READ_BYTES: each becomes a record of half a kilobyte or
# more in memory, so 1 MiB of empty lines, a million records at once, took ~750 MiB, and
# the pod's OOM kill came back at every restart on the same unread chunk. 8192 lines keep
# a read of ordinary access-log lines (~130 bytes) whole and a read of any lines a few MiB.
MAX_LINES_PER_READ = 8192

@dataclass
class _File:
    """One followed name (a rotated file keeps its name's state: its lines come first)."""

    spec: InputSpec
    decoder: Decoder
    last_line: float = 0.0
    # Chunks holding lines of the record under assembly: committed once it is emitted.
    held: list[Chunk] = field(default_factory=list)


class Adapter:
    def __init__(
        self,
        config: Config,
        metrics: AdapterMetrics,
        output: Output,
        stopping: threading.Event,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.output = output
        self.stopping = stopping
        self.emit = config.output != "none"
        self.resource = {"service.name": config.service_name}
        self.store = CheckpointStore(config.state_dir)
        self.follower = Follower(
            [spec.glob for spec in config.inputs],
            self.store,
            Limits(max_line_bytes=config.max_line_bytes, poll_interval=config.poll_seconds,
                   use_inotify=config.use_inotify, follow_symlinks=config.follow_symlinks,
                   max_files=config.max_files),
        )
        self.contexts = {
            spec.glob: Context(
                spec.name,
                metrics,
                self.emit,
                self.resource,
                regex=config.regex,
                max_record_bytes=config.max_record_bytes,
            )
            for spec in config.inputs
        }
        # Each input's format, imported now: a format that cannot load fails the start.
        self.decoders: dict[str, DecoderClass] = {
            spec.glob: decoder_class(spec.format) for spec in config.inputs
        }
        self.files: dict[str, _File] = {}
        self.heartbeat = time.monotonic()
        self.started = False

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.follower.start()
        self.started = True
        log.info(
            "following",
            extra={
                "inputs": [f"{s.format}={s.glob}" for s in self.config.inputs],
                "output": self.config.output,
                "inotify": self.follower.uses_inotify,
            },
        )
        try:
            while not self.stopping.is_set():
                self.heartbeat = time.monotonic()
                chunk = self._read(self.config.poll_seconds)
                if chunk is not None:
                    self.handle(chunk)
                self.flush_quiet(time.monotonic())
            self.drain()
        except Stopped:
            log.info("stopped with records undelivered; they are read again at the next start")
        finally:
            # Final: one checkpoint file, its journal folded in, durable against a power cut.
            self.follower.save(final=True)
            self.follower.close()
            self.output.close()

    def drain(self) -> None:
        """After SIGTERM the app may be gone for good (a native sidecar is stopped once the
        app has exited, and the pod's emptyDir goes with it): adapt what is still unread,
        an unterminated last line included once its file is quiet, and emit the record
        under assembly once quiet, until caught up or ADAPTER_SHUTDOWN_TIMEOUT. What is
        not done by then stays uncommitted and is read again at the next start."""
        deadline = time.monotonic() + self.config.shutdown_timeout
        self.follower.flush_incomplete(
            min(self.config.multiline_flush_seconds, self.config.shutdown_timeout / 2))
        while (left := deadline - time.monotonic()) > 0:
            self.heartbeat = time.monotonic()
            chunk = self._read(min(self.config.poll_seconds, left))
            if chunk is not None:
                self.handle(chunk)
            self.flush_quiet(time.monotonic())
            if (chunk is None and not self.follower.holds_incomplete()
                    and not any(state.decoder.held_lines for state in self.files.values())):
                return
        log.warning("shutdown timeout: what was not adapted is read again at the next start",
                    extra={"backlog_bytes": self.follower.backlog_bytes()})

    def _read(self, timeout: float) -> Chunk | None:
        return self.follower.read(self.config.read_bytes, timeout, max_lines=MAX_LINES_PER_READ)

    def handle(self, chunk: Chunk) -> None:
        state = self._file(chunk.path)
        if state is None:
            self.follower.commit(chunk)  # cannot happen: the follower reads our globs only
            return
        observed = observed_now()
        with self.metrics.lock:
            records = state.decoder.feed(chunk.lines, observed)
        self.output.write(records)
        state.last_line = time.monotonic()
        self._commit(state, chunk)

    def flush_quiet(self, now: float) -> None:
        """Emit records whose file has been quiet for multiline_flush_seconds and is read
        to its end, then forget the file: its decoder holds nothing and is made again for
        its next line. Without that, every file name the app ever wrote would stay in
        memory."""
        for path, state in list(self.files.items()):
            if now - state.last_line < self.config.multiline_flush_seconds:
                continue
            if state.decoder.held_lines and self.follower.unread(path):
                # Not quiet, only not read yet (the loop was busy with other files): the
                # record may go on in the lines after, and flushing it now would split it.
                continue
            if state.decoder.held_lines:
                observed = observed_now()
                with self.metrics.lock:
                    records = state.decoder.flush(observed)
                self.output.write(records)
                for chunk in state.held:
                    self.follower.commit(chunk)
                state.held.clear()
            del self.files[path]

    # --- checkpoints ----------------------------------------------------------------------

    def _commit(self, state: _File, chunk: Chunk) -> None:
        held = state.decoder.held_lines
        if held == 0:
            for earlier in state.held:
                self.follower.commit(earlier)
            state.held.clear()
            self.follower.commit(chunk)
            return
        bare = dataclasses.replace(chunk, lines=[])  # keep the position, not the text
        if held > len(chunk.lines):
            state.held.append(bare)  # the record began in an earlier chunk: nothing emitted
            return
        for earlier in state.held:  # the record began in this chunk: earlier ones are out
            self.follower.commit(earlier)
        state.held = [bare]
        start = self._pending_start(chunk, held)
        if start is not None and start > chunk.start:
            self.follower.commit(dataclasses.replace(chunk, lines=[], end=start))

    def _pending_start(self, chunk: Chunk, held: int) -> int | None:
        """File offset of the first held line, counted back from the chunk's end. None
        when that cannot be exact (a held line was repaired or split by the follower): the
        chunk then stays uncommitted until the record is out, at the cost of re-emitting
        its earlier records after a crash."""
        size = 0
        for line in chunk.lines[-held:]:
            encoded = len(line.encode("utf-8", "surrogatepass"))
            if "\ufffd" in line or encoded >= self.config.max_line_bytes:
                return None
            size += encoded + 1
        start = chunk.end - size
        return start if start >= chunk.start else None

    def _file(self, path: str) -> _File | None:
        state = self.files.get(path)
        if state is None:
            spec = self._spec_for(path)
            if spec is None:
                return None
            decoder = self.decoders[spec.glob](self.contexts[spec.glob], path)
            state = self.files[path] = _File(spec, decoder)
        return state

    def _spec_for(self, path: str) -> InputSpec | None:
        for spec in self.config.inputs:
            if fnmatch.fnmatchcase(path, spec.glob):
                return spec
        return None

    # --- admin ----------------------------------------------------------------------------

    def held_lines(self) -> int:
        return sum(state.decoder.held_lines for state in list(self.files.values()))

    def status(self) -> dict[str, Any]:
        inputs = []
        for spec in self.config.inputs:
            parsed, rejected = self.metrics.lines_total(spec.name)
            inputs.append(
                {"format": spec.format, "glob": spec.glob, "parsed": parsed, "rejected": rejected}
            )
        return {
            "inputs": inputs,
            "output": self.config.output,
            "files": self.follower.files(),
            "lines_read": self.follower.stats.lines_read,
            "lines_held": self.held_lines(),
            "backlog_bytes": self.follower.backlog_bytes(),
        }


class FollowerCollector(FollowerMetrics):
    """What the follower counted (repairs, rotations) and how far behind the adapter is:
    the suite's follower collector under adapter_, its events as one family
    (adapter_file_events_total{event}), plus the lines the decoders hold."""

    HELP = {
        "lines_read": "Lines read from the inputs.",
        "bytes_read": "Bytes read from the inputs.",
        "file_events": "Input repairs and file events seen by the follower (invalid UTF-8"
        " replaced, long lines split, rotations, truncations, ...).",
        "files_followed": "Files open for reading.",
        "backlog_bytes": "Bytes in followed files not yet handled (committed).",
    }

    def __init__(self, adapter: Adapter) -> None:
        super().__init__(adapter.follower, "adapter", help=self.HELP, events_family="file_events")
        self.adapter = adapter

    def collect(self) -> Iterator[Metric]:
        yield from super().collect()
        yield GaugeMetricFamily(
            "adapter_lines_held",
            "Lines of multi-line records still being assembled (not yet counted).",
            value=self.adapter.held_lines(),
        )

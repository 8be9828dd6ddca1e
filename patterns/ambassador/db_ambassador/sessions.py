"""The sessions being relayed: their registry, their cancel keys, idle timeouts, and
waiting for them to end when draining."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

from .cancel import CancelKeys
from .relay import Session, Traffic
from .upstream import Upstream

log = logging.getLogger(__name__)


class Sessions:
    def __init__(self, cancel_rate: float) -> None:
        self.open: set[Session] = set()
        self.traffic = Traffic(self.open)
        self.cancel_keys: CancelKeys[Session] = CancelKeys(cancel_rate)
        self._all_closed: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self.open)

    def count(self) -> int:  # for the metrics, read at scrape time
        return len(self.open)

    def start(
        self,
        packet: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: Upstream,
        up_writer: asyncio.StreamWriter,
        withdraw_plus: bool,
    ) -> Session:
        """Relay the client's connection to the upstream's, from the startup packet on."""
        client = cast(asyncio.Transport, writer.transport)
        server = cast(asyncio.Transport, up_writer.transport)
        session = Session(
            client, server, upstream, self.traffic, self._closed, self._key_seen, withdraw_plus
        )
        self.open.add(session)
        upstream.sessions += 1
        # Bytes the client sent after its startup packet (it should wait for the reply,
        # but nothing it sends may be lost) go right after the packet, and so does its
        # half-close if one came while we were connecting.
        # StreamReader has no public way to take its buffer back.
        buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
        leftover = bytes(buffered)
        buffered.clear()
        session.start(packet + leftover, client_eof=reader.at_eof())
        return session

    def on(self, upstream: Upstream) -> list[Session]:
        return [s for s in self.open if s.upstream is upstream]

    def _key_seen(self, session: Session) -> None:
        key = session.backend_key
        if key is not None and session in self.open:  # not one closed before its key came
            self.cancel_keys.add(key, session, asyncio.get_running_loop().time())

    def _closed(self, session: Session) -> None:
        if session in self.open:
            self.open.discard(session)
            session.upstream.sessions -= 1
            if session.backend_key is not None:
                self.cancel_keys.remove(session.backend_key, session)
        if not self.open and self._all_closed is not None:
            self._all_closed.set()

    async def close_idle_forever(self, timeout: float) -> None:
        """Close sessions that relayed nothing for `timeout` seconds (checked at a quarter
        of it, at least every 5 s)."""
        period = min(timeout / 4, 5.0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for session in list(self.open):
                relayed = session.bytes_relayed()
                if relayed != session.seen_bytes:
                    session.seen_bytes = relayed
                    session.idle_since = now
                elif now - session.idle_since >= timeout:
                    log.info("idle session closed", extra={"upstream": session.upstream.name})
                    session.close()

    async def drain(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every session to end, then abort the rest;
        returns how many were aborted."""
        self._all_closed = asyncio.Event()
        if self.open:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout)
        left = list(self.open)
        for session in left:
            session.abort()
        return len(left)

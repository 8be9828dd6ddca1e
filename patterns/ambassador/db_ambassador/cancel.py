"""Which session a CancelRequest is for, and whether it may be passed on.

A CancelRequest comes on a connection of its own and names its session only by the key the
server issued in BackendKeyData (process id and secret). The ambassador read that key on its
way to the client, so it knows the one upstream that can act on it: the cancel goes there
and nowhere else. A key it never relayed (a guess, a session already closed) belongs to no
client of this ambassador and reaches no server. Each session's cancels are also held to a
rate, so a client cannot turn the ambassador into a stream of connections to its server.
"""

from __future__ import annotations

from typing import Generic, TypeVar

RESULTS = ("forwarded", "undelivered", "unknown_key", "rate_limited")

S = TypeVar("S")


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class CancelKeys(Generic[S]):
    """Cancel keys of the sessions being relayed, each with its own rate budget: `rate`
    cancels a second, in bursts of as many (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._sessions: dict[bytes, tuple[S, TokenBucket]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def add(self, key: bytes, session: S, now: float) -> None:
        self._sessions[key] = (session, TokenBucket(self.rate, self.burst, now))

    def remove(self, key: bytes, session: S) -> None:
        # Only if the key is still this session's (two servers may issue the same key).
        entry = self._sessions.get(key)
        if entry is not None and entry[0] is session:
            del self._sessions[key]

    def admit(self, key: bytes, now: float) -> tuple[S | None, str]:
        """(the session, "") when the cancel may go to that session's upstream; (None, why)
        when it must not: "unknown_key" or "rate_limited"."""
        entry = self._sessions.get(key)
        if entry is None:
            return None, "unknown_key"
        session, budget = entry
        if not budget.take(now):
            return None, "rate_limited"
        return session, ""

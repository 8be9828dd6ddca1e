"""Turning blocks of file bytes into lines, with bounded memory.

`LineBuffer` is fed blocks as they are read and returns the complete lines (without
their newline) as text. Work is done per block where possible: a block is decoded as
UTF-8 and split in one go; only a block with invalid UTF-8 or an over-long line falls back
to per-line work. An incomplete last line is held (at most `max_line` bytes) until its
newline arrives or the caller flushes it; a line longer than `max_line` is split into
pieces or truncated, so a 10 MiB line without newline never sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LineStats:
    """Counts of input that needed repair; the follower turns them into metrics."""

    invalid_utf8_lines: int = 0  # decoded with U+FFFD replacement characters
    long_lines: int = 0  # longer than max_line: split into pieces or truncated
    nul_lines: int = 0  # containing NUL bytes (kept as U+0000)


def _char_boundary(data: bytes, limit: int) -> int:
    """A cut index <= limit that does not split a UTF-8 sequence (if the data is UTF-8)."""
    if len(data) <= limit:
        return len(data)
    cut = limit
    while cut > limit - 4 and cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if cut > limit - 4 and cut > 0 else limit


class LineBuffer:
    def __init__(self, max_line: int, stats: LineStats, *, truncate_long: bool = False) -> None:
        if max_line < 4:
            raise ValueError("max_line must be at least 4 bytes")
        self.max_line = max_line
        self.truncate_long = truncate_long
        self.stats = stats
        self.pending = b""  # the incomplete last line so far
        # Inside a line longer than max_line: its first piece was already emitted (split
        # mode) or the rest is being discarded up to the next newline (truncate mode).
        self.in_long_line = False

    def feed(self, block: bytes) -> list[str]:
        data = self.pending + block if self.pending else block
        self.pending = b""
        if self.in_long_line and self.truncate_long:
            newline = data.find(b"\n")
            if newline < 0:
                return []
            data = data[newline + 1 :]
            self.in_long_line = False
        last_newline = data.rfind(b"\n")
        lines: list[str] = []
        if last_newline >= 0:
            continuing = self.in_long_line
            self.in_long_line = False
            lines = self._complete_lines(data[:last_newline], continuing)
            rest = data[last_newline + 1 :]
        else:
            rest = data
        if len(rest) > self.max_line:
            rest = self._cut_incomplete(rest, lines)
        self.pending = rest
        return lines

    def flush(self) -> list[str]:
        """The held incomplete line as a line of its own (its file is done)."""
        data, self.pending = self.pending, b""
        continuing, self.in_long_line = self.in_long_line, False
        if not data:
            return []
        return self._complete_lines(data, continuing)

    def _complete_lines(self, complete: bytes, continuing: bool) -> list[str]:
        """Lines of `complete` (newline-separated, no trailing newline)."""
        try:
            lines = complete.decode().split("\n")
        except UnicodeDecodeError:
            lines = None
        if lines is not None and len(complete) > self.max_line:
            longest = max(map(len, lines))  # in characters; a character is 1-4 bytes
            if longest > self.max_line or (longest > self.max_line // 4 and not complete.isascii()):
                lines = None
        if lines is None:
            raw = complete.split(b"\n")
            if len(complete) > self.max_line:
                raw = self._limit(raw, continuing)
            lines = self._decode_each(raw)
        if b"\0" in complete:
            self.stats.nul_lines += sum(1 for line in lines if "\0" in line)
        return lines

    def _limit(self, raw: list[bytes], continuing: bool) -> list[bytes]:
        limited: list[bytes] = []
        for index, line in enumerate(raw):
            if len(line) <= self.max_line:
                limited.append(line)
                continue
            if not (index == 0 and continuing):
                self.stats.long_lines += 1
            if self.truncate_long:
                limited.append(line[: _char_boundary(line, self.max_line)])
                continue
            while len(line) > self.max_line:
                cut = _char_boundary(line, self.max_line)
                limited.append(line[:cut])
                line = line[cut:]
            limited.append(line)
        return limited

    def _cut_incomplete(self, rest: bytes, lines: list[str]) -> bytes:
        """Emit the over-long incomplete line's leading pieces; return what stays held."""
        if not self.in_long_line:
            self.stats.long_lines += 1
        self.in_long_line = True
        pieces = []
        while len(rest) > self.max_line:
            cut = _char_boundary(rest, self.max_line)
            pieces.append(rest[:cut])
            rest = rest[cut:]
            if self.truncate_long:
                rest = b""  # the rest of the line is discarded up to its newline
        decoded = self._decode_each(pieces)
        self.stats.nul_lines += sum(1 for piece in decoded if "\0" in piece)
        lines.extend(decoded)
        return rest

    def _decode_each(self, raw: list[bytes]) -> list[str]:
        lines = []
        for line in raw:
            try:
                lines.append(line.decode())
            except UnicodeDecodeError:
                lines.append(line.decode("utf-8", "replace"))
                self.stats.invalid_utf8_lines += 1
        return lines

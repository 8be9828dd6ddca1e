"""Line formats: each decoder turns one file's lines into OpenTelemetry records and reports
what they say to the metrics through a narrow interface (`DecoderEvents`). One module per
format; the contract every decoder keeps is in base.py.

  combined    NCSA combined (or common) log, optionally followed by Apache's %D
  legacy      `YYYY-MM-DD HH:MM:SS,mmm LEVEL [thread] logger - message` + continuation lines
  json        one JSON object per line (timestamp/level/message keys recognised)
  regex       a user-supplied regular expression with named groups (ADAPTER_REGEX)

A new format is one new module here and one line in FORMATS: its decoder class is
imported only when an input uses it, so the settings (config.py) know the names alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from patterns.adapter.log_adapter.formats.base import (
    Context,
    Decoder,
    DecoderEvents,
    Faults,
    RegexFormat,
    observed_now,
)
from patterns.common.registry import registered

# Format name (ADAPTER_INPUTS=name=glob) -> "module:DecoderClass" in this package.
FORMATS: dict[str, str] = {
    "combined": "combined:CombinedDecoder",
    "legacy": "legacy:LegacyDecoder",
    "json": "json_lines:JsonDecoder",
    "regex": "regex:RegexDecoder",
}


# What a format registers: made with the input's Context and the file's path.
DecoderClass = Callable[[Context, str], Decoder]


def decoder_class(fmt: str) -> DecoderClass:
    """The class registered as `fmt` (ValueError if none is), imported now."""
    return cast(DecoderClass, registered(FORMATS, fmt, __name__, "format"))


def new_decoder(fmt: str, context: Context, path: str) -> Decoder:
    """A decoder of format `fmt` for the file at `path`."""
    return decoder_class(fmt)(context, path)


__all__ = [
    "FORMATS",
    "Context",
    "Decoder",
    "DecoderClass",
    "DecoderEvents",
    "Faults",
    "RegexFormat",
    "decoder_class",
    "new_decoder",
    "observed_now",
]

"""What the app can put in the shared volume (file names included) must not stop the
shipper's encoder."""

from __future__ import annotations

import os

from patterns.common.forward import protocol
from patterns.sidecar.shipper.encode import EntryEncoder

LIMITS = protocol.Limits(max_frame_bytes=1 << 24, max_decompressed_bytes=1 << 24)


def test_a_file_name_that_is_not_utf8_is_shipped_with_replacement_characters():
    # The app names a file with bytes that are not UTF-8: Python's name for it holds lone
    # surrogates, which msgpack refused, and the exception ended the shipper (at every
    # restart: a crash loop).
    path = os.fsdecode(b"/var/log/app/bad-\xff\xfe.log")
    requests = EntryEncoder().requests(["a line"], path, 1_764_000_000.0)
    [(entries, count)] = requests
    assert count == 1
    [(_, record)] = protocol.decode_entries(entries, LIMITS)
    assert record == {"log": "a line", "file": "/var/log/app/bad-\ufffd\ufffd.log"}


def test_control_characters_in_a_file_name_are_kept_as_text():
    path = "/var/log/app/\x1b[31mred\x07.log"
    [(entries, _)] = EntryEncoder().requests(["x"], path, 1.0)
    [(_, record)] = protocol.decode_entries(entries, LIMITS)
    assert record["file"] == path  # valid UTF-8; JSON and the live page escape them

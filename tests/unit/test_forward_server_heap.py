"""The Forward server's process keeps its request buffers: a request does not make the C
library hand freshly zeroed pages back for buffers the previous request just freed (with
glibc's defaults a shipper's 2,000-line request cost ~240 page faults, a fifth of the
collector's CPU per line)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

# A shipper's request (2,000 lines of ~120 bytes) through the framer and the decoder, as the
# server takes it, in a fresh process; prints the page faults per request once warm.
PROBE = textwrap.dedent(
    """
    import resource, sys
    from patterns.common.forward import protocol
    from patterns.common.forward.server import keep_request_buffers

    if sys.argv[1] == "kept" and not keep_request_buffers():
        print("no-mallopt")
        raise SystemExit
    entries = b"".join(
        protocol.encode_entry(1.5 + i, {"log": f"{i:09d} " + "x" * 110, "file": "/var/log/a.log"})
        for i in range(2000)
    )
    frame = protocol.encode_packed_forward("t", entries, 2000, "c", compressed=False)

    def request():
        framer = protocol.Framer(protocol.DEFAULT_LIMITS.max_frame_bytes)
        for start in range(0, len(frame), 65536):
            framer.feed(frame[start : start + 65536])
        assert len(protocol.decode_frame(framer.next_frame()).events) == 2000

    for _ in range(5):
        request()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        request()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50)
    """
)


def faults_per_request(mode: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout.strip()


def test_requests_reuse_the_heap_instead_of_faulting_in_new_pages() -> None:
    kept = faults_per_request("kept")
    if kept == "no-mallopt":
        pytest.skip("the C library has no mallopt (not glibc): nothing is tuned")
    assert float(kept) < 8, f"{kept} page faults per request"


def test_the_collector_tunes_its_heap_before_it_serves() -> None:
    # run() calls it before anything allocates request buffers.
    source = (ROOT / "patterns/sidecar/collector/run.py").read_text()
    assert source.index("keep_request_buffers()") < source.index("RecordStore(")

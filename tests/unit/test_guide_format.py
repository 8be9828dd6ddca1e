"""The lab guides' executable format (tests/guide/harness.py): every shell block is run by
some runtime's test or says it is a reference listing, and expected outputs compare as
the guides rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sybil import Document

from tests.conftest import ROOT
from tests.guide.harness import (
    _JOB_NOTICE,
    FLAGS,
    GUIDES,
    RUNTIMES,
    blocks,
    executable,
    fences,
    is_shell,
    output_mismatch,
    parse,
)


def _document(text: str) -> Document:
    return Document(text, "guide.md")


def _id(guide: Path) -> str:
    return guide.parent.name


@pytest.mark.parametrize("guide", GUIDES, ids=_id)
def test_every_shell_block_runs_on_a_runtime_or_is_a_reference(guide: Path) -> None:
    document = Document(guide.read_text(), str(guide))
    loose = [
        f"line {document.text.count(chr(10), 0, fence.start) + 1}: ```{' '.join(fence.words)}"
        for fence in fences(document)
        if is_shell(fence) and not executable(fence) and fence.words[1:] != ("reference",)
    ]
    assert not loose, (
        f"{guide.relative_to(ROOT)}: shell blocks that no test runs; name the runtimes "
        f"({', '.join(RUNTIMES)}) after the language, or `reference` for a listing: {loose}")


@pytest.mark.parametrize("guide", GUIDES, ids=_id)
def test_every_guide_runs_and_cleans_up_on_every_runtime(guide: Path) -> None:
    for runtime in RUNTIMES:
        found = [example.parsed for example in parse(guide, runtime)]  # unknown words raise
        assert found, f"{guide.relative_to(ROOT)}: no block for {runtime}"
        assert any("cleanup" in block.flags for block in found), (
            f"{guide.relative_to(ROOT)}: no `cleanup` block for {runtime}: a failed run "
            "would leave what the guide started")


def test_a_block_takes_the_text_block_right_after_it_as_its_expected_output() -> None:
    document = _document(
        "```sh local compose\necho hi\n```\n\n```text\nhi\n```\n\n"
        "```sh kind fails\nfalse\n```\nprose\n```text\nnot an output: prose between\n```\n"
        "```sh reference\nmake benchmarks\n```\n"
        "```bash\nuntagged\n```\n")
    found = [block for _fence, block in blocks(document)]
    assert [(sorted(b.runtimes), sorted(b.flags), b.expected) for b in found] == [
        (["compose", "local"], [], "hi\n"),
        (["kind"], ["fails"], None),
    ]


def test_an_unknown_word_after_the_language_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown word"):
        list(blocks(_document("```sh local clenup\ntrue\n```\n")))
    assert set(FLAGS) == {"fails", "cleanup"}


def test_indented_blocks_in_list_items_are_found() -> None:
    document = _document("- check:\n\n  ```sh local\n  echo hi\n  ```\n\n"
                         "  ```text\n  hi\n  ```\n")
    [(_fence, block)] = list(blocks(document))
    assert block.source == "echo hi\n"
    assert block.expected == "hi\n"


@pytest.mark.parametrize(("expected", "actual"), [
    ("a\nb", "a\nb\n\n"),                                   # trailing blank lines
    ("NAME   READY\npod  1/1", "NAME READY\npod     1/1"),   # runs of blanks
    ("first\n...\nlast", "first\nlast"),                    # `...` line: no line
    ("first\n...\nlast", "first\nx\ny\nlast"),              # `...` line: any lines
    ('{"seconds":...,"n":1}', '{"seconds":0.25,"n":1}'),    # `...` within a line
    ("pod/<name> created", "pod/web-7d4b created"),         # <name>: one word
    ("<n> of <n>", "12 of 12"),                              # same name, same word
    ("<none>", "<none>"),                                    # kubectl's <none>
])
def test_outputs_that_match(expected: str, actual: str) -> None:
    assert output_mismatch(expected, actual) is None


@pytest.mark.parametrize(("expected", "actual"), [
    ("a\nb", "a\nc"),
    ("first\nlast", "first\nextra\nlast"),                  # no `...`: no extra line
    ("<n> of <n>", "12 of 13"),                              # same name, different word
    ("pod/<name> created", "pod/web 7d4b created"),         # <name> has no blank
    ("ok", "ok\nTraceback (most recent call last):"),      # nothing after the last line
])
def test_outputs_that_do_not_match(expected: str, actual: str) -> None:
    mismatch = output_mismatch(expected, actual)
    assert mismatch is not None and "expected (the guide)" in mismatch


@pytest.mark.parametrize("line", [
    "/tmp/g/.harness/block-10.sh: line 2:  7201 Killed                  SHIPPER_PATHS=...",
    "/tmp/g/.harness/block-10.sh: line 2: 15612 Killed                  .venv/bin/log-shipper",
    "[1]+  Done                    sleep 1",
    "[2]-  Terminated              kubectl port-forward svc/web-app 8080",
])
def test_the_shells_job_notices_are_not_output(line: str) -> None:
    assert _JOB_NOTICE.match(line)


@pytest.mark.parametrize("line", ["Killed 2 processes", "==> stopped web-app (exit 0)",
                                  "Terminated: 15"])
def test_output_is_not_taken_for_a_job_notice(line: str) -> None:
    assert not _JOB_NOTICE.match(line)

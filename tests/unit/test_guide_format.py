"""The lab guides' executable format (tests/guide/harness.py): every shell block is run by
some runtime's test or says it is a reference listing, and expected outputs compare as
the guides rely on. And their one shape: every patterns/*/README.md has the same sections
in the same order (SHAPE)."""

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
    Block,
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


# The shape every lab guide has (lab 0 and the patterns alike), its top-level sections in
# this order: after the title and the purpose (the prose before the first of them), how to
# get ready, the demo in one command, the lab itself with expected outputs, how to check
# it worked, how to remove it, and the errors people hit. Sections after these (a
# service's reference, its tests) are the guide's own.
SHAPE = ("Prerequisites", "TL;DR", "Steps", "Verify", "Clean up", "Troubleshooting")


def _sections(document: Document) -> list[tuple[str, int, int]]:
    """(title, start, end) of every `## ` section of the document, outside code blocks."""
    inside = [(fence.start, fence.end) for fence in fences(document)]
    starts = []
    offset = 0
    for line in document.text.splitlines(keepends=True):
        if line.startswith("## ") and not any(a <= offset < b for a, b in inside):
            starts.append((line[3:].strip(), offset))
        offset += len(line)
    ends = [start for _title, start in starts[1:]] + [len(document.text)]
    return [(title, start, end) for (title, start), end in zip(starts, ends, strict=True)]


@pytest.mark.parametrize("guide", GUIDES, ids=_id)
def test_every_guide_has_the_same_shape(guide: Path) -> None:
    document = Document(guide.read_text(), str(guide))
    sections = _sections(document)
    titles = tuple(title for title, _start, _end in sections)
    name = guide.relative_to(ROOT)
    assert titles[:len(SHAPE)] == SHAPE, (
        f"{name}: its `## ` sections must begin with {list(SHAPE)} in this order (others "
        f"may follow); it has {list(titles)}")
    found = {title: (start, end) for title, start, end in sections}
    text = document.text
    title_end = text.index("\n", text.index("# ")) + 1
    assert text[title_end:found["Prerequisites"][0]].strip(), f"{name}: no purpose under its title"

    def blocks_in(section: str) -> list[Block]:
        start, end = found[section]
        return [block for fence, block in blocks(document) if start <= fence.start < end]

    assert blocks_in("TL;DR"), f"{name}: its TL;DR runs no command"
    assert any(block.expected for block in blocks_in("Steps")), \
        f"{name}: no step shows its expected output"
    assert text[slice(*found["Verify"])].split("\n", 1)[1].strip(), f"{name}: Verify is empty"
    everywhere = [block for _fence, block in blocks(document) if "cleanup" in block.flags]
    assert everywhere == [block for block in blocks_in("Clean up") if "cleanup" in block.flags], \
        f"{name}: every `cleanup` block belongs in its Clean up section"
    for runtime in RUNTIMES:
        assert any(runtime in block.runtimes for block in everywhere), \
            f"{name}: Clean up has no block for {runtime}"
    troubleshooting = text[slice(*found["Troubleshooting"])]
    assert "| symptom | cause and fix |" in troubleshooting, (
        f"{name}: Troubleshooting is a table `| symptom | cause and fix |`, each symptom the "
        "error text people see")


def test_the_guide_tier_builds_the_images_once_a_session_for_each_tag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its Compose variant and its kind variant both ask for the images."""
    import tests.guide.conftest as guide_tier

    builds: list[str] = []
    tag = ["0.1.0-abc"]
    monkeypatch.setattr(guide_tier, "_BUILT", {})
    monkeypatch.setattr(guide_tier, "image_tag", lambda: tag[0])
    monkeypatch.setattr(guide_tier, "build_suite_images",
                        lambda: builds.append(tag[0]) or {"web-app": f"web-app:{tag[0]}"})
    first = guide_tier.suite_images()
    assert guide_tier.suite_images() == first == {"web-app": "web-app:0.1.0-abc"}
    assert builds == ["0.1.0-abc"]
    tag[0] = "0.1.0-abc-dirty-12345678"  # an edit: another tag, another build
    assert guide_tier.suite_images() == {"web-app": "web-app:0.1.0-abc-dirty-12345678"}
    assert builds == ["0.1.0-abc", "0.1.0-abc-dirty-12345678"]

"""Executable lab guides: every shell block of patterns/<pattern>/README.md is run, in order,
in one bash session per runtime, and its output compared with the expected-output block
that follows it.

Sybil (https://sybil.readthedocs.io) lexes the Markdown: its fenced-code-block lexer finds
the blocks (also inside list items), a `Document` holds them in order and evaluates each as
an `Example`, reporting a failure with the guide's path and line. What is ours is the
format (below) and the evaluator: a bash session that a user's terminal would be.

The format (docs/CI.md, "Guide tier", says the same for guide writers):

- An executable block is a fence whose info string is `sh` followed by the runtimes it
  runs on: ```` ```sh local compose ````. Runtimes: `local`, `compose`, `kind` (the kind
  tier runs those). GitHub shows such a block as `sh`; the words after it are ours.
- Two more words may follow: `fails` (at least one command of the block must fail, as the
  guide shows: otherwise any command that exits non-zero fails the test) and `cleanup`
  (the block runs even after an earlier block failed, so the guide's own clean-up is
  what the test uses; the blocks after a failure that are not `cleanup` are not run).
- Its expected output is the fence that follows it with only blank lines between, with
  the info string `text`. No such block: the output is not compared (the exit status
  still is). Lines are compared with runs of blanks collapsed, trailing blank lines
  dropped. Placeholders: a line `...` alone stands for any lines (none included); `...`
  within a line for any text on that line; `<name>` (lower case, digits, `-`) for one
  word (no blank), the same word wherever the same name recurs in that block.
- A fence whose info string is `sh` with no runtime is a listing the tests do not run:
  tests/unit/test_guide_format.py accepts it only with the word `reference`
  (```` ```sh reference ````), so that no lab step is left out by mistake.

The session: `bash` (not a login shell, no rc files) in the repository's root, with job
control on (`set -m`, as in a terminal: a background job is a process group of its own;
keep a job's PID with `$!`: job numbers such as `%1` do not count as in a terminal), each
block read from a file (`source <file> </dev/null`: no command can eat the next block as
its input, and no command gets a terminal: use `docker-compose exec -T`, no `-it`).
Standard output and error are one stream, as on a screen; the shell's own job notices
("Killed ...", "Done ...") are dropped, like a prompt. A block may run for BLOCK_TIMEOUT_S.
The environment is the test's, with `.venv/bin` removed from PATH (a user has not
activated the venv: the guide says `.venv/bin/...`), plus DEMO_RUNTIME=<runtime> and
DEMO_SECONDS=3 (so `make demo-<x>` in a TL;DR runs on the runtime under test and ends by
itself; a block that needs a demo running until it stops it says `DEMO_SECONDS=0`),
TMPDIR (a directory of the test's, removed after it: `mktemp` lands there),
DEMO_STATE_DIR (in TMPDIR: what the session's demos record, so that its `make demo-clean`
stops only them) and, for Compose, COMPOSE_PROJECT_NAME (a project of the test's own, so
that it never touches a demo you have running). The transcript of every block, its output
and its time is written to build/guides/<guide>-<runtime>.transcript.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown.lexers import RawFencedCodeBlockLexer

from tests.conftest import ROOT

RUNTIMES = ("local", "compose", "kind")
FLAGS = ("fails", "cleanup")
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
GUIDES = sorted(ROOT.glob("patterns/*/README.md"))
# How long one block may run: a first `make images` builds for minutes.
BLOCK_TIMEOUT_S = 900.0

_INFO = re.compile(r"(?P<info>[^\n]*)$\n", re.MULTILINE)
_PLACEHOLDER = re.compile(r"<([a-z][a-z0-9-]*)>|\.\.\.")
_BLANKS = re.compile(r"\s+")
# The shell's notices about its jobs ("[1]+  Killed  ..." in a terminal; "<file>: line N:
# <pid> Killed  ..." here): shell chatter, like the prompt, that no guide shows.
_JOB_NOTICE = re.compile(
    r"^(?:\S+: line \d+:\s+\d+|\[\d+\][+-]?)\s+"
    r"(?:Killed|Terminated|Done|Exit \d+|Hangup|Aborted|Quit|Interrupt|Stopped)\b")


@dataclass(frozen=True)
class Fence:
    start: int
    end: int
    words: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Block:
    """One executable block and the output the guide says it prints."""

    source: str
    runtimes: frozenset[str]
    flags: frozenset[str]
    expected: str | None
    expected_line: int | None


def fences(document: Document) -> list[Fence]:
    """Every fenced code block of the document, in order, with its info string's words."""
    lexer = RawFencedCodeBlockLexer(info_pattern=_INFO)
    found = [Fence(region.start, region.end, tuple(str(region.lexemes["info"]).split()),
                   str(region.lexemes["source"]))
             for region in lexer(document)]
    return sorted(found, key=lambda fence: fence.start)


def is_shell(fence: Fence) -> bool:
    return bool(fence.words) and fence.words[0] in SHELL_LANGUAGES


def executable(fence: Fence) -> bool:
    return is_shell(fence) and any(word in RUNTIMES for word in fence.words[1:])


def blocks(document: Document) -> Iterator[tuple[Fence, Block]]:
    """The executable blocks, each with the expected output that follows it."""
    found = fences(document)
    for index, fence in enumerate(found):
        if not executable(fence):
            continue
        words = set(fence.words[1:])
        unknown = words - set(RUNTIMES) - set(FLAGS)
        if unknown:
            raise ValueError(f"{document.path}: {document.line_column(fence.start)}: unknown "
                             f"word(s) {sorted(unknown)} after ```{fence.words[0]}; "
                             f"runtimes are {RUNTIMES}, flags {FLAGS}")
        expected = expected_line = None
        end = fence.end
        following = found[index + 1] if index + 1 < len(found) else None
        if (following is not None and following.words[:1] == ("text",)
                and not document.text[fence.end:following.start].strip()):
            expected = following.source
            expected_line = document.text.count("\n", 0, following.start) + 2
            end = following.end
        yield (Fence(fence.start, end, fence.words, fence.source),
               Block(fence.source, frozenset(words & set(RUNTIMES)),
                     frozenset(words & set(FLAGS)), expected, expected_line))


class GuideParser:
    """Sybil parser: the blocks of one runtime, each evaluated in the session kept in the
    document's namespace under "shell"."""

    def __init__(self, runtime: str) -> None:
        assert runtime in RUNTIMES, runtime
        self.runtime = runtime

    def __call__(self, document: Document) -> Iterable[Region]:
        for fence, block in blocks(document):
            if self.runtime in block.runtimes:
                yield Region(fence.start, fence.end, parsed=block, evaluator=evaluate)


def parse(guide: Path, runtime: str) -> Document:
    return Sybil(parsers=[GuideParser(runtime)]).parse(guide)


# --- output -----------------------------------------------------------------------------------


def _normal_lines(text: str) -> list[str]:
    lines = [_BLANKS.sub(" ", line).strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _line_pattern(line: str, seen: set[str]) -> str:
    parts: list[str] = []
    place = 0
    for match in _PLACEHOLDER.finditer(line):
        parts.append(re.escape(line[place:match.start()]))
        name = match.group(1)
        if name is None:
            parts.append(r"[^\n]*?")
        else:
            group = "p_" + name.replace("-", "_")
            parts.append(f"(?P={group})" if group in seen else fr"(?P<{group}>[^\s]+?)")
            seen.add(group)
        place = match.end()
    parts.append(re.escape(line[place:]))
    return "".join(parts)


def expected_pattern(expected: str) -> re.Pattern[str]:
    """The expected block as one regular expression over the normalised output lines, each
    line ended by a newline."""
    seen: set[str] = set()
    pattern = []
    for line in _normal_lines(expected):
        pattern.append(r"(?:[^\n]*\n)*?" if line == "..." else _line_pattern(line, seen) + r"\n")
    return re.compile("".join(pattern))


def output_mismatch(expected: str, actual: str) -> str | None:
    """None when `actual` is what `expected` shows, else a diff saying where it is not."""
    lines = _normal_lines(actual)
    text = "".join(line + "\n" for line in lines)
    if expected_pattern(expected).fullmatch(text):
        return None
    diff = difflib.unified_diff(_normal_lines(expected), lines, "expected (the guide)",
                                "actual", lineterm="", n=2)
    return "the output differs from the guide's:\n" + "\n".join(diff)


# --- the session -----------------------------------------------------------------------------


@dataclass
class Outcome:
    output: str
    failures: list[str]
    timed_out: bool


class Shell:
    """One bash process in a session of its own; blocks are sourced into it one by one."""

    MARK = "__guide_block_done__"

    def __init__(self, env: Mapping[str, str], workdir: Path, transcript: Path) -> None:
        self.workdir = workdir
        self.transcript = transcript
        self.failures_file = workdir / "failed-commands"
        self.count = 0
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=ROOT, env=dict(env), start_new_session=True)
        self.chunks: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        # Job control as in a terminal; every failed command (not the `source` of a block,
        # which only repeats its last command's status) is written down for the harness.
        record = (f'printf "exit %s: %s\\n" "$__guide_status" "$BASH_COMMAND" '
                  f'>> {self.failures_file}')
        self._send("set -m\n"
                   "trap '__guide_status=$?; "
                   f"[[ $BASH_COMMAND == \"source \"* ]] || {record}' ERR\n")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            self.chunks.put(chunk)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, source: str, timeout: float | None = None) -> Outcome:
        self.count += 1
        script = self.workdir / f"block-{self.count:02d}.sh"
        script.write_text(source)
        self.failures_file.write_text("")
        started = time.monotonic()
        self._send(f"source {script} </dev/null\nprintf '\\n{self.MARK}\\n'\n")
        received = b""
        deadline = time.monotonic() + (BLOCK_TIMEOUT_S if timeout is None else timeout)
        marker = f"\n{self.MARK}\n".encode()
        timed_out = False
        while marker not in received:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                timed_out = left <= 0
                break
            with contextlib.suppress(queue.Empty):
                received += self.chunks.get(timeout=min(left, 1.0))
        output = received.split(marker, 1)[0].decode(errors="replace")
        output = "".join(line for line in output.splitlines(keepends=True)
                         if not _JOB_NOTICE.match(line))
        with open(self.transcript, "a") as log:
            log.write(f"$ # block {self.count}\n{source}{output}\n"
                      f"$ # block {self.count} took {time.monotonic() - started:.1f}s\n")
        failures = [line for line in self.failures_file.read_text().splitlines() if line]
        if self.proc.poll() is not None and not timed_out and marker not in received:
            failures.append(f"the shell itself exited ({self.proc.returncode}): a block "
                            "must not `exit`")
        return Outcome(output, failures, timed_out)

    def close(self) -> None:
        """End the shell (what it started is the caller's to find: tests/guide/session.py)."""
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()


def evaluate(example: Example) -> str | None:
    """Sybil evaluator: run the block in the session, then check its exit statuses and its
    output. A string is the failure Sybil reports (with the guide's path and line)."""
    block: Block = example.parsed
    shell: Shell = example.namespace["shell"]
    outcome = shell.run(block.source)
    problems = []
    if outcome.timed_out:
        problems.append(f"the block did not finish in {BLOCK_TIMEOUT_S:.0f}s")
    if "fails" in block.flags:
        if not outcome.failures and not outcome.timed_out:
            problems.append("the guide says a command of this block fails, and none did")
    elif outcome.failures:
        problems.append("a command failed:\n  " + "\n  ".join(outcome.failures))
    if block.expected is not None and not outcome.timed_out:
        mismatch = output_mismatch(block.expected, outcome.output)
        if mismatch:
            problems.append(f"{mismatch}\n(expected output: line {block.expected_line})")
    if not problems:
        return None
    return "\n".join(problems) + "\n--- the block's whole output:\n" + outcome.output


def run_guide(document: Document, shell: Shell) -> list[str]:
    """Every block in order; after a failure only the `cleanup` blocks. The failures."""
    document.namespace["shell"] = shell
    failures: list[str] = []
    for example in document.examples():
        if failures and "cleanup" not in example.parsed.flags:
            continue
        try:
            example.evaluate()
        except AssertionError as failure:  # sybil.example.SybilFailure
            failures.append(str(failure))
    return failures


def session_env(runtime: str, tmpdir: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of a guide's session (see the module's docstring)."""
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(part for part in os.environ.get("PATH", "").split(os.pathsep)
                           if part and os.path.abspath(part) != venv_bin)
    # Nor is the user inside a make: under `make test` these make every `make` a guide runs
    # a sub-make, which prints "Entering directory" lines the guide does not show.
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST",
                          "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    # The demos' records too are the session's: its `make demo-clean` stops what its own
    # demos started, not a demo the user has running (nor does the user's stop the guide's).
    env.update(PATH=path, TMPDIR=str(tmpdir), DEMO_RUNTIME=runtime, DEMO_SECONDS="3",
               DEMO_STATE_DIR=str(tmpdir / "demo-state"))
    env.update(extra)
    return env

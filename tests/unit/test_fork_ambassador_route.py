"""The ambassador guide's "Fork it: a routing rule of your own" section shows the tested
rule (tests/unit/fork_ambassador_route/read_only.py) as it is, its registration line and
the application_name it tries; the rule itself, on the pool's candidates. The section's
steps done on a copy of `patterns/`, against real servers, are
tests/process/test_fork_ambassador_route.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from patterns.ambassador.db_ambassador import pgwire
from patterns.ambassador.db_ambassador.routes import Startup
from patterns.ambassador.db_ambassador.upstream import Upstream
from tests.conftest import ROOT
from tests.fork import fenced_blocks, guide_section

GUIDE = ROOT / "patterns" / "ambassador" / "README.md"
SECTION = "## Fork it: a routing rule of your own"
EXAMPLE = Path(__file__).parent / "fork_ambassador_route" / "read_only.py"
NEW_FILE = Path("patterns/ambassador/db_ambassador/routes/read_only.py")
REGISTRY = Path("patterns/ambassador/db_ambassador/routes/__init__.py")
REGISTRATION = '    "read-only": "read_only:route",'


def section() -> str:
    return guide_section(GUIDE, SECTION)


def test_the_section_shows_the_tested_file_its_registration_and_its_setting() -> None:
    blocks = [(lang, body) for lang, _words, body in fenced_blocks(section())]
    python = [body for lang, body in blocks if lang == "python"]
    assert EXAMPLE.read_text() in python, f"the section shows {EXAMPLE.name} as it is"
    assert REGISTRATION + "\n" in python, "and the one line that registers it"
    tried = [body for lang, body in blocks if lang == "sh"]
    assert any("AMBASSADOR_ROUTE=read-only" in body and "reports-readonly" in body
               for body in tried), "and the setting and the application_name it tries"  # fmt: skip
    assert str(NEW_FILE) in section() and str(REGISTRY) in section()


def _rule() -> ModuleType:
    spec = importlib.util.spec_from_file_location("read_only", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _upstream(name: str, in_recovery: bool | None) -> Upstream:
    return Upstream(name, 5432, healthy=True, in_recovery=in_recovery)


def _startup(application_name: str) -> Startup:
    return Startup(pgwire.startup_message({"user": "app", "application_name": application_name}))


def test_the_rule_puts_standbys_first_for_read_only_sessions_only() -> None:
    route = _rule().route
    primary, standby_a, standby_b = (_upstream("p", False), _upstream("a", True),
                                     _upstream("b", True))  # fmt: skip
    candidates = [primary, standby_a, standby_b]  # the pool's order: primaries first
    assert route(_startup("reports-readonly"), candidates) == [standby_a, standby_b, primary]
    assert route(_startup("notes"), candidates) == candidates
    assert route(_startup("readonly"), candidates) == candidates
    assert route(Startup(b""), candidates) == candidates
    # No standby healthy: the primary serves the read-only session.
    assert route(_startup("reports-readonly"), [primary]) == [primary]
    # No role checks (no AMBASSADOR_HEALTH_USER): no upstream is a standby, the order stays.
    unknown = [_upstream("x", None), _upstream("y", None)]
    assert route(_startup("reports-readonly"), unknown) == unknown

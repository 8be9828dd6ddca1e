"""A console script run without its extra (`pip install podpatterns`, then `log-adapter`)
stops at start with exit 2 and one line naming the extra, no traceback:

    log-adapter needs the `json` extra: pip install 'podpatterns[json]'

Each script runs in a fresh interpreter exactly as its console-script wrapper runs it
(import the entry point, call it), with an import hook that hides the distributions of one
extra, as an environment without that extra would. The extras of each service are those
its image installs (images/build.py), so the image and the distribution agree."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.unit.test_image_build import build

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS: dict[str, str] = PROJECT["scripts"]

# What the console-script wrapper pip writes does, behind a hook that hides some modules.
RUNNER = """
import sys

HIDDEN = {hidden!r}


class HideExtra:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, HideExtra())
sys.argv = [{script!r}]
{call}
"""


def extra_modules(extra: str) -> set[str]:
    """The top-level modules of the distributions an extra lists (Flask -> flask)."""
    names = {re.split(r"[\[=<>!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")
             for req in PROJECT["optional-dependencies"][extra]}
    modules = {module for module, dists in importlib.metadata.packages_distributions().items()
               if {dist.lower().replace("_", "-") for dist in dists} & names}
    assert modules, f"no installed module for the {extra} extra"
    return modules


def cases() -> list[tuple[str, str]]:
    """(console script, one extra its image installs)."""
    found = []
    for script in SCRIPTS:
        requirements = build.PYTHON_SERVICES[script].extras
        if requirements != "core":
            found += [(script, extra) for extra in requirements.split("-")]
    return found


def environment(tmp_path: Path) -> dict[str, str]:
    """Valid settings for every service, on free ports and writable directories, so that
    each gets as far as its code goes without the extra."""
    return {
        **os.environ,
        "ADAPTER_HTTP_PORT": str(free_port()),
        "ADAPTER_INPUTS": f"combined={tmp_path / 'access.log'}",
        "COLLECTOR_HTTP_PORT": str(free_port()),
        "COLLECTOR_FORWARD_PORT": str(free_port()),
        "AMBASSADOR_HTTP_PORT": str(free_port()),
        "AMBASSADOR_LISTEN": f"127.0.0.1:{free_port()}",
        "WEB_APP_PORT": str(free_port()),
        "WEB_APP_LOG_DIR": str(tmp_path / "web"),
        "LEGACY_APP_PORT": str(free_port()),
        "LEGACY_APP_LOG_DIR": str(tmp_path / "legacy"),
        "NOTES_APP_PORT": str(free_port()),
        "DATABASE_URL": f"postgresql://notes@127.0.0.1:{free_port()}/notes",
        # The security lab: a token and a CA bundle that exist (their contents do not
        # matter before the extra is imported), a CA directory to create.
        "ISSUER_TOKEN_FILE": str(_file(tmp_path / "token", "t")),
        "ISSUER_CA_DIR": str(tmp_path / "ca"),
        "ISSUER_LISTEN": f"127.0.0.1:{free_port()}",
        "ISSUER_HTTP_PORT": str(free_port()),
        "RENEWER_TOKEN_FILE": str(tmp_path / "token"),
        "RENEWER_CA_BUNDLE": str(_file(tmp_path / "ca.crt", "")),
        "RENEWER_CERT_DIR": str(tmp_path / "tls"),
        "RENEWER_HTTP_PORT": str(free_port()),
    }


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def run_hidden(script: str, extra: str, call: str,
               tmp_path: Path) -> subprocess.CompletedProcess[str]:
    code = RUNNER.format(hidden=extra_modules(extra), script=script, call=call)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=environment(tmp_path), cwd=tmp_path, timeout=60, check=False)


def assert_reports_the_extra(result: subprocess.CompletedProcess[str], script: str,
                             extra: str) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stderr.splitlines() == \
        [f"{script} needs the `{extra}` extra: pip install 'podpatterns[{extra}]'"], result.stderr
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("script", "extra"),
    cases(),
    ids=[f"{script}-without-{extra}" for script, extra in cases()],
)
def test_a_console_script_without_its_extra_says_which_to_install(
    script: str, extra: str, tmp_path: Path
) -> None:
    module, _, function = SCRIPTS[script].partition(":")
    result = run_hidden(script, extra, f"from {module} import {function}\n"
                        f"sys.exit({function}())", tmp_path)
    assert_reports_the_extra(result, script, extra)


@pytest.mark.parametrize(("script", "run"), [
    ("log-adapter", "patterns.adapter.log_adapter.run:run"),
    ("log-collector", "patterns.sidecar.collector.run:run"),
])
def test_main_for_reports_a_missing_extra_of_the_code_it_names(
    script: str, run: str, tmp_path: Path
) -> None:
    """The one entry path, main_for, given the service's run function by reference: the
    module that imports the extra is imported inside it, so the extra is reported by name
    (the shape every entry module takes)."""
    config = {"log-adapter": "patterns.adapter.log_adapter.config",
              "log-collector": "patterns.sidecar.collector.config"}[script]
    call = (f"from patterns.common.service import main_for\n"
            f"from {config} import load_config\n"
            f"main_for({script!r}, load_config, {run!r})()")
    assert_reports_the_extra(run_hidden(script, "json", call, tmp_path), script, "json")


def test_a_missing_module_that_is_no_extras_keeps_its_traceback(tmp_path: Path) -> None:
    """Only an extra's module is a configuration problem: any other missing module is a
    broken install or a bug, and its traceback is what a maintainer needs."""
    call = ("from patterns.common.service import main_for\n"
            "from patterns.sidecar.collector.config import load_config\n"
            "main_for('log-collector', load_config, 'patterns.no_such_module:run')()")
    code = RUNNER.format(hidden=set(), script="log-collector", call=call)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment(tmp_path), cwd=tmp_path, timeout=60, check=False)
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'patterns.no_such_module'" in result.stderr

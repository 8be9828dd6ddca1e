"""python -m demo <pattern> [--runtime kind|podman|compose|local] [--failover]
python -m demo --clean"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import traceback
from pathlib import Path
from types import ModuleType

import requests

from demo import ROOT, containers, lifecycle, podman, ports, processes
from demo.console import say, warn
from demo.errors import DemoError, Stopped
from demo.runtimes import RUNTIMES, choose

# Lab 0 (the plain two-container pod) first, as in the guides.
PATTERNS = ("pod", "sidecar", "adapter", "ambassador", "security")
ERROR_LOG = ROOT / "build" / "demo-error.log"


def check_ports(module: ModuleType, pattern: str, runtime: str) -> None:
    """Before anything is built or started: every port the demo will listen on is free
    (on Compose and podman, except those its own containers or pods of an earlier run
    publish: the demo removes those first)."""
    if runtime == "compose":
        ports.check_free(containers.compose_ports(pattern), runtime,
                         containers.own_published_ports(pattern))
    elif runtime == "podman":
        ports.check_free(module.ports(runtime), runtime,
                         podman.own_published_ports(getattr(module, "PODMAN_PUBLISH", {})))
    else:
        ports.check_free(module.ports(runtime), runtime)


def supported(module: ModuleType) -> list[str]:
    """The runtimes a pattern's demo runs on: those it has a run_<runtime>() for."""
    return [runtime for runtime in RUNTIMES if hasattr(module, f"run_{runtime}")]


def clean() -> None:
    # Local demos first (a running one is asked to stop and tears itself down), then a
    # pattern's own leftovers (the ambassador's local servers), then the runtimes' (Compose
    # projects, kind namespaces, podman pods).
    processes.clean()
    modules = {pattern: importlib.import_module(f"demo.{pattern}") for pattern in PATTERNS}
    for module in modules.values():
        pattern_clean = getattr(module, "clean", None)
        if pattern_clean is not None:
            pattern_clean()
    containers.clean(list(PATTERNS), on_podman=[pattern for pattern, module in modules.items()
                                                 if "podman" in supported(module)])


def run(argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("pattern", nargs="?", choices=PATTERNS)
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="default: DEMO_RUNTIME or the best available")
    parser.add_argument("--failover", action="store_true",
                        help="ambassador: stop the primary, promote the standby")
    parser.add_argument("--clean", action="store_true", help="remove what the demos left running")
    args = parser.parse_args(argv)
    if args.clean:
        clean()
        return
    if args.pattern is None:
        parser.error("name a pattern: " + ", ".join(PATTERNS))
    module = importlib.import_module(f"demo.{args.pattern}")
    if args.failover:
        if not hasattr(module, "failover"):
            parser.error(f"--failover is for the ambassador demo, not {args.pattern}")
        if shutil.which("kind"):
            containers.use_kind_cluster(create=False)
        requested = args.runtime or os.environ.get("DEMO_RUNTIME") or None
        module.failover(choose(args.runtime, supported(module)).runtime, requested=requested)
        return
    choice = choose(args.runtime, supported(module))
    say(f"runtime: {choice.runtime} ({choice.reason}); set DEMO_RUNTIME to choose another")
    check_ports(module, args.pattern, choice.runtime)
    if choice.runtime == "kind":
        containers.use_kind_cluster()
    getattr(module, f"run_{choice.runtime}")()
    lifecycle.forget_aborts()


def _failed_command(error: subprocess.CalledProcessError) -> str:
    argv = error.cmd if isinstance(error.cmd, list) else [str(error.cmd)]
    stderr = error.stderr.strip() if isinstance(error.stderr, str) else ""
    said = stderr.splitlines()[-1] if stderr else "its output is above"
    return f"`{' '.join(map(str, argv))}` failed with exit {error.returncode}: {said}"


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0, 1 for a failure (one line on stderr saying what to do), 128+N for
    signal N. No traceback reaches the user: an unexpected error is one line too, naming
    the log file its details went to."""
    lifecycle.install_signal_handlers()
    try:
        run(argv)
        return 0
    except Stopped as stopped:
        lifecycle.abort()
        warn(f"demo: stopped by {signal.Signals(stopped.signum).name}; what it started is "
             "stopped")
        return 128 + stopped.signum
    except KeyboardInterrupt:
        lifecycle.abort()
        warn("demo: interrupted (Ctrl-C); what it started is stopped")
        return 128 + signal.SIGINT
    except DemoError as error:
        lifecycle.abort()
        warn(f"demo: {error}")
        return 1
    except subprocess.CalledProcessError as error:
        lifecycle.abort()
        warn(f"demo: {_failed_command(error)}")
        return 1
    except requests.RequestException as error:
        lifecycle.abort()
        url = error.request.url if error.request is not None else "a service"
        warn(f"demo: {url} did not answer ({type(error).__name__}); `make demo-clean` and "
             "run the demo again")
        return 1
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            lifecycle.abort()
        raise
    except Exception as error:
        details = traceback.format_exc()
        lifecycle.abort()
        try:
            ERROR_LOG.parent.mkdir(parents=True, exist_ok=True)
            ERROR_LOG.write_text(details)
            where = f"the details are in {_shown(ERROR_LOG)}"
        except OSError as unwritable:
            where = f"its details could not be written to {ERROR_LOG}: {unwritable}"
        warn(f"demo: unexpected error: {type(error).__name__}: {error} ({where}; please "
             "report it)")
        return 1


def _shown(path: Path) -> str:
    """A path as the user, in the repository's root, would type it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    raise SystemExit(main())

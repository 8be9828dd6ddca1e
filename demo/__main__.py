"""python -m demo <pattern> [--runtime kind|compose|local] [--failover]
python -m demo --clean"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil

from demo import containers
from demo.local import say
from demo.runtimes import RUNTIMES, choose

PATTERNS = ("sidecar", "adapter", "ambassador")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("pattern", nargs="?", choices=PATTERNS)
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="default: DEMO_RUNTIME or the best available")
    parser.add_argument("--failover", action="store_true",
                        help="ambassador: stop the primary, promote the standby")
    parser.add_argument("--clean", action="store_true", help="remove what the demos left running")
    args = parser.parse_args()
    if args.clean:
        # A pattern's own leftovers first (the ambassador's local servers), then the
        # runtimes' (Compose projects, kind namespaces, saved state).
        for pattern in PATTERNS:
            clean = getattr(importlib.import_module(f"demo.{pattern}"), "clean", None)
            if clean is not None:
                clean()
        containers.clean(list(PATTERNS))
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
        module.failover(choose(args.runtime).runtime, requested=requested)
        return
    choice = choose(args.runtime)
    say(f"runtime: {choice.runtime} ({choice.reason}); set DEMO_RUNTIME to choose another")
    if choice.runtime == "kind":
        containers.use_kind_cluster()
    getattr(module, f"run_{choice.runtime}")()


if __name__ == "__main__":
    main()

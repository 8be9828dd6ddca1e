"""`make demo-<pattern>`: run a pattern on the best runtime this machine has.

kind (a real Kubernetes cluster) when `kind`, `kubectl` and a Docker engine are there;
otherwise Docker Compose (pods emulated with a shared network namespace and volume);
otherwise plain local processes (a temporary directory as the shared volume, the host's
loopback as the pod's localhost). The runner always says which one it chose and why.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the demos keep between runs (secrets, what a demo started), and so what
# `make demo-clean` stops: DEMO_STATE_DIR, relative to the repository's root unless
# absolute; default .demo (gitignored). A second set of demos with a state directory of its
# own (the guide tier's sessions) and `make demo-clean` there leave the others' alone.
STATE_DIR = ROOT / (os.environ.get("DEMO_STATE_DIR") or ".demo")

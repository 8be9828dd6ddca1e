"""`make demo-<pattern>`: run a pattern on the best runtime this machine has.

kind (a real Kubernetes cluster) when `kind`, `kubectl` and a Docker engine are there;
otherwise Docker Compose (pods emulated with a shared network namespace and volume);
otherwise plain local processes (a temporary directory as the shared volume, the host's
loopback as the pod's localhost). The runner always says which one it chose and why.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the demos keep between runs (secrets, what a local demo started): gitignored.
STATE_DIR = ROOT / ".demo"

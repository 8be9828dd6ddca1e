"""`log-collector` / `python -m patterns.sidecar.collector`."""

from patterns.common.service import main_for
from patterns.sidecar.collector.app import run
from patterns.sidecar.collector.config import load_config

main = main_for("log-collector", load_config, run)

if __name__ == "__main__":
    main()

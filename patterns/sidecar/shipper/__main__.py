"""`log-shipper` / `python -m patterns.sidecar.shipper`."""

from patterns.common.service import main_for
from patterns.sidecar.shipper.app import run
from patterns.sidecar.shipper.config import load_config

main = main_for("log-shipper", load_config, run)

if __name__ == "__main__":
    main()

"""`log-shipper` / `python -m patterns.sidecar.shipper`."""

from patterns.common.service import main_for
from patterns.sidecar.shipper.config import load_config

main = main_for("log-shipper", load_config, "patterns.sidecar.shipper.run:run")

if __name__ == "__main__":
    main()

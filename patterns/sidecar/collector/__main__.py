"""`log-collector` / `python -m patterns.sidecar.collector`."""

from patterns.common.service import main_for
from patterns.sidecar.collector.config import load_config

# `run` by reference: its module imports orjson (the `json` extra), which main_for then
# reports by name at start instead of a traceback here.
main = main_for("log-collector", load_config, "patterns.sidecar.collector.run:run")

if __name__ == "__main__":
    main()

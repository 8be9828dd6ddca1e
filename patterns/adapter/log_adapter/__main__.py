"""`log-adapter`: settings from ADAPTER_* variables (see patterns/adapter/README.md)."""

from patterns.adapter.log_adapter.config import load_config
from patterns.common.service import main_for

# `run` by reference: its module imports orjson (the `json` extra), which main_for then
# reports by name at start instead of a traceback here.
main = main_for("log-adapter", load_config, "patterns.adapter.log_adapter.run:run")

if __name__ == "__main__":
    main()

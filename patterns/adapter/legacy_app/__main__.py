"""`legacy-app`: serve the legacy shop under gunicorn (settings: LEGACY_APP_* env)."""

from patterns.adapter.legacy_app.config import load_config
from patterns.common.service import main_for

# `run` by reference: its module imports Flask and gunicorn (the `web` extra), which
# main_for then reports by name at start instead of a traceback here.
main = main_for("legacy-app", load_config, "patterns.adapter.legacy_app.run:run")

if __name__ == "__main__":
    main()

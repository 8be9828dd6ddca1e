"""`whoami-app`: serve the security lab's app under gunicorn (settings: WHOAMI_APP_* env)."""

from patterns.common.service import main_for
from patterns.security.whoami_app.config import load_config

# `run` by reference: its module imports Flask and gunicorn (the `web` extra), which
# main_for then reports by name at start instead of a traceback here.
main = main_for("whoami-app", load_config, "patterns.security.whoami_app.run:run")

if __name__ == "__main__":
    main()

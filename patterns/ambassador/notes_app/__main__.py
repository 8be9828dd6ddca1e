"""`notes-app` serves the notes service under gunicorn (settings: NOTES_APP_*, DATABASE_URL)."""

from patterns.ambassador.notes_app.config import load_config
from patterns.common.service import main_for

# `run` by reference: its module imports Flask, gunicorn and psycopg (the `web` and `db`
# extras), which main_for then reports by name at start instead of a traceback here.
main = main_for("notes-app", load_config, "patterns.ambassador.notes_app.run:run")

if __name__ == "__main__":
    main()

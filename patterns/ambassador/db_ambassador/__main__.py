"""`db-ambassador` / `python -m patterns.ambassador.db_ambassador`."""

from patterns.ambassador.db_ambassador.config import load_config
from patterns.common.service import main_for

main = main_for("db-ambassador", load_config, "patterns.ambassador.db_ambassador.run:run")

if __name__ == "__main__":
    main()

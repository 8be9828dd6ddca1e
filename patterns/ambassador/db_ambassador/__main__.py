from patterns.common.service import main_for

from .config import load_config
from .server import run

main = main_for("db-ambassador", load_config, run)

if __name__ == "__main__":
    main()

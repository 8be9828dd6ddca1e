from patterns.common.service import main_for

from .config import load_config

main = main_for("cert-renewer", load_config, "patterns.security.cert_renewer.run:run")

if __name__ == "__main__":
    main()

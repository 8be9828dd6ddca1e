from patterns.common.service import main_for

from .config import load_config

# `run` by reference: what it runs imports httptools and uvloop, extras reported by name.
main = main_for("tls-proxy", load_config, "patterns.security.tls_proxy.run:run")

if __name__ == "__main__":
    main()

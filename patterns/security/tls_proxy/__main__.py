from patterns.common.service import main_for

from .config import load_config

# `run` by reference: its module imports uvloop and httptools, extras reported by name.
main = main_for("tls-proxy", load_config, "patterns.security.tls_proxy.server:run")

if __name__ == "__main__":
    main()

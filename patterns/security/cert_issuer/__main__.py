"""`cert-issuer` runs the issuer; `cert-issuer init-ca` creates the CA in ISSUER_CA_DIR (if
it is empty) and exits, so the CA bundle can be distributed before the issuer starts."""

from __future__ import annotations

import os
import sys

from patterns.common.config import ConfigError
from patterns.common.service import EXIT_CONFIG, exit_if_extra_missing, main_for

from .config import load_ca_dir, load_config

_serve = main_for("cert-issuer", load_config, "patterns.security.cert_issuer.run:run")


def init_ca_command() -> int:
    try:
        ca_dir = load_ca_dir(os.environ)
    except ConfigError as exc:
        print(f"cert-issuer: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        from .ca import CAError, init_ca
    except ModuleNotFoundError as exc:
        exit_if_extra_missing("cert-issuer", exc)
        raise
    try:
        ca, created = init_ca(ca_dir)
    except (CAError, OSError) as exc:
        print(f"cert-issuer: {exc}", file=sys.stderr)
        return 1
    what = "created" if created else "already present"
    print(f"CA {what} in {ca_dir}: serial {ca.info.serial}, "
          f"valid until {ca.info.not_after:%Y-%m-%d}; bundle {ca_dir / 'ca.crt'}")
    return 0


def main() -> None:
    args = sys.argv[1:]
    if args == ["init-ca"]:
        sys.exit(init_ca_command())
    if args:
        print("usage: cert-issuer [init-ca]", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    _serve()


if __name__ == "__main__":
    main()

"""A minimal service on the shared runtime, for tests/process/test_runtime.py."""

import threading
from dataclasses import dataclass

from patterns.common.config import Env
from patterns.common.service import main_for


@dataclass(frozen=True)
class Config:
    admin_host: str
    admin_port: int
    ready: bool
    linger: float
    setup: float


def load_config(environ):
    env = Env(environ)
    config = Config(
        admin_host=env.str("SAMPLE_HTTP_HOST", "127.0.0.1"),
        admin_port=env.port("SAMPLE_HTTP_PORT", 9199),
        ready=env.bool("SAMPLE_READY", True),
        linger=env.float("SAMPLE_LINGER", 0.0, min=0),
        setup=env.float("SAMPLE_SETUP_SECONDS", 0.0, min=0),
    )
    env.check()
    return config


def run(config, runtime):
    # Set-up work before the checks exist (a store loading, a listener binding).
    threading.Event().wait(config.setup)
    runtime.admin.readiness.append(lambda: (config.ready, "sample not ready"))
    runtime.admin.open_probes()
    runtime.stopping.wait()
    # A graceful shutdown that takes a while: a second signal must not wait for it.
    threading.Event().wait(config.linger)


main = main_for("runtime-sample", load_config, run)

if __name__ == "__main__":
    main()

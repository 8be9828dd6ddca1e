"""A stand-in pattern for the tests of the demo runner (demo/__main__.py, demo/local.py):
what a pattern's local runtime does, with services that cost nothing to start.

- As a pattern: `run_local()` starts one service per entry of PORTS in a LocalPod, waits
  until each is ready, says "standin: running" and runs until something stops it.
- As a service (`python -m tests.unit.standin_demo`, what the pod starts): answers 200 on
  STANDIN_PORT and forks a helper process, whose PID it writes to STANDIN_HELPER_FILE, so a
  test sees a stopped process group go whole. Without STANDIN_PORT it never listens: a
  service that failed to bind, yet runs on.

`runner_script()` is the program a test runs as the demo's runner: it points the demo at a
state directory and these ports, then calls demo.__main__.main(["standin", "--runtime",
"local"]) as `make demo-<pattern>` would.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import time
from pathlib import Path

from demo.local import LocalPod, say
from demo.ports import Port

PORTS: dict[str, int] = {}


def ports(runtime: str) -> list[Port]:
    return [Port(port, f"stand-in service {name}") for name, port in PORTS.items()]


def run_local() -> None:
    with LocalPod("standin") as pod:
        for name, port in PORTS.items():
            pod.start(name, "tests.unit.standin_demo", {
                "STANDIN_PORT": str(port),
                "STANDIN_HELPER_FILE": str(pod.workdir / f"{name}.helper-pid"),
            }, listens_on=[port])
            pod.wait_ready(name, f"http://127.0.0.1:{port}/readyz")
        say("standin: running")
        while True:
            pod.check_running()
            time.sleep(0.1)


def runner_script(state_dir: Path, ports: dict[str, int]) -> str:
    return f"""
import sys
from pathlib import Path

import demo.__main__ as runner
import demo.processes
from tests.unit import standin_demo

demo.processes.STATE_DIR = Path({str(state_dir)!r})
standin_demo.PORTS.update({ports!r})
sys.modules["demo.standin"] = standin_demo
runner.PATTERNS = (*runner.PATTERNS, "standin")
sys.exit(runner.main(["standin", "--runtime", "local"]))
"""


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok\n")

    def log_message(self, *_args: object) -> None:
        pass


def serve() -> None:
    if "STANDIN_PORT" not in os.environ:
        time.sleep(600)
        return
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(os.environ["STANDIN_HELPER_FILE"]).write_text(str(helper.pid))
    server = http.server.HTTPServer(("127.0.0.1", int(os.environ["STANDIN_PORT"])), _Ok)
    server.serve_forever()


if __name__ == "__main__":
    serve()

"""The tls-proxy against stunnel4 and HAProxy 2.6 (Debian's packages) terminating the same
TLS (ECDSA P-256, TLS 1.3) in front of the same static upstream, measured with `wrk` in
one run: new connections per second (a TLS handshake per request: `-H 'Connection: close'`),
requests per second on kept-alive connections (`wrk -t1 -c16`), the CPU each proxy spent
per connection or request (less sensitive to other load on the machine than the rates),
and the tls-proxy's peak RSS. Prints each round's figures and ratios, then the medians;
not pass/fail (targets: >= 0.8x HAProxy and >= 1.0x stunnel on both figures, RSS under
64 MiB).

    .venv/bin/python benchmarks/tls_proxy_vs_stunnel_haproxy.py [--seconds 5] [--rounds 3]
        [--connections 16] [--workers N]

Kept equal, so the ratios compare the proxies and nothing else:
- CPUs: HAProxy's TLS frontend runs its default threads (one per CPU), the tls-proxy its
  default PROXY_WORKERS (one per CPU), stunnel a thread per connection; --workers N sets
  HAProxy's threads and the tls-proxy's workers alike.
- TLS: all three offer OpenSSL's default groups and TLS 1.3 session tickets, and wrk
  resumes a session when it reconnects. A probe before the rounds prints, per server, the
  protocol, cipher and key exchange group negotiated and how many reconnections resumed.
  HAProxy's threads and stunnel share one ticket key; each tls-proxy worker has its own
  (Python's ssl cannot share one), so only the reconnections the kernel hands to the same
  worker resume: with ECDSA P-256 a full handshake costs the server about what a resumed
  one does (both pay the X25519 exchange), the client a signature check more.
- Load from elsewhere: the three take turns within each round, in a rotating order,
  after a warm-up; the CPU figures are the ones to trust on a busy machine.

The static upstream is HAProxy in HTTP mode answering every request itself
(`http-request return`), one thread. Needs haproxy, stunnel4, wrk and openssl:
apt-get install -y haproxy stunnel4 wrk openssl.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import cpu_seconds, free_port, peak_rss_kib, wait_port  # noqa: E402

from tests.tls_certs import CA  # noqa: E402


def tool(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit(f"needs {name}: apt-get install -y haproxy stunnel4 wrk")


def cpu_seconds_of(pids: list[int]) -> float:
    """CPU time summed over `pids`, a thread or process that has gone counting 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def children(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            found.extend(children(int(kid)))
    return sorted(set(found))


def peak_rss_kibs(pids: list[int]) -> list[int]:
    return [peak_rss_kib(pid) for pid in pids]


def pss_kib(pids: list[int]) -> int:
    """Proportional set size summed over `pids`: a page they share (the interpreter's and
    the libraries' code) is counted once over them, not once in each."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
    return total


def wrk(port: int, seconds: int, connections: int, close: bool) -> float:
    args = [tool("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s"]
    if close:
        args += ["-H", "Connection: close"]
    result = subprocess.run([*args, f"https://127.0.0.1:{port}/"], capture_output=True,
                            text=True, timeout=seconds + 60)  # fmt: skip
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(f"wrk on port {port} failed:\n{result.stdout}{result.stderr}")
    errors = re.search(r"Socket errors: (.*)", result.stdout)
    if errors or "Non-2xx" in result.stdout:
        print(f"  note: port {port}: {errors.group(0) if errors else 'non-2xx responses'}")
    return float(match.group(1))


RECONNECTS = 20


def negotiated(port: int) -> str:
    """What a client gets from the server on `port`: protocol, cipher, key exchange group
    (openssl s_client's "Server Temp Key"), and how many of RECONNECTS reconnections
    offering the last session's TLS 1.3 ticket resumed it, as wrk's reconnections do (a
    ticket is good only for the process that issued it: with the tls-proxy's workers,
    about one in PROXY_WORKERS, as the kernel spreads connections over them)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE

    def connect(session: ssl.SSLSession | None) -> tuple[ssl.SSLSession, bool, str]:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                 server_hostname="localhost", session=session) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while tls.recv(65536):  # the tickets arrive with the response
                pass
            cipher = tls.cipher()
            return tls.session, tls.session_reused, f"{tls.version()} {cipher and cipher[0]}"

    session, _, protocol = connect(None)
    resumed = 0
    for _ in range(RECONNECTS):
        session, reused, _ = connect(session)
        resumed += reused
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"],
        input=b"", capture_output=True, timeout=30).stdout.decode(errors="replace")
    group = re.search(r"(?:Server|Peer) Temp Key: ([^,\n]+)", shown)
    return (f"{protocol} {group.group(1) if group else '?'}, "
            f"{resumed} of {RECONNECTS} reconnections resumed")


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--workers", type=int,
                        help="the tls-proxy's PROXY_WORKERS and HAProxy's nbthread alike "
                             "(default: each its own, one per CPU)")  # fmt: skip
    args = parser.parse_args()
    haproxy, stunnel = tool("haproxy"), tool("stunnel4")
    tool("wrk")

    work = Path(tempfile.mkdtemp(prefix="podpatterns-tls-bench-"))
    ca = CA()
    served = ca.issue(("localhost",))
    cert_dir = work / "tls"
    ca.install(cert_dir, served)
    _cert, key = served.write(work, "server")
    combined = work / "combined.pem"
    combined.write_bytes(served.key_pem + served.cert_pem + ca.cert_pem)
    chain = work / "chain.pem"
    chain.write_bytes(served.cert_pem + ca.cert_pem)

    upstream, haproxy_port, stunnel_port, proxy_port = (free_port() for _ in range(4))
    (work / "upstream.cfg").write_text(
        "global\n  nbthread 1\n  maxconn 4000\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
        f"frontend static\n  bind 127.0.0.1:{upstream}\n"
        '  http-request return status 200 content-type text/plain string "hello\\n"\n'
    )
    (work / "haproxy.cfg").write_text(
        "global\n  maxconn 4000\n  ssl-default-bind-options ssl-min-ver TLSv1.2\n"
        + (f"  nbthread {args.workers}\n" if args.workers else "") +
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
        f"frontend tls\n  bind 127.0.0.1:{haproxy_port} ssl crt {combined}\n"
        "  default_backend static\n"
        f"backend static\n  server s1 127.0.0.1:{upstream}\n"
    )
    (work / "stunnel.conf").write_text(
        f"foreground = yes\npid =\noutput = {work}/stunnel.log\ndebug = warning\n"
        f"[tls]\naccept = 127.0.0.1:{stunnel_port}\nconnect = 127.0.0.1:{upstream}\n"
        f"cert = {chain}\nkey = {key}\nsslVersionMin = TLSv1.2\n"
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["upstream"] = subprocess.Popen(
            [haproxy, "-db", "-f", str(work / "upstream.cfg")], **quiet)
        procs["haproxy"] = subprocess.Popen([haproxy, "-db", "-f", str(work / "haproxy.cfg")],
                                            **quiet)  # fmt: skip
        procs["stunnel"] = subprocess.Popen([stunnel, str(work / "stunnel.conf")], **quiet)
        env = {**os.environ, "PROXY_LISTEN": f"127.0.0.1:{proxy_port}",
               "PROXY_UPSTREAM": f"127.0.0.1:{upstream}", "PROXY_CERT_DIR": str(cert_dir),
               "PROXY_HTTP_PORT": str(free_port()), "LOG_LEVEL": "warning"}  # fmt: skip
        if args.workers:
            env["PROXY_WORKERS"] = str(args.workers)
        procs["tls-proxy"] = subprocess.Popen(
            [sys.executable, "-m", "patterns.security.tls_proxy"], env=env, cwd=ROOT, **quiet)
        ports = {"haproxy": haproxy_port, "stunnel": stunnel_port, "tls-proxy": proxy_port}
        for port in (upstream, *ports.values()):
            wait_port(port, timeout=20.0)
        time.sleep(1.0)  # the proxy's other workers
        for name, port in ports.items():
            print(f"{name:<10} {negotiated(port)}")
        kinds = ("handshakes", "keepalive")
        figures: dict[tuple[str, str], list[float]] = {(n, k): [] for n in ports for k in kinds}
        cpu: dict[tuple[str, str], list[float]] = {(n, k): [] for n in ports for k in kinds}
        for port in ports.values():  # warm-up: caches, the proxy's first allocations
            wrk(port, 1, args.connections, close=True)
        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, ECDSA P-256, {args.rounds} "
              f"interleaved rounds, one run ({os.cpu_count()} CPUs)")
        header = (f"{'':<11}{'handshakes/s':>14}{'CPU us/conn':>13}{'keep-alive req/s':>18}"
                  f"{'CPU us/req':>12}")  # fmt: skip
        names = list(ports)
        pss = 0  # the tls-proxy's, after each of its runs
        for round_ in range(args.rounds):
            # Each round the three take turns, in a rotated order, so a burst of load from
            # elsewhere and the position in the round hit them alike.
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for kind in kinds:
                for name in order:
                    processes = children(procs[name].pid)
                    before = cpu_seconds_of(processes)
                    rate = wrk(ports[name], args.seconds, args.connections,
                               close=kind == "handshakes")  # fmt: skip
                    used = cpu_seconds_of(processes) - before
                    if name == "tls-proxy":
                        pss = max(pss, pss_kib(processes))
                    figures[(name, kind)].append(rate)
                    cpu[(name, kind)].append(used / max(rate * args.seconds, 1) * 1e6)
            print(f"round {round_ + 1} (order: {', '.join(order)}; load average "
                  f"{os.getloadavg()[0]:.1f})\n{header}")
            for name in names:
                print(f"{name:<11}{figures[(name, 'handshakes')][-1]:>14.0f}"
                      f"{cpu[(name, 'handshakes')][-1]:>13.0f}"
                      f"{figures[(name, 'keepalive')][-1]:>18.0f}"
                      f"{cpu[(name, 'keepalive')][-1]:>12.1f}")
            print("  tls-proxy / " + ", ".join(
                f"{peer} {kind} {figures[('tls-proxy', kind)][-1] / figures[(peer, kind)][-1]:.2f}"
                for peer in ("haproxy", "stunnel") for kind in kinds))
        peaks = peak_rss_kibs(children(procs["tls-proxy"].pid))
        median = {key: statistics.median(values) for key, values in figures.items()}

        print(f"medians over {args.rounds} rounds (spread: lowest-highest)\n{header}")
        for name in names:
            print(f"{name:<11}{median[(name, 'handshakes')]:>14.0f}"
                  f"{statistics.median(cpu[(name, 'handshakes')]):>13.0f}"
                  f"{median[(name, 'keepalive')]:>18.0f}"
                  f"{statistics.median(cpu[(name, 'keepalive')]):>12.1f}")
            print(f"{'':<11}{spread(figures[(name, 'handshakes')]):>14}"
                  f"{spread(cpu[(name, 'handshakes')]):>13}"
                  f"{spread(figures[(name, 'keepalive')]):>18}"
                  f"{spread(cpu[(name, 'keepalive')]):>12}")
        for peer, target in (("haproxy", 0.8), ("stunnel", 1.0)):
            for kind in kinds:
                ratio = median[("tls-proxy", kind)] / median[(peer, kind)]
                rounds = " ".join(f"{p / q:.2f}" for p, q in zip(
                    figures[("tls-proxy", kind)], figures[(peer, kind)], strict=True))
                cpu_ratio = (statistics.median(cpu[(peer, kind)])
                             / statistics.median(cpu[("tls-proxy", kind)]))
                print(f"tls-proxy/{peer} {kind}: {ratio:.2f} (target >= {target}; per round: "
                      f"{rounds}; by CPU per {'conn' if kind == 'handshakes' else 'req'}: "
                      f"{cpu_ratio:.2f})")
        print(f"tls-proxy peak RSS: {max(peaks) / 1024:.1f} MiB in its largest process, "
              f"{sum(peaks) / 1024:.1f} MiB summed over its {len(peaks)} processes, shared pages "
              f"counted in each (target < 64 MiB); PSS over them after a run: at most "
              f"{pss / 1024:.1f} MiB")
        print(f"load average after the run: {os.getloadavg()[0]:.1f}")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

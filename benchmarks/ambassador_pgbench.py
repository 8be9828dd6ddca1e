"""pgbench -S -c 8 against one PostgreSQL 15 server three ways, in one run: directly,
through HAProxy in TCP mode (Debian's package) and through db-ambassador. Prints TPS and
average latency for each, the ambassador's TPS ratio to HAProxy (target: >= 1.1) and to a
direct connection in every round and their medians, and each proxy's CPU time per
transaction.

    .venv/bin/python benchmarks/ambassador_pgbench.py [--seconds 5] [--rounds 3] [--clients 8]
        [--baseline DIR] [--nice N]

Ratios are taken within a round (the paths of one round run back to back, in an order
that rotates from round to round), so a burst of load from elsewhere on the machine
moves both sides of a ratio; the median over rounds is the figure, the spread says how
much to trust it. `--nice N` (root only) runs PostgreSQL, both proxies and pgbench at
nice -N, alike, so that other work on a shared machine disturbs the run less.

`--baseline DIR` adds a fourth path in the same rounds: the ambassador of another checkout
(e.g. `git worktree add /tmp/amb-old <commit>`), run with this venv's Python, so a change is
compared before/after under the same load.

Needs postgresql-15, pgbench, haproxy and openssl; runs PostgreSQL as `nobody` when root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import cpu_seconds, free_port, wait_port  # noqa: E402

from tests.pg import Cluster, make_workdir, missing_prerequisite  # noqa: E402

PASSWORD = "bench"


def pgbench(
    port: int, seconds: int, clients: int, init: bool = False, nice: int = 0
) -> tuple[float, float]:
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGSSLMODE": "disable"}
    base = [*niced(nice), shutil.which("pgbench") or "pgbench", "-h", "127.0.0.1", "-p",
            str(port), "-U", "postgres"]  # fmt: skip
    if init:
        subprocess.run([*base, "-i", "-s", "1", "-q", "postgres"], env=env, check=True,
                       capture_output=True)  # fmt: skip
        return 0.0, 0.0
    result = subprocess.run(
        [*base, "-S", "-c", str(clients), "-j", "2", "-T", str(seconds), "-n", "postgres"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"pgbench on port {port} failed:\n{result.stderr}")
    out = result.stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = float(re.search(r"latency average = ([\d.]+) ms", out).group(1))  # type: ignore[union-attr]
    return tps, latency


def niced(nice: int) -> list[str]:
    """The command prefix that runs a program at nice -`nice` (nothing for 0)."""
    return ["nice", "-n", str(-nice)] if nice else []


def renice_postmaster(cluster: Cluster, nice: int) -> None:
    """The server's backends are forked by the postmaster and inherit its nice value."""
    pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
    os.setpriority(os.PRIO_PROCESS, pid, -nice)


def spread(values: list[float]) -> str:
    """Median, min-max and each value, e.g. '1.04 (0.91-1.20: 0.91 1.04 1.20)'."""
    each = " ".join(f"{v:.2f}" for v in values)
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}: {each})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="per run (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--baseline", type=Path, help="another checkout's ambassador, too")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        choices=range(0, 21),
        metavar="N",
        help="run server, proxies and pgbench at nice -N (root only)",
    )
    args = parser.parse_args()
    if args.nice and os.geteuid() != 0:
        raise SystemExit("--nice needs root (a negative nice value)")
    for tool in ("pgbench", "haproxy"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"needs {tool}: apt-get install {tool}")
    problem = missing_prerequisite()
    if problem:
        raise SystemExit(problem)

    workdir = make_workdir("podpatterns-bench-")
    db_port, haproxy_port, ambassador_port = free_port(), free_port(), free_port()
    baseline_port = free_port()
    cluster = Cluster(workdir, "bench", db_port, PASSWORD).init().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if args.nice:
            renice_postmaster(cluster, args.nice)
        pgbench(db_port, 0, 0, init=True)
        haproxy_cfg = workdir / "haproxy.cfg"
        haproxy_cfg.write_text(
            "global\n  maxconn 1000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n"
            f"frontend pg\n  bind 127.0.0.1:{haproxy_port}\n  default_backend db\n"
            f"backend db\n  server db1 127.0.0.1:{db_port}\n"
        )
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs.append(
            subprocess.Popen([*niced(args.nice), haproxy, "-db", "-f", str(haproxy_cfg)], **quiet)
        )
        ambassadors = [("ambassador", ambassador_port, ROOT)]
        if args.baseline is not None:
            ambassadors.append(("baseline", baseline_port, args.baseline.resolve()))
        for _name, port, tree in ambassadors:
            procs.append(
                subprocess.Popen(
                    [*niced(args.nice), sys.executable, "-m",
                     "patterns.ambassador.db_ambassador"],
                    env={**os.environ, "AMBASSADOR_LISTEN": f"127.0.0.1:{port}",
                         "AMBASSADOR_UPSTREAMS": f"127.0.0.1:{db_port}",
                         "AMBASSADOR_HTTP_PORT": str(free_port()), "LOG_LEVEL": "warning",
                         "PYTHONPATH": str(tree)},
                    cwd=tree, stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
        wait_port(haproxy_port)
        paths = [("direct", db_port), ("haproxy", haproxy_port)]
        proxy_pid = {"haproxy": procs[0].pid}
        for (name, port, _tree), proc in zip(ambassadors, procs[1:], strict=True):
            wait_port(port)
            paths.append((name, port))
            proxy_pid[name] = proc.pid
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in paths}
        cpu: dict[str, list[float]] = {name: [] for name in proxy_pid}
        ambassadors_run = [name for name in proxy_pid if name != "haproxy"]
        ratios: dict[str, dict[str, list[float]]] = {
            name: {"haproxy": [], "direct": []} for name in ambassadors_run
        }
        print(
            f"pgbench -S -c {args.clients} -j 2 -T {args.seconds}, {args.rounds} interleaved "
            f"rounds, one server{f', all at nice -{args.nice}' if args.nice else ''}"
        )
        # Rounds interleave the paths, so a burst of load from elsewhere on the machine hits
        # them alike, and the order rotates, so no path always runs first or right after
        # another; ratios are taken within a round.
        for index in range(args.rounds):
            shift = index % len(paths)
            for name, port in paths[shift:] + paths[:shift]:
                before = cpu_seconds(proxy_pid[name]) if name in proxy_pid else 0.0
                tps, latency = pgbench(port, args.seconds, args.clients, nice=args.nice)
                runs[name].append((tps, latency))
                if name in proxy_pid:
                    # CPU the proxy burnt per transaction: its cost, whatever else runs here.
                    used = cpu_seconds(proxy_pid[name]) - before
                    cpu[name].append(used / (tps * args.seconds) * 1e6)
            line = [f"{name} {runs[name][-1][0]:.0f}" for name, _ in paths]
            for name in ambassadors_run:
                for peer in ("haproxy", "direct"):
                    ratios[name][peer].append(runs[name][-1][0] / runs[peer][-1][0])
                line.append(
                    f"{name}/haproxy {ratios[name]['haproxy'][-1]:.2f}, "
                    f"{name}/direct {ratios[name]['direct'][-1]:.2f}"
                )
            print(f"round {index + 1}: TPS " + ", ".join(line), flush=True)
        print(f"{'path':<12}{'TPS':>12}{'avg latency ms':>18}{'TPS per round':>30}  (medians)")
        for name, results in runs.items():
            tps = statistics.median(r[0] for r in results)
            latency = statistics.median(r[1] for r in results)
            rounds = " ".join(f"{r[0]:.0f}" for r in results)
            print(f"{name:<12}{tps:>12.0f}{latency:>18.3f}{rounds:>30}")
        print("TPS ratios, median of the rounds (min-max: each round):")
        for name in ambassadors_run:
            print(f"  {name}/haproxy: {spread(ratios[name]['haproxy'])}  target >= 1.10")
            print(f"  {name}/direct:  {spread(ratios[name]['direct'])}")
        haproxy_direct = [h[0] / d[0] for h, d in zip(runs["haproxy"], runs["direct"], strict=True)]
        print(f"  haproxy/direct:  {spread(haproxy_direct)}")
        for name, costs in cpu.items():
            print(
                f"{name} CPU per transaction: {statistics.median(costs):.1f} us "
                f"(per round: {' '.join(f'{c:.1f}' for c in costs)})"
            )
        print(f"load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

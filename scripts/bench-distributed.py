#!/usr/bin/env python3
"""Scale figures of the distributed mode, measured as operators run it:
a release `palisade serve --store … --queue …` (an API node) and release
`palisade worker`s over a real Postgres (initdb in a temporary directory)
and a real Redis, all on this machine, driven by `palisade load`.

Usage: bench-distributed.py PALISADE_BINARY   (prints markdown)

1. CPU-bound studies, one worker vs two: each worker one executor thread
   and one job at a time (one core), the same optimize jobs submitted at
   once; jobs/s of each, and their ratio, measured in one run.
2. API throughput: 400 short backtests, 8 in flight, against the embedded
   service (its defaults) and against an API node with two workers.

Needs Debian's postgresql and redis-server (scripts/install-servers.sh).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE = "guest-examples/out/sma_cross.wasm"
DATA = "SPY=data/sample/spy-like-daily.csv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(args: list[str]) -> list[str]:
    return args if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"] + args


class Servers:
    """A Postgres and a Redis in a temporary directory, stopped on exit."""

    def __init__(self, base: Path):
        self.base = base
        pg_bin = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
        pg_dir = base / "pg"
        pg_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(pg_dir, "postgres")
        self.pg_ctl = [f"{pg_bin}/pg_ctl", "-D", str(pg_dir / "data")]
        subprocess.run(as_postgres([f"{pg_bin}/initdb", "-D", str(pg_dir / "data"), "-A", "trust",
                                    "-U", "palisade", "--no-sync"]), check=True, capture_output=True)
        self.pg_port = free_port()
        subprocess.run(as_postgres(self.pg_ctl + ["-o", f"-p {self.pg_port} -k {pg_dir} -c listen_addresses=127.0.0.1",
                                                  "-l", str(pg_dir / "log"), "-w", "start"]),
                       check=True, capture_output=True)
        self.redis_port = free_port()
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no", "--dir", str(base)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)

    def urls(self) -> list[str]:
        return ["--store", f"postgres://palisade@127.0.0.1:{self.pg_port}/postgres",
                "--queue", f"redis://127.0.0.1:{self.redis_port}"]

    def reset(self) -> None:
        """Empties the store and the queue between runs."""
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "FLUSHALL"], check=True, capture_output=True)
        psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
        subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "palisade", "-d", "postgres",
                        "-c", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"], check=True, capture_output=True)

    def stop(self) -> None:
        self.redis.kill()
        self.redis.wait()
        subprocess.run(as_postgres(self.pg_ctl + ["-m", "immediate", "stop"]), capture_output=True)


def start(bin_: str, command: str, args: list[str]) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([bin_, command, "--listen", "127.0.0.1:0"] + args, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    if " on http" not in line and "listening on" not in line:
        p.kill()
        sys.exit(f"bench-distributed: {command} did not start: {line!r}")
    return p, "http" + line.split("http", 1)[1]


def load(bin_: str, url: str, flags: list[str]) -> dict:
    out = subprocess.run([bin_, "load", "--url", url, "--module", MODULE, "--data", DATA, "--json"] + flags,
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench-distributed: palisade load failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    if summary["succeeded"] != summary["jobs"]:
        sys.exit(f"bench-distributed: not every job succeeded: {summary}")
    return summary


def fleet(bin_: str, servers: Servers, base: Path, workers: int, worker_flags: list[str]):
    servers.reset()
    procs = []
    api, url = start(bin_, "serve", ["--data-dir", str(base / f"api-{workers}")] + servers.urls())
    procs.append(api)
    for i in range(workers):
        w, _ = start(bin_, "worker", ["--data-dir", str(base / f"w{i}-{workers}")] + servers.urls() + worker_flags)
        procs.append(w)
    return procs, url


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def main(argv: list[str]) -> int:
    bin_ = argv[0] if argv else str(ROOT / "target/release/palisade")
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        os.chmod(base, 0o755)  # Postgres runs as its own user
        servers = Servers(base)
        try:
            one_core = ["--executor-threads", "1", "--max-running", "1"]
            study = ["--jobs", "48", "--concurrency", "48", "--mix", "optimize=1",
                     "--grid", "fast=2:33:1", "--grid", "slow=20:200:6"]
            scale = {}
            for n in (1, 2):
                procs, url = fleet(bin_, servers, base, n, one_core)
                try:
                    load(bin_, url, ["--jobs", "4", "--concurrency", "2", "--mix", "optimize=1"])  # compile, warm
                    scale[n] = load(bin_, url, study)
                finally:
                    stop(procs)
            ratio = scale[2]["jobs_per_sec"] / scale[1]["jobs_per_sec"]
            rows.append("CPU-bound studies: 48 optimize jobs of 992 variants each over 2,520 bars, submitted at "
                        "once; every worker one executor thread, one job at a time (one core).\n")
            rows.append("| workers | jobs/s | wall s | p50 latency s |\n|---|---|---|---|")
            for n in (1, 2):
                s = scale[n]
                rows.append(f"| {n} | {s['jobs_per_sec']:.2f} | {s['wall_seconds']:.1f} | "
                            f"{s['latency_ms']['p50'] / 1000:.1f} |")
            rows.append(f"\nTwo workers vs one, measured in one run: **{ratio:.2f}×**.\n")

            short = ["--jobs", "400", "--concurrency", "8"]
            servers.reset()
            emb = subprocess.Popen([bin_, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(base / "embedded")],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            url = emb.stdout.readline().strip().removeprefix("palisade listening on ")
            try:
                load(bin_, url, ["--jobs", "8", "--concurrency", "2"])
                embedded = load(bin_, url, short)
            finally:
                stop([emb])
            procs, url = fleet(bin_, servers, base, 2, ["--executor-threads", "1", "--max-running", "4"])
            try:
                load(bin_, url, ["--jobs", "8", "--concurrency", "2"])
                remote = load(bin_, url, short)
            finally:
                stop(procs)
            rows.append("API throughput: 400 backtests of 2,520 bars, 8 in flight (`palisade load --jobs 400 "
                        "--concurrency 8`), against the embedded service (its defaults) and against an API "
                        "node with two workers (one executor thread, four jobs at a time each), one after the "
                        "other in one run. Both take submissions through the same per-tenant token bucket (`submit_rate` "
                        "100/s, `submit_burst` 200): the p99 includes the 1 s `Retry-After` of its 429s.\n")
            rows.append("| deployment | jobs/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
            for label, s in (("embedded (`palisade serve`)", embedded), ("API node + 2 workers", remote)):
                lat = s["latency_ms"]
                rows.append(f"| {label} | {s['jobs_per_sec']:.0f} | {lat['p50']:.1f} | {lat['p95']:.1f} | "
                            f"{lat['p99']:.1f} |")
        finally:
            servers.stop()
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

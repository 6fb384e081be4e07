#!/usr/bin/env python3
"""The benchmark figures of BENCHMARKS.md, each section measured by one
function here and written into its own generated block of that file
(with --write), so the file is never edited by hand. Run through
scripts/bench.sh, which builds what the sections need first.

Usage: bench.py [--write] [SECTION ...]   (no section: all of them)

Sections:
  process   whole-process CLI figures (fresh processes, as users run it)
  ratios    the ratio gate's table (scripts/ratio-gate.sh)
  costs     the cost gate's tables (scripts/cost-gate.sh)
  criterion warm criterion figures (cargo bench -p palisade-benches)
  service   the service's load bench (cargo bench -p palisade --bench service)
  load      `palisade load` against a release `palisade serve`: the replaced
            system's scenario and a backtest mix
  uploads   server memory under large uploads (scripts/upload-memory.py)
  soak      the service soak under faults (runtime/cli/tests/soak.rs)
  python    Python strategies: sma-cross in Python vs backtesting.py in one
            run, a fresh process's overhead, memory per instance, a
            1,000-variant study, service jobs
  distributed  the distributed mode: one worker vs two on CPU-bound studies,
            API throughput with remote workers vs embedded, job writes per
            second into Postgres vs SQLite (scripts/bench-distributed.py,
            cargo bench -p palisade-service --bench store_writes)
  live      issue 16's live paper trading targets: gate response, detection,
            feed-to-strategy latency, 1,000 deployments in one process
            (cargo bench -p palisade-deployment --bench live), recovery after
            kill -9 over a year of one-minute bars and a clean 30-day replay
            (scripts/bench-live.py, release `palisade live run` and
            `palisade feed replay --speed 0`)
  takeover  the distributed mode: a deployment with a year of one-minute
            bars stored moving to another worker after kill -9 of its own
            (lease expiry, claim, restore from Postgres, recovery), three
            moves per round, the shipped files' size in Postgres
            (scripts/bench-takeover.py: release API node and workers)

Environment: RUNS (process: runs per figure, default 5), SOAK_SECONDS
(soak: default 600), LIVE_FLEET (live: deployments in one process, default
1000), CARGO_TARGET_DIR.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
RELEASE = TARGET / "release" / "palisade"
BENCHMARKS = ROOT / "BENCHMARKS.md"
MODULE = "guest-examples/out/sma_cross.wasm"
PY_MODULE = "sdk-python/examples/sma_cross.py"
PY_OWN_PAIR = "sdk-python/benchmarks/sma_cross_own_pair.py"


def run(args: list[str], env: dict | None = None) -> str:
    """Runs a command from the repository's root; its stdout, or exit."""
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        sys.exit(f"bench: {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def text_block(text: str) -> str:
    return "```text\n" + text.rstrip() + "\n```\n"


def bench_data(bars: int, seed: int) -> Path:
    data = TARGET / "bench-data"
    data.mkdir(parents=True, exist_ok=True)
    name = {1_000_000: "walk-1m.csv", 100_000: "walk-100k.csv", 10_000: "walk-10k.csv",
            1_000: "walk-1k.csv", 2: "walk-2.csv"}[bars]
    path = data / name
    if not path.exists() or path.stat().st_size == 0:
        run([sys.executable, "scripts/gen_walk.py", str(bars), str(seed), str(path)])
    return path


# ---- sections: each returns (title, command, markdown) ----

def process() -> tuple[str, str, str]:
    runs = int(os.environ.get("RUNS", "5"))
    big, small = bench_data(1_000_000, 7), bench_data(100_000, 8)

    def spread(xs):
        return f"{statistics.median(xs):.3f} s ({min(xs):.3f}-{max(xs):.3f})"

    def timed(args):
        t = time.perf_counter()
        out = run(args)
        return time.perf_counter() - t, out

    run_s, wall_s = [], []
    for _ in range(runs):
        wall, out = timed([str(RELEASE), "backtest", MODULE, "--data", str(big), "-p", "fast=10", "-p", "slow=30", "--json"])
        doc = json.loads(out)
        run_s.append(doc["timing"]["run_seconds"])
        wall_s.append(wall)
    bars = doc["data"]["bars"]
    pandas = []
    try:
        import pandas as pd
        for _ in range(runs):
            t = time.perf_counter()
            pd.read_csv(big)
            pandas.append(time.perf_counter() - t)
    except ImportError:
        pass
    grid = ["--grid", "fast=2:21:1", "--grid", "slow=30:520:10"]
    study = {}
    for threads in (1, 2):
        study[threads] = [timed([str(RELEASE), "optimize", MODULE, "--data", str(small), *grid,
                                 "--threads", str(threads), "--json", "--no-timing"])[0] for _ in range(runs)]
    t1, t2 = statistics.median(study[1]), statistics.median(study[2])
    rows = [
        "| figure | median (min-max) |",
        "|---|---|",
        f"| backtest 1M bars, run_seconds | {spread(run_s)} = {bars / statistics.median(run_s) / 1e6:.1f} M bars/s |",
        f"| backtest 1M bars, whole process | {spread(wall_s)} |",
    ]
    if pandas:
        rows.append(f"| pandas.read_csv of the same file | {spread(pandas)} |")
    rows += [
        f"| optimize 1,000 x 100k, whole process, 1 thread | {spread(study[1])} |",
        f"| optimize 1,000 x 100k, whole process, 2 threads | {spread(study[2])} |",
        f"| scaling t1 / (2 t2) | {t1 / (2 * t2) * 100:.1f} % |",
    ]
    text = (f"sma-cross (fast 10, slow 30) on generated one-minute bars; each run a fresh "
            f"`palisade` process (release build); {runs} runs per figure.\n\n" + "\n".join(rows) + "\n")
    return "Whole-process figures (as users run the CLI)", "scripts/bench.sh process", text


def ratios() -> tuple[str, str, str]:
    out = run(["scripts/ratio-gate.sh"])
    table = out[out.index("ratio "):]
    return "Ratios measured in one run (the ratio gate)", "scripts/ratio-gate.sh", text_block(table)


def costs() -> tuple[str, str, str]:
    out = run(["scripts/cost-gate.sh"], env={"PALISADE": str(RELEASE)})
    return ("Exact costs of the example strategies (the cost gate)", "scripts/cost-gate.sh",
            "Fuel, memory and host calls are exact and the same on every machine; "
            "time per bar is informational.\n\n" + text_block(out))


def criterion() -> tuple[str, str, str]:
    rows = ["| benchmark | median | throughput |", "|---|---|---|"]
    for bench in ("backtest", "optimize", "limits"):
        run(["cargo", "bench", "-j2", "-q", "-p", "palisade-benches", "--bench", bench, "--", "--noplot"])
    for meta in sorted((TARGET / "criterion").glob("**/new/benchmark.json")):
        info = json.loads(meta.read_text())
        est = json.loads((meta.parent / "estimates.json").read_text())
        median = est["median"]["point_estimate"] / 1e9
        shown = (f"{median * 1e6:.1f} µs" if median < 1e-3 else
                 f"{median * 1e3:.2f} ms" if median < 1 else f"{median:.3f} s")
        tp = info.get("throughput") or {}
        elements = tp.get("Elements") if isinstance(tp, dict) else None
        rate = f"{elements / median / 1e6:.1f} M elements/s" if elements else ""
        rows.append(f"| {info['full_id']} | {shown} | {rate} |")
    return ("Warm figures (criterion)", "cargo bench -p palisade-benches",
            "Medians of criterion's samples, warm (the module compiled, the data loaded).\n\n" + "\n".join(rows) + "\n")


def service() -> tuple[str, str, str]:
    out = run(["cargo", "bench", "-j2", "-q", "-p", "palisade", "--bench", "service"])
    return "The service under load (loopback HTTP)", "cargo bench -p palisade --bench service", text_block(out)


def load() -> tuple[str, str, str]:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen([str(RELEASE), "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{d}/data"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = server.stdout.readline().strip().removeprefix("palisade listening on ")
            common = [str(RELEASE), "load", "--url", url, "--module", MODULE,
                      "--data", "SPY=data/sample/spy-like-daily.csv"]
            runs = [
                ("replaced system: 48 optimize jobs of 8 variants, 6 in flight", ["--scenario", "replaced-system"]),
                ("400 backtests of 2,520 bars, 8 in flight", ["--jobs", "400", "--concurrency", "8"]),
            ]
            parts = []
            for label, flags in runs:
                parts.append(f"{label} (`palisade load {' '.join(flags)}`):\n\n" + text_block(run(common + flags)))
        finally:
            server.kill()
            server.wait()
    return ("The service under `palisade load`", "scripts/bench.sh load",
            "A release `palisade serve` with its defaults and `palisade load` on the same 2-core machine.\n\n"
            + "\n".join(parts))


def uploads() -> tuple[str, str, str]:
    out = run([sys.executable, "scripts/upload-memory.py", str(RELEASE)])
    return ("Server memory under large uploads", "scripts/upload-memory.py target/release/palisade",
            "Uploads are spooled to `tmp/` as they arrive (256 KiB held per upload); a module is "
            "read back whole once for the compiler.\n\n" + out)


def soak() -> tuple[str, str, str]:
    seconds = os.environ.get("SOAK_SECONDS", "600")
    out = subprocess.run(
        ["cargo", "test", "-j2", "--release", "-p", "palisade", "--test", "soak", "--", "--ignored", "--nocapture"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PALISADE_SOAK_SECONDS": seconds})
    line = next((l for l in out.stderr.splitlines() if re.match(r"soak: \d+ s, ", l)), None)
    if out.returncode != 0 or line is None:
        sys.exit(f"bench: the soak failed ({out.returncode}):\n{out.stderr[-3000:]}")
    readies = [float(x) for x in re.findall(r"ready in (\d+) ms", out.stderr)]
    text = (f"{seconds} s of submissions every 25 ms, each with an Idempotency-Key, through rotating "
            f"15 s cycles: kill -9 with requests in flight; a full disk (RLIMIT_FSIZE 0) then kill -9; "
            f"40 slow clients then kill -9; SIGTERM. Unanswered submissions and 503/507 are retried "
            f"with the same key. Ready again after a restart in {min(readies):.0f}-{max(readies):.0f} ms.\n\n"
            + text_block(line))
    return "The service soak under faults", f"PALISADE_SOAK_SECONDS={seconds} cargo test --release -p palisade --test soak -- --ignored --nocapture", text


def python() -> tuple[str, str, str]:
    import tempfile
    sys.path.insert(0, str(ROOT / "tests" / "crosscheck"))
    import bt_peer

    runs = int(os.environ.get("RUNS", "5"))
    walk100k, walk10k, walk1k, walk2 = (bench_data(n, s) for n, s in
                                        ((100_000, 8), (10_000, 9), (1_000, 10), (2, 11)))

    def spread(xs, unit=""):
        return f"{statistics.median(xs):.3f}{unit} ({min(xs):.3f}-{max(xs):.3f})"

    def palisade(*args):
        t = time.perf_counter()
        out = run([str(RELEASE), *args])
        return time.perf_counter() - t, out

    def max_rss_mib(*args):
        """The peak resident memory of one `palisade` process."""
        child = subprocess.Popen([str(RELEASE), *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        if status != 0:
            sys.exit(f"bench: palisade {' '.join(args)} failed")
        return usage.ru_maxrss / 1024

    # The runtime compiled once, as after any first run.
    palisade("backtest", PY_MODULE, "--data", str(walk2))

    # Python sma-cross vs backtesting.py on the same 100,000 bars, alternating.
    df = bt_peer.load_csv(str(walk100k))
    # Also the same rule with the SMA pair updated in Python by the strategy
    # itself (PY_OWN_PAIR), instead of declared for the host to compute.
    peer_s, ours_s, own_s, wall_s, rss = [], [], [], [], []
    for _ in range(runs):
        t = time.perf_counter()
        peer = bt_peer.run_backtest(df, 10, 30)
        peer_s.append(time.perf_counter() - t)
        wall, out = palisade("backtest", PY_MODULE, "--data", str(walk100k), "-p", "fast=10", "-p", "slow=30", "--json")
        doc = json.loads(out)
        ours_s.append(doc["timing"]["run_seconds"])
        wall_s.append(wall)
        own = json.loads(palisade("backtest", PY_OWN_PAIR, "--data", str(walk100k), "--json")[1])
        own_s.append(own["timing"]["run_seconds"])
    if len(doc["trades"]) != len(peer.trades) or own["trades"] != doc["trades"]:
        sys.exit(f"bench: the runs differ: palisade {len(doc['trades'])} trades ({len(own['trades'])} with "
                 f"its own pair), backtesting.py {len(peer.trades)}")
    bars = doc["data"]["bars"]
    rss = [max_rss_mib("backtest", PY_MODULE, "--data", str(walk100k)) for _ in range(3)]
    rss_wasm = [max_rss_mib("backtest", MODULE, "--data", str(walk100k)) for _ in range(3)]
    ratio = statistics.median([p / o for p, o in zip(peer_s, ours_s)])
    own_ratio = statistics.median([p / o for p, o in zip(peer_s, own_s)])
    fuel_per_bar = doc["usage"]["fuel"] / bars
    peak_mib = doc["usage"]["memory_peak_bytes"] / 2**20

    # A fresh process's overhead: a run of 2 bars, whole process.
    tiny = [palisade("backtest", PY_MODULE, "--data", str(walk2), "--json") for _ in range(runs)]
    tiny_wall = [w for w, _ in tiny]
    tiny_load = [json.loads(o)["timing"]["load_seconds"] for _, o in tiny]
    tiny_run = [json.loads(o)["timing"]["run_seconds"] for _, o in tiny]

    # 1,000 variants (20 x 50) of the Python sma-cross over 10,000 bars.
    grid = ["--grid", "fast=2:21:1", "--grid", "slow=30:520:10"]
    study = [palisade("optimize", PY_MODULE, "--data", str(walk10k), *grid, "--threads", "2",
                      "--json", "--no-timing")[0] for _ in range(max(1, runs // 2))]

    # The service: backtests of 1,000 bars, one in flight, end to end.
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen([str(RELEASE), "serve", "--listen", "127.0.0.1:0", "--data-dir", f"{d}/data"],
                                  cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            url = server.stdout.readline().strip().removeprefix("palisade listening on ")
            common = [str(RELEASE), "load", "--url", url, "--module", PY_MODULE, "--data", f"W={walk1k}", "--json"]
            run(common + ["--jobs", "20", "--concurrency", "1"])  # uploads, compiles the runtime once
            service = json.loads(run(common + ["--jobs", "200", "--concurrency", "1"]))
        finally:
            server.kill()
            server.wait()
    lat = service.get("latency_ms", {})

    rows = [
        "| figure | median (min-max) |",
        "|---|---|",
        f"| Python sma-cross, 100,000 bars, run_seconds | {spread(ours_s, ' s')} = {bars / statistics.median(ours_s) / 1e3:.0f} k bars/s |",
        f"| backtesting.py, same strategy and bars, Backtest.run | {spread(peer_s, ' s')} = {bars / statistics.median(peer_s) / 1e3:.0f} k bars/s |",
        f"| **ratio backtesting.py / Python in palisade (one run, alternating)** | **{ratio:.2f}** |",
        f"| the same rule with its SMA pair updated in Python (`{PY_OWN_PAIR}`), run_seconds | {spread(own_s, ' s')}: ratio {own_ratio:.2f}, {own['usage']['fuel'] / bars:,.0f} fuel per bar |",
        f"| Python sma-cross, 100,000 bars, whole process | {spread(wall_s, ' s')} |",
        f"| fuel per bar (exact) | {fuel_per_bar:,.0f} |",
        f"| linear memory of the instance, peak (exact) | {peak_mib:.1f} MiB |",
        f"| the CLI process's peak RSS, 100,000 bars: Python / the wasm sma-cross | {statistics.median(rss):.0f} / {statistics.median(rss_wasm):.0f} MiB |",
        f"| fresh process, 2 bars, whole process (overhead before the first bar) | {spread([w * 1e3 for w in tiny_wall], ' ms')} |",
        f"| ... of which load_seconds (runtime mapped, source checked) | {spread([x * 1e3 for x in tiny_load], ' ms')} |",
        f"| ... of which run_seconds (instantiate, load the source, 2 bars) | {spread([x * 1e3 for x in tiny_run], ' ms')} |",
        f"| optimize 1,000 variants x 10,000 bars, 2 threads, whole process | {spread(study, ' s')} |",
        f"| service: backtest job of 1,000 bars end to end, 1 in flight, p50 / p95 | {lat.get('p50', float('nan')):.1f} / {lat.get('p95', float('nan')):.1f} ms |",
    ]
    text = (f"`{PY_MODULE}` (fast 10, slow 30) on generated one-minute bars, release build, the Python "
            f"runtime already compiled and cached (as after the first run); {runs} runs per figure. "
            "backtesting.py 0.6.6 runs natively in the same process as the harness.\n\n" + "\n".join(rows) + "\n")
    return "Python strategies", "scripts/bench.sh python", text


def distributed() -> tuple[str, str, str]:
    fleet = run([sys.executable, "scripts/bench-distributed.py", str(RELEASE)])
    writes = run(["cargo", "bench", "-j2", "-q", "-p", "palisade-service", "--bench", "store_writes"])
    estimate = (ROOT / "docs" / "distributed-capacity.md").read_text().split("\n", 2)[2]
    out = subprocess.run(["cargo", "test", "-j2", "--release", "-q", "-p", "palisade", "--test", "distributed",
                          "faults_under_load", "--", "--nocapture"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: the faults-under-load test failed:\n{out.stderr[-3000:]}")
    table = [l for l in out.stderr.splitlines() if l.startswith("| ")]
    counts = next(l for l in out.stderr.splitlines() if l.startswith("acknowledged "))
    faults = ("Faults under load (`cargo test --release -p palisade --test distributed faults_under_load -- "
              "--nocapture`): two `palisade load` runs of 24 s (backtests and optimizations, 3 and 2 in "
              "flight, retrying refusals and lost connections with the same Idempotency-Key) against two "
              "API nodes over a 6-node Redis Cluster and a Postgres, with two workers, while one fault after "
              "another strikes. Time to recover: from the fault to the first job that ended after it.\n\n"
              "| fault | time to recover |\n|---|---|\n" + "\n".join(table) + "\n\n"
              + counts + " (jobs lost: acknowledged − stored; results committed twice: results − succeeded).\n\n")
    text = ("A release API node, release workers, a Postgres 15 (initdb in a temporary directory) and a "
            "Redis 7 on this same 2-core machine, driven by `palisade load`.\n\n" + fleet + "\n\n"
            "Job writes through the batching writer (`cargo bench -p palisade-service --bench store_writes`: "
            "200,000 whole job rows sent without waiting, batched into multi-row statements, one "
            "transaction per batch; then 2,000 writes each committed and waited for, as a submission is "
            "before it is acknowledged). The test harness's Postgres runs with `fsync = off`: the figure "
            "is the statements' and the writer's, not this machine's disk. The replaced system claimed "
            "45,000 inserts/s.\n\n" + text_block(writes) + "\n" + faults + estimate)
    return "The distributed mode", "scripts/bench.sh distributed", text


def live() -> tuple[str, str, str]:
    out = run(["cargo", "bench", "-j2", "-q", "-p", "palisade-deployment", "--bench", "live"])
    b = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    p = json.loads(run([sys.executable, "scripts/bench-live.py", str(RELEASE)]))
    g, d, lat, f = b["gate"], b["detect"], b["latency"], b["fleet"]
    rec, clean = p["recovery"], p["clean"]

    def pct(x):
        return f"{x['p50_ms']:.3f} / {x['p99_ms']:.3f} / {x['max_ms']:.3f} ms (n = {x['n']:,})"

    def spread(xs, unit=" ms"):
        return f"{statistics.median(xs):.0f}{unit} ({min(xs):.0f}-{max(xs):.0f})"

    rows = [
        "| target | measured (p50 / p99 / max, or median (min-max)) | target |",
        "|---|---|---|",
        f"| gate response: the venue's drifted fill reaching the actor → gate suspended, `palisade_gate_response_seconds` per suspension | {pct(g['venue_histogram'])} | p99 ≤ 100 ms |",
        f"| gate response: `Handle::fill` of the crossing fill → status watch shows suspended (timed by the bench) | {pct(g['api_fill']['fill_sent_to_status_suspended'])} | p99 ≤ 100 ms |",
    ]
    for dur, r in rec.items():
        runs = r["restarts"]
        rows += [
            f"| recovery, {r['bars']:,} bars stored, kill -9, restart (`--durability {dur}`), {len(runs)} restarts: the deployment's `recovery_ms` | {spread([x['recovery_ms'] for x in runs])} | |",
            f"| ... wall time, process start → first status line `live` (status every 100 ms) | {spread([x['wall_to_live_status_ms'] for x in runs])} | ≤ 2 s |",
            f"| ... wall time, process start → its `deployment live` log line | {spread([x['wall_to_live_log_ms'] for x in runs])} | |",
        ]
    rows += [
        f"| detection: drifted fills (intents published) before suspension, 1 % drift from intent 1/5/10/20, 5 seeds ({d['runs']} runs, all suspended: {d['all_suspended']}) | at most {d['max_drifted_fills']} ({d['max_drifted_intents_published']}) | ≤ 5 fills |",
        f"| clean 30 days ({clean['bars']:,} bars, `--speed 0`, venue at the paper price, `--durability disk`, signal check every 1,440 bars): gate transitions | {clean['gate_transitions']} (max drift score {clean['max_drift_score']:.4f}; {clean['intents_published']:,} intents, {clean['live_fills']:,} live fills, {clean['signal_mismatches']} signal mismatches of {clean['signal_checked_orders']:,} orders; stored in {clean['seconds_to_store_all']:.1f} s) | 0 |",
        f"| feed → strategy, `palisade_feed_to_strategy_seconds` per bar, durability os | {pct(lat['os'])} | p99 ≤ 1 ms |",
        f"| feed → strategy, durability disk (fdatasync per bar) | {pct(lat['disk'])} | p99 ≤ 1 ms |",
        f"| ... one fdatasync of 60 bytes on this disk | {pct(lat['disk']['fdatasync_60_bytes'])} | |",
        f"| {f['requested']:,} deployments in one process: started / live | {f['started']:,} / {f['live']:,}{' (' + f['start_failure'] + ')' if f['start_failure'] else ''} in {f['start_and_warmup_secs']:.1f} s ({f['warmup_bars_each']} bars each) | 1,000 |",
        f"| ... RSS before → after (→ after {f['fed_secs']:.0f} s fed) | {f['rss_before_mib']:.0f} → {f['rss_after_mib']:.0f} MiB (→ {f['rss_fed_mib']:.0f} MiB) = {f['rss_per_deployment_kib']:.0f} KiB per deployment | reported |",
        f"| ... CPU idle, no bars / one bar each every {f['bar_every_secs']:.0f} s | {f['cpu_quiet_cores'] * 100:.1f} % / {f['cpu_fed_cores'] * 100:.1f} % of one core ({f['threads']} threads) | |",
    ]
    checks = []
    for dur, r in rec.items():
        mid, fin = r["mid_stream_restart"], r["mid_stream_final"]
        trips = "; ".join(f"{t['to']}: {t['reason']}" for t in r["gate_transitions"]) or "none"
        checks.append(
            f"- `--durability {dur}`: the year stored in {r['store_seconds']:.0f} s; killed -9 mid-stream at "
            f"{r['killed_mid_stream_at']:,} bars, live again after {mid['recovery_ms']:.0f} ms (deployment) / "
            f"{mid['wall_to_live_status_ms']:.0f} ms (wall); then {fin['bars']:,} bars, {fin['rejected_bars']} rejected, "
            f"{fin['gap_bars']} gap bars; bar log read back: {r['barlog']['records']:,} records, steps "
            f"{r['barlog']['steps']} s, {r['barlog']['unique']:,} distinct timestamps, "
            f"{'exactly the CSV' if r['barlog_ok'] else 'NOT the CSV'}; gate transitions: {trips}.")
    text = (
        "Deployments of `guest-examples/out/sma_cross.wasm`. In-process figures (`cargo bench -p "
        "palisade-deployment --bench live`): `start(Launch)` with `FeedSource::Channel`, a 2-worker tokio "
        "runtime; histogram figures are exact, one observation per event (the histogram's sum's step). "
        "Process figures (`scripts/bench-live.py target/release/palisade`): `palisade feed replay --speed 0` "
        "of a seeded random walk (`scripts/gen_walk.py`) and `palisade live run --json --status-every 0.1` "
        "with the simulated venue (an empty venue.toml: fills at the paper price).\n\n"
        + "\n".join(rows) + "\n\nNo bar lost or duplicated across kill -9:\n\n" + "\n".join(checks) + "\n"
    )
    return ("Live paper trading (issue 16's targets)",
            "cargo bench -p palisade-deployment --bench live; scripts/bench-live.py target/release/palisade", text)


def takeover() -> tuple[str, str, str]:
    t = json.loads(run([sys.executable, "scripts/bench-takeover.py", str(RELEASE)]))
    s, rounds = t["summary"], t["rounds"]
    ttl, beat = t["heartbeat_ttl_ms"], t["heartbeat_interval_ms"]

    def spread(x, unit=" ms"):
        return f"{x['median']:,.0f}{unit} ({x['min']:,.0f}-{x['max']:,.0f})"

    def sizes(key):
        cs = [r[key] for r in rounds]
        rows = sorted(c["rows"] for c in cs)
        span = f"{rows[0]:,}" if rows[0] == rows[-1] else f"{rows[0]:,}-{rows[-1]:,}"
        return (f"{cs[0]['bytes'] / 2**20:.1f} MiB in {span} rows "
                f"({statistics.median(c['stored_bytes'] for c in cs) / 2**20:.1f} MiB stored)")

    labels = {
        "first_move": "move 1: the write log as shipped (`--speed 0`: a batch of bars per row)",
        "second_move": "move 2: after the first restore compacted it (a row per file)",
        "one_row_per_write_move": "move 3: a row per bar and per journal line, as a real-time feed ships it (a year of them: the worst case, since the worker running a deployment now compacts its log every 10,000 writes)",
    }
    parts = [
        ("wall time, kill -9 → the API node shows it `live` on the other worker", "wall_ms"),
        ("... the lease's life left at the kill (`lease_until` − the kill)", "lease_left_at_kill_ms"),
        (f"... expiry → claimed by the other worker (its next heartbeat, every {beat} ms)",
         "claim_after_expiry_ms"),
        ("... first claim → the claim that went live (the first claim's lease lost: below)",
         "lost_and_claimed_again_ms"),
        ("... the takeover, start to started (the worker's log: `took_ms`, `restored_ms` before 31f822c; "
         "files from Postgres, module, start)", "restored_ms"),
        ("... `recovery_ms` (replay of every stored bar; the status)", "recovery_ms"),
        ("... the rest (status polled every 20 ms through the API node)", "rest_ms"),
        ("the first claim's takeover (the claim that went live, unless the first lost its lease)",
         "first_claim_restored_ms"),
    ]
    n = len(rounds)
    head = "| figure, median (min-max) of " + f"{n} | " + " | ".join(labels[k].split(":")[0] for k in s) + " |"
    rows = [head, "|---|" + "---|" * len(s)]
    for label, key in parts:
        lost_none = t["leases_lost_after_takeover"] == 0
        if lost_none and key in ("lost_and_claimed_again_ms", "first_claim_restored_ms"):
            continue
        rows.append(f"| {label} | " + " | ".join(spread(v[key]) for v in s.values()) + " |")
    moves = [m for r in rounds for m in r["moves"]]
    kept = all(m["bars"] == t["bars"] and m["recovered_bars"] == t["bars"] and m["rejected_bars"] == 0
               and m["gap_bars"] == 0 and m["state"] == "live" for m in moves)
    same = all(m["intents_same_after"] for m in moves)
    lost = t["leases_lost_after_takeover"]
    lost_moves = [m for m in moves if m["leases_lost"]]
    lost_restores = ", ".join(f"{m['first_claim_restored_ms']:,}" for m in lost_moves)
    odd = t["other_answers_while_moving"]
    moves_text = "\n".join(f"- {labels[k]}" for k in s)
    recovery = statistics.median(m["recovery_ms"] for m in moves)
    restore = [s[k]["first_claim_restored_ms"]["median"] for k in s]
    realtime = bool(rounds[0]["chunks_one_row_per_write"])
    compacted_all = all(r[key]["rows"] <= 5 for r in rounds  # fleet.rs's FILES: a row per file at most
                        for key in ("chunks_after_first_restore",) + (("chunks_after_last_restore",) if realtime else ()))
    text = (
        f"{t['bars']:,} one-minute bars ({'a year; ' if t['bars'] == 525_600 else ''}`{t['csv']}`, "
        f"gen_walk.py seed 16) served by `palisade feed replay --speed 0` into a deployment of `{MODULE}` "
        f"(fast 10, slow 30; interval_secs 60, durability \"os\", verify_every 0) created through a release API node (`palisade serve --store postgres://… "
        f"--queue redis://…`) and run by one of two release `palisade worker`s (`--heartbeat-interval-ms {beat} "
        f"--heartbeat-ttl-ms {ttl}`), over Postgres {t['pg_version'].split()[0]} (initdb in a temporary "
        f"directory) and Redis on this machine. Once every bar is handled and shipped, the worker running it "
        f"(the status's `worker`) is killed with SIGKILL, and the API node's `GET /v1/deployments/{{id}}` is "
        f"polled until it shows the deployment `live` on the other worker. Then the killed worker is restarted "
        f"(same name and data dir) and the new owner killed, and so on; {n} rounds, a new deployment each:\n\n"
        + moves_text + "\n\n" + "\n".join(rows) + "\n\n"
        f"After every move: {t['bars']:,} bars, {t['bars']:,} recovered, 0 rejected, 0 gap bars, `live`: "
        f"**{'yes' if kept else 'NO'}**; the intents journal (`GET …/intents`) the same before and after: "
        f"**{'yes' if same else 'NO'}**; answers other than 200 and 503 while it moved: {len(odd)}"
        + (f" ({', '.join(sorted({str(a['status']) for a in odd}))})" if odd else "") + ". "
        f"Leases lost right after a takeover: {lost}"
        + (f" (in {len(lost_moves)} of {len(moves)} moves, after a first restore of "
           f"{lost_restores} ms, longer than the lease's life ({ttl:,} ms here): the worker stopped the "
           f"deployment, claimed it again and restored it a second time, from the log the first restore "
           f"compacted)" if lost else "") + ".\n\n"
        f"What Postgres holds of the deployment's files (`SELECT sum(length(bytes)), count(*) FROM "
        f"deployment_chunks`): as shipped {sizes('chunks_shipped')}; after move 1 "
        f"{sizes('chunks_after_first_restore')}"
        + (f"; as a year of a real-time feed would leave it uncompacted {sizes('chunks_one_row_per_write')}, and after move 3 "
           f"{sizes('chunks_after_last_restore')}" if realtime else "")
        + ". A takeover that restores a log of more rows than files compacts it (the rows it read deleted and "
        "the files written back as one row each, in one transaction, under the new lease's fence) in the "
        "background once the deployment has started (since a16e796; before, the restore compacted it before "
        "the start, and move 1's and move 3's takeover times included it): the takeover times above end at "
        "the start and do not include it; it runs while the deployment recovers. "
        + ("The rows after move 1" + (" and after move 3" if realtime else "")
           + ", read once the move is measured (the deployment `live`, its recovery reported, then a lease's "
           "life and a heartbeat more), show it "
           + ("done: a row per non-empty file." if compacted_all else "NOT done in every round (more rows than files).")) + " "
        "Move 1 of the first round also compiles the module, on a worker that never ran it.\n\n"
        "**Against the issue's target.** Recovery ≤ 2 s after kill -9 with a year of minute bars stored is "
        "the target of a process's restart over its own folder: see \"Live paper trading\" above (the "
        "deployment's `recovery_ms` and the wall time to `live`). A move between workers after kill -9 "
        "cannot meet it by design: nobody may run the deployment until its lease has expired, so the time is "
        "the lease's life (`heartbeat_ttl_ms`, less the time since its last renewal) plus up to one "
        "`heartbeat_interval_ms` until another worker claims it, plus the restore, plus the recovery. Measured "
        f"here with a {ttl / 1000:g} s lease and {beat} ms heartbeats: the first claim's takeover (restore and start) "
        f"{restore[0]:,.0f} / {restore[1]:,.0f}" + (f" / {restore[2]:,.0f}" if len(restore) > 2 else "") + " ms (medians, moves "
        f"{'1 / 2 / 3' if len(restore) > 2 else '1 / 2'}) and recovery {recovery:,.0f} ms. With the defaults "
        "(heartbeats every 10 s, a 30 s lease) the same parts give 20-30 s of lease left at the kill plus "
        "up to 10 s to the claim, plus the same restore and recovery: about 20-40 s. A worker stopped with "
        "SIGTERM lets its leases go at once, so that move skips the lease's life (not measured here).\n"
    )
    return ("A deployment moving to another worker after kill -9 (distributed mode)",
            "scripts/bench-takeover.py target/release/palisade", text)


SECTIONS = {f.__name__: f for f in (process, ratios, costs, criterion, service, load, uploads, soak, python,
                                    distributed, live, takeover)}


def stamp() -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{when}, commit {commit}{' (with uncommitted changes)' if dirty else ''}, {os.cpu_count()} × {cpu}"


def write_block(name: str, markdown: str) -> None:
    text = BENCHMARKS.read_text()
    begin, end = f"<!-- bench.sh {name} -->", f"<!-- /bench.sh {name} -->"
    block = f"{begin}\n{markdown.rstrip()}\n{end}"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS.write_text(text)


def main(argv: list[str]) -> int:
    write = "--write" in argv
    names = [a for a in argv if a != "--write"] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        print(f"bench: unknown section {', '.join(unknown)} (sections: {', '.join(SECTIONS)})", file=sys.stderr)
        return 2
    for name in names:
        print(f"==> {name}", file=sys.stderr)
        title, command, body = SECTIONS[name]()
        markdown = f"## {title}\n\n`{command}` · {stamp()}\n\n{body}"
        print(markdown)
        if write:
            write_block(name, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

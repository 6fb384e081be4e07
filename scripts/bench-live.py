#!/usr/bin/env python3
"""Issue 16's process-level live figures, as users run the CLI: `palisade
feed replay --speed 0` of generated one-minute bars and `palisade live run`
(release binary) on its feed. Prints one JSON object on stdout (read by
scripts/bench.py's `live` section); progress on stderr.

recovery: a year of one-minute bars (525,600; gen_walk.py, seed 16) in
  target/bench-data/. `palisade live run` is killed with SIGKILL half-way
  through the stream, restarted over the same --dir and feed (it recovers
  by replay, then the feed resumes after the last stored bar) and left to
  store the rest; then killed with SIGKILL again and restarted RESTARTS
  times over the full year. Each restart: the deployment's own
  `recovery_ms` (its first status line that has one) and the wall time
  from starting the process to its first status line saying `live` (and to
  its `deployment live` log line). Checked: the status's bars, rejected and
  gap counts, and the bar log read back (every record's timestamp exactly
  60 s after the previous one, the first and last the file's).
clean: 30 days (43,200 bars; seed 17) replayed at --speed 0 into a
  deployment with the simulated venue filling at the paper price, the
  default drift and gate policies and signal checks every 1,440 bars: the
  gate's transitions (the audit log) must be none.

Usage: bench-live.py PALISADE_BINARY [recovery] [clean]
Environment: RESTARTS (default 5), LIVE_DURABILITY (recovery's
--durability values, comma-separated, default os,disk), CARGO_TARGET_DIR.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
DATA = TARGET / "bench-data"
MODULE = ROOT / "guest-examples/out/sma_cross.wasm"
YEAR, MONTH = 525_600, 43_200
RECORD = 60  # a Bar (56 bytes) and its CRC-32


def say(*a) -> None:
    print("bench-live:", *a, file=sys.stderr, flush=True)


def walk(bars: int, seed: int) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"walk-{bars}-s{seed}.csv"
    if not path.exists() or path.stat().st_size == 0:
        say(f"generating {path.name}")
        subprocess.run([sys.executable, str(ROOT / "scripts/gen_walk.py"), str(bars), str(seed), str(path)],
                       check=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replay:
    """`palisade feed replay SYM=csv --speed 0` on a free port."""

    def __init__(self, binary: str, csv: Path):
        port = free_port()
        self.url = f"ws://127.0.0.1:{port}/"
        self.proc = subprocess.Popen([binary, "feed", "replay", f"SYM={csv}", "--speed", "0",
                                      "--listen", f"127.0.0.1:{port}"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "replaying" not in line:
            sys.exit(f"bench-live: the replay did not start: {line}")
        threading.Thread(target=lambda: self.proc.stderr.read(), daemon=True).start()

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Live:
    """One `palisade live run --json` process; its status lines and log
    lines, each with when it was read (seconds after the process started)."""

    def __init__(self, binary: str, feed: str, folder: Path, extra: list[str]):
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [binary, "live", "run", str(MODULE), "--feed", feed, "--symbol", "SYM", "--interval", "60",
             "--dir", str(folder), "--json", "--status-every", "0.1", "-p", "fast=10", "-p", "slow=30", *extra],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, dict]] = []
        self.logs: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()

    def _read(self, stream, is_status: bool) -> None:
        for line in stream:
            at = time.perf_counter() - self.t0
            with self.cond:
                if is_status:
                    try:
                        self.lines.append((at, json.loads(line)))
                    except json.JSONDecodeError:
                        pass
                else:
                    self.logs.append((at, line.rstrip()))
                self.cond.notify_all()

    def wait(self, pred, timeout: float) -> tuple[float, dict]:
        """The first status line satisfying `pred`, waiting up to `timeout`."""
        deadline = time.perf_counter() + timeout
        seen = 0
        with self.cond:
            while True:
                for at, s in self.lines[seen:]:
                    if pred(s):
                        return at, s
                seen = len(self.lines)
                left = deadline - time.perf_counter()
                if left <= 0 or self.proc.poll() is not None:
                    last = self.lines[-1][1] if self.lines else None
                    tail = "\n".join(l for _, l in self.logs[-10:])
                    sys.exit(f"bench-live: timed out or exited ({self.proc.poll()}); last status {last}\n{tail}")
                self.cond.wait(min(left, 0.5))

    def log_at(self, needle: str) -> float | None:
        with self.cond:
            return next((at for at, l in self.logs if needle in l), None)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> tuple[dict, float | None]:
        """SIGINT; the last status line and how long the process took to
        exit (None: it had not after 60 s, and was killed)."""
        t = time.perf_counter()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
            took = time.perf_counter() - t
        except subprocess.TimeoutExpired:
            say("`palisade live run` did not stop within 60 s of SIGINT; killing it")
            self.kill9()
            took = None
        time.sleep(0.1)
        with self.cond:
            return self.lines[-1][1], took


def read_barlog(path: Path) -> dict:
    """The bar log's records: count, first/last timestamps, whether every
    step is exactly 60 s (no gap, no duplicate, in order)."""
    raw = path.read_bytes()
    body = raw[raw.index(b"\n") + 1:]
    n, torn = divmod(len(body), RECORD)
    ts = [struct.unpack_from("<q", body, i * RECORD)[0] for i in range(n)]
    steps = {b - a for a, b in zip(ts, ts[1:])}
    return {"records": n, "torn_bytes": torn, "first_ts": ts[0] if ts else None,
            "last_ts": ts[-1] if ts else None, "steps": sorted(steps), "unique": len(set(ts))}


def csv_span(csv: Path) -> tuple[int, int]:
    with open(csv, "rb") as f:
        f.readline()
        first = int(f.readline().split(b",")[0])
        f.seek(-200, os.SEEK_END)
        last = int(f.read().splitlines()[-1].split(b",")[0])
    return first, last


def restart(binary: str, feed: str, folder: Path, extra: list[str], bars: int) -> tuple[Live, dict]:
    """Starts `live run` over an existing folder; its recovery figures."""
    live = Live(binary, feed, folder, extra)
    at_live, s_live = live.wait(lambda s: s["state"] == "live", 120)
    _, s_rec = live.wait(lambda s: s.get("recovery_ms") is not None, 120)
    return live, {
        "recovered_bars": s_rec["recovered_bars"],
        "recovery_ms": round(s_rec["recovery_ms"], 1),
        "wall_to_live_status_ms": round(at_live * 1e3, 1),
        "wall_to_live_log_ms": round((live.log_at("deployment live") or float("nan")) * 1e3, 1),
        "bars_at_live": s_live["bars"],
    }


def recovery(binary: str) -> dict:
    return {d: recovery_with(binary, d) for d in os.environ.get("LIVE_DURABILITY", "os,disk").split(",")}


def recovery_with(binary: str, durability: str) -> dict:
    csv = walk(YEAR, 16)
    first_ts, last_ts = csv_span(csv)
    restarts = int(os.environ.get("RESTARTS", "5"))
    folder = DATA / f"live-recovery-{durability}"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    venue = DATA / "venue-clean.toml"
    venue.write_text("")
    extra = ["--durability", durability, "--venue", str(venue), "--verify-every", "0"]
    replay = Replay(binary, csv)
    try:
        # Store the first half, then kill -9 while the replay streams.
        say(f"storing {YEAR:,} bars through `palisade live run --durability {durability}`")
        t = time.perf_counter()
        live = Live(binary, replay.url, folder, extra)
        live.wait(lambda s: s["bars"] >= YEAR // 2, 600)
        live.kill9()
        killed_at = read_barlog(folder / "bars.log")["records"]
        say(f"killed -9 at {killed_at:,} bars stored")
        live, mid = restart(binary, replay.url, folder, extra, killed_at)
        say(f"restarted mid-stream: {mid}")
        at, done = live.wait(lambda s: s["bars"] >= YEAR, 900)
        store_secs = time.perf_counter() - t
        time.sleep(1.0)
        final = live.lines[-1][1]
        live.kill9()
        log = read_barlog(folder / "bars.log")
        audit = folder / "audit.jsonl"
        trips = [json.loads(l) for l in audit.read_text().splitlines()] if audit.exists() else []
        say(f"all stored in {store_secs:.0f} s; bar log {log}")
        runs = []
        for i in range(restarts):
            live, r = restart(binary, replay.url, folder, extra, YEAR)
            time.sleep(0.5)
            after = live.lines[-1][1]
            r["bars_after"] = after["bars"]
            r["rejected_after"] = after["rejected_bars"]
            r["gaps_after"] = after["gap_bars"]
            live.kill9()
            say(f"restart {i + 1} over the full year: {r}")
            runs.append(r)
        log_after = read_barlog(folder / "bars.log")
    finally:
        replay.close()
    expected = {"records": YEAR, "torn_bytes": 0, "first_ts": first_ts, "last_ts": last_ts,
                "steps": [60], "unique": YEAR}
    return {
        "bars": YEAR,
        "durability": durability,
        "killed_mid_stream_at": killed_at,
        "mid_stream_restart": mid,
        "mid_stream_final": {k: final[k] for k in ("bars", "rejected_bars", "gap_bars", "state", "gate",
                                                    "intents_published", "intents_blocked")},
        "gate_transitions": [{"to": e["to"]["state"], "reason": e["reason"]} for e in trips],
        "store_seconds": round(store_secs, 1),
        "barlog": log,
        "barlog_ok": log == expected and log_after == expected,
        "restarts": runs,
        "barlog_size_mib": round((folder / "bars.log").stat().st_size / 2**20, 1),
    }


def clean(binary: str) -> dict:
    csv = walk(MONTH, 17)
    folder = DATA / "live-clean"
    if folder.exists():
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    venue = DATA / "venue-clean.toml"
    venue.write_text("")
    replay = Replay(binary, csv)
    try:
        t = time.perf_counter()
        live = Live(binary, replay.url, folder, ["--venue", str(venue)])
        at, _ = live.wait(lambda s: s["bars"] >= MONTH, 900)
        secs = time.perf_counter() - t
        time.sleep(2.0)  # the last fills and signal check
        settled = live.lines[-1][1]
        final, stop_secs = live.stop()
        if stop_secs is None:
            final = settled
    finally:
        replay.close()
    audit = folder / "audit.jsonl"
    transitions = len(audit.read_text().splitlines()) if audit.exists() else 0
    max_score = max(s["drift"]["score"] for _, s in live.lines)
    return {
        "bars": final["bars"],
        "seconds_to_store_all": round(secs, 1),
        "durability": "disk",
        "gate": final["gate"],
        "gate_transitions": transitions,
        "max_drift_score": max_score,
        "intents_published": final["intents_published"],
        "intents_blocked": final["intents_blocked"],
        "live_fills": final["live_fills"],
        "signal_checked_orders": final["signal_checked_orders"],
        "signal_mismatches": final["signal_mismatches"],
        "rejected_bars": final["rejected_bars"],
        "gap_bars": final["gap_bars"],
        "sigint_to_exit_secs": None if stop_secs is None else round(stop_secs, 2),
    }


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    binary, parts = argv[0], argv[1:] or ["recovery", "clean"]
    out = {}
    for part in parts:
        out[part] = {"recovery": recovery, "clean": clean}[part](binary)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

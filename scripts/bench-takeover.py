#!/usr/bin/env python3
"""How long a live deployment with a year of one-minute bars stored takes
to be live again on another worker after `kill -9` of the worker running
it, in the distributed mode, measured as users run it: a release
`palisade serve --store postgres://… --queue redis://…` (an API node) and
release `palisade worker`s over a real Postgres (initdb in a temporary
directory) and a real Redis, on this machine; `palisade feed replay
--speed 0` of 525,600 generated one-minute bars (gen_walk.py, seed 16, the
file scripts/bench-live.py uses). No tokens file: every request is the
local operator, every node on loopback. Prints one JSON object on stdout
(read by scripts/bench.py's `takeover` section); progress on stderr.

Each round (ROUNDS of them):
1. `POST /v1/deployments` (sma_cross fast 10 slow 30, interval_secs 60,
   durability "os", verify_every 0) through the API node; wait until its
   status (forwarded to the worker holding the lease) says bars = 525,600
   and Postgres holds every byte of its files (`deployment_chunks` against
   the files in the worker's data dir). The size of what was shipped is
   read then: the write log as the worker shipped it, a row per write.
2. Move 1: kill -9 of the worker running it (the status's `worker`, named
   through GET /v1/workers); wall time from the kill until the API node
   shows the deployment `live` on the other worker. Its parts: the lease's
   remaining life at the kill (`lease_until` read from Postgres right after
   it), the wait for the other worker's next heartbeat to claim it (the
   "took over" log line's time minus its `took_ms`, minus the expiry),
   `took_ms` (`restored_ms` before commit 31f822c: restore the files from
   Postgres, fetch and compile the module if this worker never ran it,
   start the deployment), a claim lost and taken again if any, the status's
   `recovery_ms` (replay of every stored bar), and what is left (the status
   polled every 20 ms through the API node). After it: bars, rejected_bars,
   gap_bars, recovered_bars. The restore compacts the write log to one row
   per file: its size is read again.
3. Move 2: the killed worker restarted (same name and data dir); then kill
   -9 of the new owner: the same figures, restoring from the compacted log.
4. Move 3 (REALTIME_LOG=1, the default): the log a deployment fed in real
   time leaves, a row per write (a bar a minute ships alone: 525,600 rows
   of 60 bytes for the bar log, a row per journal line), made in Postgres
   from the same bytes (the --speed 0 feed ships a batch of bars per row);
   the killed worker restarted, then the owner killed: the same figures.
5. The deployment stopped (DELETE), so the next round's starts alone.

Usage: bench-takeover.py PALISADE_BINARY
Environment: ROUNDS (default 3), BARS (default 525600; a shorter walk
for a quick try), HEARTBEAT_INTERVAL_MS (default 500), HEARTBEAT_TTL_MS
(default 2000), REALTIME_LOG (default 1; 0: no move 3), LOGS (a directory
to keep the nodes' logs in), CARGO_TARGET_DIR.
"""

from __future__ import annotations

import datetime
import glob
import importlib.util
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The servers and the replay, started as the other benches start them.
bench_distributed = _load("bench_distributed", "bench-distributed.py")
bench_live = _load("bench_live", "bench-live.py")

MODULE = ROOT / "guest-examples/out/sma_cross.wasm"
BARS = int(os.environ.get("BARS", "525600"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
BEAT_MS = int(os.environ.get("HEARTBEAT_INTERVAL_MS", "500"))
TTL_MS = int(os.environ.get("HEARTBEAT_TTL_MS", "2000"))
REALTIME = os.environ.get("REALTIME_LOG", "1") != "0"
FILES = ["bars.log", "audit.jsonl", "intents.jsonl", "fills.jsonl", "orders.jsonl"]  # fleet.rs's FILES
PSQL = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]


def say(*a) -> None:
    print("bench-takeover:", *a, file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# ---- HTTP (the API node; no tokens: the local operator) ----

def http(method: str, url: str, body: bytes | None = None, ctype: str = "application/json",
         timeout: float = 30) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# ---- processes ----

TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")


def log_time(line: str) -> float | None:
    """The Unix time of a tracing log line (`2026-11-29T18:00:00.123456Z  INFO …`)."""
    m = TS.match(line)
    if not m:
        return None
    stamp = m.group(1)
    if "." in stamp:
        head, frac = stamp.split(".")
        stamp = f"{head}.{frac[:6]}"
        fmt = "%Y-%m-%dT%H:%M:%S.%f"
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
    return datetime.datetime.strptime(stamp, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


class Node:
    """One `palisade serve` or `palisade worker` process: its URL (first
    line of stdout), its id (a worker's), and its log (stderr) kept."""

    def __init__(self, binary: str, role: str, args: list[str], name: str):
        self.name = name
        self.proc = subprocess.Popen([binary, role, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.logs: list[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.proc.stdout.readline().strip()
        if " on http" not in line:
            self.kill9()
            raise Failed(f"{role} {name} did not start: {line!r}\n" + "\n".join(self.logs[-20:]))
        self.url = "http" + line.split("http", 1)[1]
        # `palisade worker <id> on http://…`
        self.id = line.split()[2] if role == "worker" else None
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.cond:
                self.logs.append(line.rstrip())
                self.cond.notify_all()

    def wait_log(self, pred, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.logs[seen:]:
                    if pred(line):
                        return line
                seen = len(self.logs)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failed(f"{self.name}: no such log line within {timeout} s; last lines:\n"
                                 + "\n".join(self.logs[-20:]))
                self.cond.wait(min(left, 0.2))

    def metric(self, series: str) -> float | None:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


class Bench:
    def __init__(self, binary: str, base: Path, servers):
        self.binary, self.base, self.servers = binary, base, servers
        self.nodes: list[Node] = []
        self.shared = servers.urls()

    def sql(self, query: str) -> list[list[str]]:
        out = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(self.servers.pg_port), "-U", "palisade",
                              "-d", "postgres", "-At", "-F", "\t", "-c", query],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise Failed(f"psql {query!r}: {out.stderr}")
        return [l.split("\t") for l in out.stdout.splitlines() if l]

    def api(self) -> Node:
        node = Node(self.binary, "serve", ["--listen", "127.0.0.1:0", "--data-dir", str(self.base / "api"),
                                           *self.shared], "api")
        self.nodes.append(node)
        self.url = node.url
        return node

    def worker(self, name: str) -> Node:
        node = Node(self.binary, "worker", ["--listen", "127.0.0.1:0", "--data-dir", str(self.base / name),
                                            "--worker-name", name, "--heartbeat-interval-ms", str(BEAT_MS),
                                            "--heartbeat-ttl-ms", str(TTL_MS), *self.shared], name)
        self.nodes.append(node)
        # Listed by the API node (it reads heartbeats every 2 s) with the
        # URL deployments' requests are forwarded to.
        deadline = time.monotonic() + 30
        while not any(w["id"] == node.id and w.get("url") and w["status"] in ("idle", "busy")
                      for w in self.workers()):
            if time.monotonic() > deadline:
                raise Failed(f"worker {name} ({node.id}) not listed by the API node: {self.workers()}")
            time.sleep(0.05)
        return node

    def workers(self) -> list[dict]:
        status, body = http("GET", f"{self.url}/v1/workers")
        if status != 200:
            raise Failed(f"GET /v1/workers: {status} {body}")
        return body["workers"]

    def status(self, id_: str) -> tuple[int, dict | str]:
        return http("GET", f"{self.url}/v1/deployments/{id_}", timeout=10)

    def wait_status(self, id_: str, what: str, pred, timeout: float, every: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            code, body = self.status(id_)
            if code == 200:
                last = body
                if body.get("state") == "failed":
                    raise Failed(f"{id_} failed: {body}")
                if pred(body):
                    return body
            elif code != 503:
                raise Failed(f"GET /v1/deployments/{id_}: {code} {body}")
            time.sleep(every)
        raise Failed(f"{id_}: {what} did not happen within {timeout} s; last status {last}")

    def chunks(self, id_: str) -> dict:
        """What Postgres holds of deployment `id_`'s files: the bytes (as
        written, and as stored: TOAST may compress), and the rows."""
        bytes_, stored, rows = self.sql(
            f"SELECT coalesce(sum(length(bytes)), 0), coalesce(sum(pg_column_size(bytes)), 0), count(*) "
            f"FROM deployment_chunks WHERE deployment = '{id_}'")[0]
        return {"bytes": int(bytes_), "stored_bytes": int(stored), "rows": int(rows)}

    def shipped_lengths(self, id_: str) -> dict[str, int]:
        """Each file's length as Postgres holds it: the last write (or cut)
        of each file decides it (a write cuts what followed)."""
        rows = self.sql(f"SELECT DISTINCT ON (file) file, at + coalesce(length(bytes), 0) FROM deployment_chunks "
                        f"WHERE deployment = '{id_}' ORDER BY file, seq DESC")
        return {f: int(n) for f, n in rows}

    def wait_shipped(self, id_: str, owner: Node, timeout: float) -> float:
        folder = self.base / owner.name / "deployments" / id_
        t = time.perf_counter()
        deadline = time.monotonic() + timeout
        while True:
            local = {f: (folder / f).stat().st_size for f in FILES if (folder / f).exists()}
            local = {f: n for f, n in local.items() if n > 0}
            shipped = {f: n for f, n in self.shipped_lengths(id_).items() if n > 0}
            if local and local == shipped:
                return time.perf_counter() - t
            if time.monotonic() > deadline:
                raise Failed(f"{id_}: Postgres holds {shipped}, the worker's files are {local}")
            time.sleep(0.2)

    def intents(self, id_: str) -> list[dict]:
        """The deployment's published intents, from its journal (pages of
        1,000 through `after`)."""
        out: list[dict] = []
        while True:
            after = out[-1]["order_id"] if out else 0
            code, body = http("GET", f"{self.url}/v1/deployments/{id_}/intents?after={after}")
            if code != 200:
                raise Failed(f"GET /v1/deployments/{id_}/intents: {code} {body}")
            if not body["intents"]:
                return out
            out.extend(body["intents"])

    def owner(self, status: dict) -> Node:
        wid = status.get("worker")
        names = {w["id"]: w["name"] for w in self.workers()}
        node = next((n for n in self.nodes if n.id == wid and n.alive()), None)
        if node is None or names.get(wid) != node.name:
            raise Failed(f"the status names worker {wid!r}; workers listed: {names}")
        return node

    def move(self, id_: str, owner: Node, bars: int) -> dict:
        """kill -9 of `owner`; the figures of the deployment's move."""
        before = self.wait_status(id_, "a status", lambda s: True, 30)
        journal = self.intents(id_)
        marks = {id(n): len(n.logs) for n in self.nodes}
        killed_wall, killed = time.time(), time.perf_counter()
        owner.kill9()
        lease_until_ms = int(self.sql(f"SELECT lease_until FROM deployments WHERE id = '{id_}'")[0][0])
        seen_503 = seen_other = None
        odd: list[dict] = []  # answers other than 200 and 503 meanwhile
        deadline = killed + 10 * TTL_MS / 1000 + 300
        while True:
            code, body = self.status(id_)
            now = time.perf_counter()
            if code == 503 and seen_503 is None:
                seen_503 = now - killed
            if code == 200 and body.get("worker") not in (None, owner.id):
                if seen_other is None:
                    seen_other = now - killed
                if body.get("state") == "live":
                    break
                if body.get("state") == "failed":
                    raise Failed(f"{id_} failed after the move: {body}")
            elif code not in (200, 503):
                odd.append({"ms_after_kill": round((now - killed) * 1e3, 1), "status": code, "body": body})
            if now > deadline:
                raise Failed(f"{id_}: not live on another worker {now - killed:.0f} s after the kill: {code} {body}")
            time.sleep(0.02)
        live_wall = time.time()
        wall_ms = (now - killed) * 1e3
        new = self.owner(body)
        new.wait_log(lambda l: "took over a deployment" in l and f"deployment={id_} " in l + " ", 30)
        # The recovery's figures, once it is done (live means the replay is);
        # then a lease's life more, to see whether the lease holds.
        after = self.wait_status(id_, "recovery_ms reported",
                                 lambda s: s.get("recovery_ms") is not None and s["bars"] >= bars, 60)
        time.sleep(max(0.5, (TTL_MS + BEAT_MS) / 1e3))
        settled = self.wait_status(id_, "a status", lambda s: True, 30)
        journal_after = self.intents(id_)
        epoch_now = int(self.sql(f"SELECT epoch FROM deployments WHERE id = '{id_}'")[0][0])

        def lines(needle: str) -> list[tuple[float, str, str]]:
            return [(log_time(l) or 0.0, n.name, l) for n in self.nodes for l in n.logs[marks.get(id(n), 0):]
                    if needle in l and f"deployment={id_} " in l + " "]

        takeovers = []
        for at, name, l in sorted(lines("took over a deployment")):
            # `took_ms` (from 31f822c on: the takeover's start to the deployment
            # started), `restored_ms` before it (the same span).
            restored = int(re.search(r"(?:took_ms|restored_ms)=(\d+)", l).group(1))
            takeovers.append({"worker": name, "at": at, "epoch": int(re.search(r"epoch=(\d+)", l).group(1)),
                              "restored_ms": restored, "claimed_at": at - restored / 1e3})
        lost = [{"worker": name, "at_ms_after_kill": round((at - killed_wall) * 1e3, 1)}
                for at, name, _ in sorted(lines("lease lost"))]
        slow = [{"worker": n.name, "statement": re.search(r'summary="([^"]*)"', l).group(1),
                 "elapsed_secs": float(re.search(r"elapsed_secs=([0-9.]+)", l).group(1))}
                for n in self.nodes if n is not owner for l in n.logs[marks.get(id(n), 0):]
                if "slow statement" in l and "elapsed_secs=" in l]
        # The takeover that went live: the last logged before the status said live.
        live_one = [t for t in takeovers if t["at"] <= live_wall] or takeovers
        last, first = live_one[-1], takeovers[0]
        expiry_ms = lease_until_ms - killed_wall * 1e3
        claim_wait_ms = first["claimed_at"] * 1e3 - lease_until_ms
        retake_ms = (last["claimed_at"] - first["claimed_at"]) * 1e3
        recovery_ms = after["recovery_ms"]
        parts = expiry_ms + claim_wait_ms + retake_ms + last["restored_ms"] + recovery_ms
        return {
            "from": owner.name, "to": new.name, "epoch": last["epoch"], "epoch_after": epoch_now,
            "wall_ms": round(wall_ms, 1),
            "lease_left_at_kill_ms": round(expiry_ms, 1),
            "claim_after_expiry_ms": round(claim_wait_ms, 1),
            "lost_and_claimed_again_ms": round(retake_ms, 1),
            "restored_ms": last["restored_ms"],
            "first_claim_restored_ms": first["restored_ms"],
            "recovery_ms": round(recovery_ms, 1),
            "rest_ms": round(wall_ms - parts, 1),
            "takeovers": [{k: (round(v, 3) if k in ("at", "claimed_at") else v) for k, v in t.items()}
                          for t in takeovers],
            "leases_lost": lost,
            "slow_statements": slow,
            "first_503_ms": None if seen_503 is None else round(seen_503 * 1e3, 1),
            "other_answers": odd,
            "other_worker_seen_ms": round(seen_other * 1e3, 1),
            "bars_before": before["bars"],
            "bars_at_live": body["bars"],
            "recovered_bars": after["recovered_bars"],
            "bars": settled["bars"],
            "rejected_bars": settled["rejected_bars"],
            "gap_bars": settled["gap_bars"],
            "state": settled["state"],
            "worker_after": settled.get("worker"),
            "gate": settled["gate"]["state"] if isinstance(settled.get("gate"), dict) else settled.get("gate"),
            "intents": len(journal),
            "intents_same_after": journal_after == journal,
            "signal_mismatches": settled.get("signal_mismatches"),
        }

    def one_row_per_write(self, id_: str, owner: Node) -> dict:
        """Rewrites deployment `id_`'s shipped log as a deployment fed in
        real time leaves it: a row per bar record and per journal line (a
        bar a minute ships alone), from the files its worker holds (equal
        to what Postgres holds: checked first, and again after). In one
        transaction; the deployment's row is left alone (its worker renews
        the lease meanwhile), and its files do not change: nothing is
        shipped meanwhile."""
        self.wait_shipped(id_, owner, 60)
        folder = self.base / owner.name / "deployments" / id_
        rows = []
        for f in FILES:
            path = folder / f
            data = path.read_bytes() if path.exists() else b""
            if not data:
                continue
            if f == "bars.log":
                head = data.index(b"\n") + 1
                pieces = [(0, data[:head])] + [(at, data[at:at + 60]) for at in range(head, len(data), 60)]
            else:
                pieces, at = [], 0
                for line in data.splitlines(keepends=True):
                    pieces.append((at, line))
                    at += len(line)
            rows += [f"{id_}\t{f}\t{at}\t\\\\x{chunk.hex()}\n" for at, chunk in pieces]
        script = (f"BEGIN;\nDELETE FROM deployment_chunks WHERE deployment = '{id_}';\n"
                  "COPY deployment_chunks (deployment, file, at, bytes) FROM STDIN;\n"
                  + "".join(rows) + "\\.\nCOMMIT;\n")
        out = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(self.servers.pg_port), "-U", "palisade",
                              "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
                             input=script, capture_output=True, text=True)
        if out.returncode != 0:
            raise Failed(f"rewriting the shipped log: {out.stderr[-2000:]}")
        self.wait_shipped(id_, owner, 60)
        return self.chunks(id_)


def round_(b: Bench, i: int, strategy: str, feed: str) -> dict:
    id_ = f"year-{i}"
    spec = {"id": id_, "strategy": strategy, "symbols": ["SYM"], "feed": {"url": feed}, "interval_secs": 60,
            "params": {"fast": 10, "slow": 30}, "durability": "os", "verify_every": 0}
    t = time.perf_counter()
    code, body = http("POST", f"{b.url}/v1/deployments", json.dumps(spec).encode())
    if code != 201:
        raise Failed(f"POST /v1/deployments: {code} {body}")
    say(f"round {i}: {id_} started; storing {BARS:,} bars")
    full = b.wait_status(id_, f"{BARS:,} bars handled", lambda s: s["bars"] >= BARS, 1800, every=0.5)
    store_s = time.perf_counter() - t
    owner = b.owner(full)
    ship_wait_s = b.wait_shipped(id_, owner, 120)
    shipped = b.chunks(id_)
    say(f"round {i}: {full['bars']:,} bars in {store_s:.1f} s on {owner.name}; shipped {shipped} "
        f"(caught up {ship_wait_s:.1f} s after)")

    first = b.move(id_, owner, BARS)
    say(f"round {i}: move 1 {brief(first)}")
    compacted = b.chunks(id_)
    # The killed worker restarted, as an operator would; then its successor killed.
    b.worker(owner.name)
    current = b.owner(b.wait_status(id_, "a status", lambda s: True, 30))
    second = b.move(id_, current, BARS)
    say(f"round {i}: move 2 {brief(second)}")
    after_second = b.chunks(id_)
    moves = [first, second]
    b.worker(current.name)
    newest = b.owner(b.wait_status(id_, "a status", lambda s: True, 30))
    realtime = None
    if REALTIME:
        t = time.perf_counter()
        realtime = b.one_row_per_write(id_, newest)
        say(f"round {i}: the shipped log rewritten as a real-time feed leaves it: {realtime} "
            f"({time.perf_counter() - t:.1f} s)")
        third = b.move(id_, newest, BARS)
        say(f"round {i}: move 3 {brief(third)}")
        moves.append(third)
        b.worker(newest.name)
        newest = b.owner(b.wait_status(id_, "a status", lambda s: True, 30))
    after_last = b.chunks(id_)
    metrics = {k: newest.metric(f"palisade_deployment_{k}_total") for k in ("takeovers", "leases_lost", "ship_failures")}
    code, body = http("DELETE", f"{b.url}/v1/deployments/{id_}")
    if code != 200:
        raise Failed(f"DELETE /v1/deployments/{id_}: {code} {body}")
    return {"id": id_, "store_seconds": round(store_s, 1), "ship_caught_up_seconds": round(ship_wait_s, 1),
            "chunks_shipped": shipped, "chunks_after_first_restore": compacted,
            "chunks_after_second_restore": after_second, "chunks_one_row_per_write": realtime,
            "chunks_after_last_restore": after_last, "moves": moves, "last_owner_metrics": metrics}


def brief(m: dict) -> dict:
    keys = ("from", "to", "epoch", "wall_ms", "lease_left_at_kill_ms", "claim_after_expiry_ms",
            "lost_and_claimed_again_ms", "restored_ms", "first_claim_restored_ms", "recovery_ms", "rest_ms",
            "bars", "rejected_bars", "gap_bars", "intents_same_after")
    return {k: m[k] for k in keys} | {"leases_lost": len(m["leases_lost"]),
                                      "slow": [x["elapsed_secs"] for x in m["slow_statements"]]}


def spread(xs: list[float]) -> dict:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)}


def main(argv: list[str]) -> int:
    if not argv:
        print(next(l for l in __doc__.splitlines() if l.startswith("Usage:")), file=sys.stderr)
        return 2
    binary = argv[0]
    if not MODULE.exists():
        say("building the guests (scripts/build-guests.sh)")
        subprocess.run([str(ROOT / "scripts/build-guests.sh")], check=True, stdout=subprocess.DEVNULL)
    # SIGTERM or SIGINT: clean up as on any failure.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    csv = bench_live.walk(BARS, 16)
    first_ts, last_ts = bench_live.csv_span(csv)
    out: dict = {"bars": BARS, "heartbeat_interval_ms": BEAT_MS, "heartbeat_ttl_ms": TTL_MS,
                 "csv": str(csv.relative_to(ROOT)) if csv.is_relative_to(ROOT) else str(csv),
                 "csv_span": [first_ts, last_ts]}
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as d:
        base = Path(d)
        os.chmod(base, 0o755)  # Postgres runs as its own user
        servers = replay = b = None
        try:
            servers = bench_distributed.Servers(base)
            b = Bench(binary, base, servers)
            b.api()
            b.worker("w1")
            b.worker("w2")
            replay = bench_live.Replay(binary, csv)
            code, body = http("POST", f"{b.url}/v1/strategies", MODULE.read_bytes(), "application/wasm")
            if code not in (200, 201):
                raise Failed(f"upload: {code} {body}")
            out["rounds"] = [round_(b, i + 1, body["id"], replay.url) for i in range(ROUNDS)]
            out["pg_version"] = b.sql("SHOW server_version")[0][0]
        except Failed as e:
            if b is not None:
                for n in b.nodes:
                    say(f"--- last log lines of {n.name} ({'alive' if n.alive() else 'gone'}):")
                    for line in n.logs[-15:]:
                        print("   ", line, file=sys.stderr)
            say(f"FAILED: {e}")
            return 1
        finally:
            if b is not None:
                for n in b.nodes:
                    n.kill9() if n.name != "api" else n.stop()
                if os.environ.get("LOGS"):
                    logs = Path(os.environ["LOGS"])
                    logs.mkdir(parents=True, exist_ok=True)
                    for k, n in enumerate(b.nodes):
                        (logs / f"{k:02}-{n.name}.log").write_text("\n".join(n.logs) + "\n")
            if replay is not None:
                replay.close()
            if servers is not None:
                servers.stop()
    labels = ["first_move", "second_move", "one_row_per_write_move"][:len(out["rounds"][0]["moves"])]
    moves = [[r["moves"][k] for r in out["rounds"]] for k in range(len(labels))]
    out["summary"] = {
        label: {key: spread([m[key] for m in ms]) for key in
                ("wall_ms", "lease_left_at_kill_ms", "claim_after_expiry_ms", "lost_and_claimed_again_ms",
                 "restored_ms", "first_claim_restored_ms", "recovery_ms", "rest_ms")}
        for label, ms in zip(labels, moves)
    }
    out["leases_lost_after_takeover"] = sum(len(m["leases_lost"]) for ms in moves for m in ms)
    out["other_answers_while_moving"] = [a | {"move": k + 1} for k, ms in enumerate(moves) for m in ms
                                         for a in m["other_answers"]]
    out["all_bars_kept"] = all(m["bars"] == BARS and m["recovered_bars"] == BARS and m["rejected_bars"] == 0
                               and m["gap_bars"] == 0 and m["state"] == "live" and m["intents_same_after"]
                               for ms in moves for m in ms)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

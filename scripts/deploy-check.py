#!/usr/bin/env python3
"""Checks of the operator kit in deploy/, run by scripts/check-deploy.sh.

  deploy-check.py static
      Every alert of deploy/prometheus/rules.yml has the shape the live check
      relies on (`<selector> <op> <number>`) and is tested by
      deploy/prometheus/tests/ both firing and not firing; the dashboard JSON
      is a well-formed Grafana dashboard whose every panel has a query and
      whose panels do not overlap.

  deploy-check.py live --palisade URL --prometheus URL --feed WS_URL
      Drives a running `palisade serve` (open, on loopback) and a Prometheus
      scraping it with rules.yml loaded: uploads strategies and data, runs
      jobs (one succeeds, one runs out of fuel, one is refused because the
      queue is full), then queries through Prometheus's HTTP API every
      recording rule's expression, every alert's expression and its
      left-hand side, and every dashboard panel's query. Each must parse;
      each recording rule, left-hand side and panel query must return data.
      Then every rule must load with health "ok", and the two alerts whose
      condition was induced (PalisadeStrategyHittingLimits for the strategy
      that ran out of fuel, PalisadeQueueOverflow) must fire, and none of the
      distributed mode's alerts (group palisade-distributed) nor of live
      trading's (group palisade-live: no deployment runs yet) may be pending.
      Then a live deployment (see live_deployment below): sma_cross on the
      replay feed at WS_URL (`palisade feed replay SPY=<bars> --speed 0`),
      whose simulated venue drifts past the critical score; once its gate
      has suspended, every series of LIVE_ONLY must return data for it (its
      values agreeing with the deployment's status), the drift alerts must
      be pending or firing and no other alert of live trading (the
      suspension's PalisadeGateStuckSuspended may be pending: its `for` is
      30 m); then an operator's emergency stop of all must set off
      PalisadeEmergencyStopActive, and every query above must return data,
      none excused for want of a deployment.

  deploy-check.py recent-bars IN OUT
      Writes the daily bars of the CSV file IN to OUT, every timestamp moved
      by the same whole number of days so that the last bar closed at the
      last midnight (UTC): replayed now, they are as recent as a live feed's
      (the sample's 2015-2021 bars would arrive years after their close, and
      PalisadeFeedLagging would rightly go off).

  deploy-check.py live-distributed --api URL --prometheus URL --worker ID=PID...
      Drives the distributed mode: an API node (open, on loopback) and
      workers (started with a short heartbeat TTL), and a Prometheus
      scraping them as jobs palisade and palisade-worker. Runs a job, kills
      the worker of a running job with SIGKILL and waits for another worker
      to reclaim it; then every query above must parse and return data, the
      distributed mode's included; every rule must load with health "ok";
      PalisadeWorkerDown and PalisadeWorkerHeartbeatMissing (for the dead
      worker) must be pending or firing (their `for` is promtool's to test),
      and no other alert of palisade-distributed, nor any of palisade-live.

The distributed mode's series (DISTRIBUTED_ONLY below) do not exist on an
embedded server: `live` asks the queries that name them to parse, not to
return data; `live-distributed` asks them for data. The series of one live
deployment (LIVE_ONLY below) exist only while it runs: `live` asks the
queries that name them to parse only until it starts one, then for data;
`live-distributed` runs none and asks them to parse only.

Why the left-hand side: an alert expression returns data only while its
condition holds, so "returns data" cannot be asked of it on a healthy
server. Every alert compares one selector (a recorded series or a raw
metric) with a constant; all arithmetic lives in recording rules. The
selector returning data means the metric exists, carries the labels the
rule matches on, and the comparison has something to compare, so the alert
can fire; the whole expression is still evaluated, so it must parse.

Uses only the standard library and PyYAML (Debian's python3-yaml, which the
script installs with Prometheus if it is missing).
"""

import argparse
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules.yml"
TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy/grafana/palisade-dashboard.json"

# `<selector> <op> <number>`: a metric name with optional matchers.
ALERT_SHAPE = re.compile(
    r"^(?P<lhs>[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^{}]*\})?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<num>[0-9.eE+-]+)$"
)

# Series of the distributed mode only (docs/distributed.md): an embedded
# `palisade serve` never has them, so `live`, which runs one, cannot ask
# them for data. A query naming one of them must parse there, but may return
# nothing; every other query must still return data. `live-distributed`
# asks them all for data. The raw metrics here
# exist only on API nodes; the recorded series leave embedded servers out
# (rules.yml: their palisade_queue_up is 0 for ever). The other distributed
# metrics (palisade_workers, palisade_queue_up, palisade_reclaimed_jobs_total,
# palisade_requeued_lost_jobs_total, palisade_worker_heartbeats_total, the
# heartbeat step) exist at 0 on every server, and are asked for data.
DISTRIBUTED_ONLY = {
    "palisade_worker_heartbeat_age_seconds",
    "palisade:queue_up:distributed",
    "palisade:workers_live:max",
    "palisade:workers_down:max",
    "palisade:worker_heartbeat_age_seconds:max",
    "palisade:api_ready:max",
}

# Series of live trading that exist only while a deployment runs: those of
# one deployment (label `deployment`, created when it starts: its gate,
# drift and feed gauges, and its counters at zero for every outcome,
# source, reason and transition), and what rules.yml records from them.
# Before a deployment runs, the queries naming them must parse but may
# return nothing; `live` then starts one and asks them all for data
# (`live-distributed` starts none). The other metrics of live trading exist
# from the start and are asked for data: palisade_deployments (every
# state), palisade_emergency_stops (every scope), and the histograms
# palisade_gate_response_seconds and palisade_feed_to_strategy_seconds.
LIVE_ONLY = {
    "palisade_drift_score",
    "palisade_paper_live_delta",
    "palisade_gate_state",
    "palisade_gate_transitions_total",
    "palisade_feed_up",
    "palisade_feed_last_bar_received_seconds",
    "palisade_feed_interval_seconds",
    "palisade_feed_lag_seconds",
    "palisade_feed_gaps_total",
    "palisade_feed_rejected_bars_total",
    "palisade_feed_bars_total",
    "palisade_live_intents_total",
    "palisade_live_fills_total",
    "palisade:feed_behind:intervals",
    "palisade:feed_gaps:increase15m",
    "palisade:feed_rejected_bars:increase5m",
}

# What the dashboard's variables stand for when a query is sent directly.
VARIABLES = {"$job": "palisade", "$instance": ".*", "$deployment": ".*", "$__rate_interval": "1m"}
# ... for the distributed mode: the API nodes' job and the workers'.
DISTRIBUTED_VARIABLES = {**VARIABLES, "$job": "palisade|palisade-worker"}


def fail(msg):
    print(f"deploy-check: {msg}", file=sys.stderr)
    sys.exit(1)


def rules():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def alert_lhs(rule):
    m = ALERT_SHAPE.match(rule["expr"].strip())
    if not m:
        fail(f"alert {rule['alert']}: expression {rule['expr']!r} is not `<selector> <op> <number>`; "
             "move its arithmetic into a recording rule")
    return m.group("lhs")


def names_in(expr, names):
    """The series of `names` that `expr` names (a histogram's or a
    summary's by any of its series)."""
    return {name for name in names
            if re.search(rf"(?<![a-zA-Z0-9_:]){re.escape(name)}(_bucket|_count|_sum)?(?![a-zA-Z0-9_:])", expr)}


def distributed_names(expr):
    """The series of DISTRIBUTED_ONLY that `expr` names."""
    return names_in(expr, DISTRIBUTED_ONLY)


def live_names(expr):
    """The series of LIVE_ONLY that `expr` names."""
    return names_in(expr, LIVE_ONLY)


def panels():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        for t in p.get("targets", []):
            out.append((p["title"], t["refId"], t["expr"]))
    return dash, out


def live_row_panels():
    """The titles of the panels of the dashboard's row "Live trading" (the
    panels below its row header, down to the next row)."""
    dash = json.loads(DASHBOARD.read_text())
    row, titles = None, set()
    for p in sorted(dash["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            row = p["title"]
        elif row and row.startswith("Live trading"):
            titles.add(p["title"])
    if not titles:
        fail(f"{DASHBOARD.name}: no panel in a row \"Live trading\"")
    return titles


def expand(expr, variables=VARIABLES):
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    if "$" in expr:
        fail(f"a dashboard query uses a variable the check does not know: {expr}")
    return expr


def static():
    alerts = [r for r in rules() if "alert" in r]
    for r in alerts:
        alert_lhs(r)
    firing, quiet = set(), set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alerts}
    for name in sorted(names):
        if name not in firing:
            fail(f"alert {name} is never tested firing in deploy/prometheus/tests/")
        if name not in quiet:
            fail(f"alert {name} is never tested not firing in deploy/prometheus/tests/")
    unknown = (firing | quiet) - names
    if unknown:
        fail(f"tests name alerts rules.yml does not have: {sorted(unknown)}")
    # DISTRIBUTED_ONLY and LIVE_ONLY must not outlive what they excuse.
    recorded = {r["record"] for r in rules() if "record" in r}
    exprs = [r["expr"] for r in rules()] + [expr for _, _, expr in panels()[1]]
    for label, names in (("DISTRIBUTED_ONLY", DISTRIBUTED_ONLY), ("LIVE_ONLY", LIVE_ONLY)):
        for name in sorted(names):
            if ":" in name and name not in recorded:
                fail(f"{label} names {name}, which rules.yml does not record")
            if not any(name in names_in(e, names) for e in exprs):
                fail(f"{label} names {name}, which no rule or panel reads")
    # A recorded series read from a deployment's series exists only while
    # one runs: LIVE_ONLY must name it too.
    for r in rules():
        if "record" in r and live_names(r["expr"]) and r["record"] not in LIVE_ONLY:
            fail(f"{r['record']} is recorded from {sorted(live_names(r['expr']))}: add it to LIVE_ONLY")

    dash, queries = panels()
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            fail(f"{DASHBOARD.name}: no `{key}`")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        fail(f"{DASHBOARD.name}: panel ids repeat")
    for p in dash["panels"]:
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(f"{DASHBOARD.name}: panel {p['title']!r} is outside the 24 columns")
        if p["type"] != "row" and not p.get("targets"):
            fail(f"{DASHBOARD.name}: panel {p['title']!r} has no query")
    for i, p in enumerate(dash["panels"]):
        for q in dash["panels"][:i]:
            a, b = p["gridPos"], q["gridPos"]
            if (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
                    and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]):
                fail(f"{DASHBOARD.name}: panels {q['title']!r} and {p['title']!r} overlap")
    variables = {v["name"] for v in dash["templating"]["list"]}
    if variables != {"datasource", "job", "instance", "deployment"}:
        fail(f"{DASHBOARD.name}: variables {sorted(variables)}")
    for _, _, expr in queries:
        expand(expr)
    print(f"deploy-check: {len(alerts)} alerts, each of the right shape and tested firing and not; "
          f"dashboard: {len(queries)} queries in {len([p for p in dash['panels'] if p['type'] != 'row'])} panels")


# ---- live ----

def http(method, url, body=None, content_type=None):
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(base, method, path, body=None, content_type="application/json", want=(200, 201)):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    status, data = http(method, base + path, body, content_type)
    if status not in want:
        fail(f"{method} {path}: {status} {data[:500]!r}")
    return status, (json.loads(data) if data and data[:1] in (b"{", b"[") else data)


ENDLESS = (b"fuel_per_event = 1_000_000_000_000\nfuel_per_run = 1_000_000_000_000_000\n"
           b"deadline_per_event_ms = 3_600_000\ndeadline_per_run_ms = 86_400_000\n")


def wait_job(base, job, states):
    for _ in range(600):
        _, v = api(base, "GET", f"/v1/jobs/{job}")
        if v["state"] in states:
            return v
        time.sleep(0.1)
    fail(f"job {job} did not reach {states}")


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, data = http("GET", url)
    v = json.loads(data)
    if v.get("status") != "success":
        fail(f"Prometheus refused {expr!r}: {status} {v.get('errorType')}: {v.get('error')}")
    return v["data"]["result"]


def prometheus_sees(prom, expr, what, timeout=60, context=()):
    """Waits for `expr` to return data; on failure shows what the queries
    of `context` return."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if query(prom, expr):
            return
        time.sleep(0.5)
    for c in context:
        print(f"deploy-check: {c}: {[(r['metric'], r['value'][1]) for r in query(prom, c)]}", file=sys.stderr)
    fail(f"Prometheus did not see {what} ({expr}) within {timeout} s")


def upload(pal, guests, data):
    """Uploads the endless policy, sma_cross, adversary and a dataset; the
    strategies' and the dataset's ids, and a function that submits a job."""
    api(pal, "PUT", "/v1/policies/endless", ENDLESS, "application/toml")
    _, sma = api(pal, "POST", "/v1/strategies", (guests / "sma_cross.wasm").read_bytes(), "application/wasm")
    _, adv = api(pal, "POST", "/v1/strategies", (guests / "adversary.wasm").read_bytes(), "application/wasm")
    _, ds = api(pal, "POST", "/v1/datasets?name=spy", (data / "spy-like-daily.csv").read_bytes(), "text/csv")
    sma, adv, ds = sma["id"], adv["id"], ds["id"]

    def submit(strategy, params, **extra):
        _, v = api(pal, "POST", "/v1/jobs", {"strategy": strategy, "dataset": ds, "params": params, **extra})
        return v["id"]

    return sma, adv, ds, submit


def live(pal, prom, feed, guests, data):
    # Work for every panel and rule to have data: a strategy that succeeds,
    # one that runs out of fuel, and a full queue.
    sma, adv, ds, submit = upload(pal, guests, data)

    wait_job(pal, submit(sma, {"fast": 5, "slow": 20}), {"succeeded"})
    wait_job(pal, submit(adv, {"mode": 0}), {"succeeded"})
    # The adversary's trap series exist at zero from its first job; let
    # Prometheus record that zero, so the trap below is an increase.
    prometheus_sees(prom, 'palisade_strategy_traps_total{job="palisade", strategy="adversary", '
                          'cause="fuel_exhausted"} == 0', "the adversary's trap series at 0")
    looped = wait_job(pal, submit(adv, {"mode": 1}), {"failed", "timed_out"})
    cause = looped["error"]["cause"] if looped.get("error") else "?"
    print(f"deploy-check: the infinite loop ended {looped['state']} ({cause})")
    # The queue (serve.toml: max_running 1, queue_depth 2): one endless job
    # runs, two wait, the next is refused.
    endless = [submit(adv, {"mode": 1}, policy="endless")]
    wait_job(pal, endless[0], {"running"})
    endless += [submit(adv, {"mode": 1}, policy="endless", priority="low") for _ in range(2)]
    status, _ = http("POST", pal + "/v1/jobs",
                     json.dumps({"strategy": adv, "dataset": ds, "params": {"mode": 1}, "policy": "endless"}).encode(),
                     "application/json")
    if status != 429:
        fail(f"a submission to a full queue got {status}, not 429")

    try:
        check_queries(prom)
        check_rules_and_alerts(prom, cause)
    finally:
        for job in endless:
            http("DELETE", f"{pal}/v1/jobs/{job}")
    live_deployment(pal, prom, feed, sma, data)


def check_queries(prom, distributed=False, deployment=None):
    """Every rule's and panel's query parses, and each that must returns
    data: those of the distributed mode only when `distributed`, those of a
    live deployment only when `deployment` runs (the dashboard's
    `$deployment` is then that one)."""
    todo, excused, no_deployment = [], [], []
    variables = DISTRIBUTED_VARIABLES if distributed else VARIABLES
    if deployment:
        # A deployment's id is letters, digits, `-` and `_`: itself as a regex.
        variables = {**variables, "$deployment": deployment}
    live_row = live_row_panels()
    live_panels = []

    def ask(what, expr, need_data=True, records=""):
        # A series of the distributed mode only cannot have data on an
        # embedded server, nor can the expression of a recording rule that
        # records one; nor can a deployment's series while none runs.
        if need_data and not deployment and live_names(f"{expr} {records}"):
            no_deployment.append(what)
            need_data = False
        if need_data and not distributed and distributed_names(f"{expr} {records}"):
            excused.append(what)
            need_data = False
        todo.append((what, expr, need_data))

    for r in rules():
        if "record" in r:
            ask(f"recording rule {r['record']}", r["expr"], records=r["record"])
            ask(f"recorded series {r['record']}", r["record"])
        else:
            ask(f"alert {r['alert']}", r["expr"], need_data=False)
            ask(f"alert {r['alert']}'s left-hand side", alert_lhs(r))
    _, queries = panels()
    for title, ref, expr in queries:
        ask(f"panel {title!r} query {ref}", expand(expr, variables))
        if title in live_row:
            live_panels.append(title)
    # Rates need two scrapes and recorded series one evaluation: retry
    # what is empty for a while.
    deadline = time.time() + 90
    while True:
        empty = [(what, expr) for what, expr, need in todo if not query(prom, expr) and need]
        if not empty:
            break
        if time.time() > deadline:
            for what, expr in empty:
                print(f"deploy-check: no data: {what}: {expr}", file=sys.stderr)
            fail(f"{len(empty)} of {len(todo)} queries returned no data")
        time.sleep(1)
    if deployment:
        print(f"deploy-check: {len(todo)} queries parse, and each that must returns data, "
              f"the {len(live_panels)} queries of the {len(set(live_panels))} panels of the Live trading row "
              f"for deployment {deployment} included ({len(excused)} of the distributed mode only "
              "were not asked; none of a live deployment's excused)")
    elif distributed:
        print(f"deploy-check: {len(todo)} queries parse, and each that must returns data "
              f"({len(no_deployment)} of a live deployment's series were not asked: none runs)")
    else:
        print(f"deploy-check: {len(todo)} queries parse, and each that must returns data "
              f"({len(excused)} of the distributed mode only and {len(no_deployment)} of a live "
              "deployment's series were not asked)")


def check_rules_loaded(prom):
    """Every rule of rules.yml loaded and healthy; their number."""
    _, v = api(prom, "GET", "/api/v1/rules")
    loaded = [r for g in v["data"]["groups"] for r in g["rules"]]
    if len(loaded) != len(rules()):
        fail(f"Prometheus loaded {len(loaded)} rules, rules.yml has {len(rules())}")
    bad = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    if bad:
        fail(f"rules not healthy: {bad}")
    return len(loaded)


def group_alerts(name):
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"] for g in groups if g["name"] == name for r in g["rules"]}


def distributed_alerts():
    return group_alerts("palisade-distributed")


def live_alerts():
    """The alerts of live trading: none may even be pending while no
    deployment runs."""
    return group_alerts("palisade-live")


def check_no_live_alerts(prom):
    wrong = [a["labels"] for a in firing_or_pending(prom) if a["labels"]["alertname"] in live_alerts()]
    if wrong:
        fail(f"alerts of live trading set off by a server that runs no deployment: {wrong}")


def check_rules_and_alerts(prom, cause):
    loaded = check_rules_loaded(prom)
    want = [("PalisadeStrategyHittingLimits", {"strategy": "adversary", "cause": cause}),
            ("PalisadeQueueOverflow", {})]
    deadline = time.time() + 60
    while True:
        _, v = api(prom, "GET", "/api/v1/alerts")
        firing = [a for a in v["data"]["alerts"] if a["state"] == "firing"]
        missing = [(name, labels) for name, labels in want
                   if not any(a["labels"]["alertname"] == name
                              and all(a["labels"].get(k) == x for k, x in labels.items()) for a in firing)]
        if not missing:
            break
        if time.time() > deadline:
            fail(f"alerts not firing: {missing}; firing: {[a['labels'] for a in firing]}")
        time.sleep(1)
    names = sorted({a["labels"]["alertname"] for a in firing})
    # An embedded server has no workers and no Redis: none of the
    # distributed mode's alerts may even be pending for it.
    distributed = distributed_alerts()
    wrong = [a["labels"] for a in v["data"]["alerts"] if a["labels"]["alertname"] in distributed]
    if wrong:
        fail(f"alerts of the distributed mode set off by an embedded server: {wrong}")
    check_no_live_alerts(prom)
    print(f"deploy-check: {loaded} rules healthy; firing as induced: {names}; "
          f"none of the {len(distributed)} alerts of the distributed mode "
          f"nor of the {len(live_alerts())} of live trading pending")


# ---- live, a deployment ----

DEPLOYMENT = "check-live"
# The drift policy's defaults (docs/live.md): price drift is the mean of
# |bps| over the last 5 matched fills, its threshold 50 bps, critical at
# twice that. The gate suspends at the first drifted fill (the 6th intent),
# so that fill alone must carry the mean to 100 bps: 750 bps make it 150
# (score 3). With 300 bps the score would stop at 1.2, under critical.
DRIFT_BPS = 750.0


def samples(prom, expr):
    """{labels without the name, job and instance: value} of an instant query."""
    out = {}
    for r in query(prom, expr):
        labels = {k: v for k, v in r["metric"].items() if k not in ("__name__", "job", "instance")}
        out[tuple(sorted(labels.items()))] = float(r["value"][1])
    return out


def wait_until(what, probe, timeout=30, interval=0.25):
    """Calls `probe` until it returns something true, and returns that."""
    deadline = time.time() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.time() > deadline:
            fail(f"{what} within {timeout} s")
        time.sleep(interval)


def parse_time(text):
    """Prometheus's RFC 3339 times (nanoseconds) as Unix seconds."""
    m = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        fail(f"Prometheus gave a time that does not read: {text!r}")
    from datetime import datetime
    base = datetime.fromisoformat(m.group(1) + m.group(3).replace("Z", "+00:00")).timestamp()
    return base + float(m.group(2) or 0)


def live_group_evaluated_after(prom, t):
    """Waits for Prometheus to evaluate the group palisade-live after time
    `t`, so that its alerts reflect what was scraped and recorded by then."""
    def evaluated():
        _, v = api(prom, "GET", "/api/v1/rules")
        group = next((g for g in v["data"]["groups"] if g["name"] == "palisade-live"), None)
        if group is None:
            fail("Prometheus has no rule group palisade-live")
        return parse_time(group["lastEvaluation"]) > t
    wait_until("Prometheus did not evaluate palisade-live", evaluated, timeout=15)


def check_live_alerts(prom, allowed, pending_only=()):
    """The alerts of live trading pending or firing are among `allowed`, or
    pending (not firing) among `pending_only`; returns them."""
    seen = [a for a in firing_or_pending(prom) if a["labels"]["alertname"] in live_alerts()]
    wrong = [(a["state"], a["labels"]) for a in seen
             if a["labels"]["alertname"] not in allowed
             and not (a["labels"]["alertname"] in pending_only and a["state"] == "pending")]
    if wrong:
        fail(f"alerts of live trading not induced, yet pending or firing: {wrong}")
    return sorted({(a["labels"]["alertname"], a["state"]) for a in seen})


def live_deployment(pal, prom, feed, sma, data):
    """Starts a live deployment of sma_cross (fast 5, slow 20) on the replay
    feed `feed` (daily bars of SPY, sent as fast as it reads them), whose
    simulated venue fills from the 6th intent on DRIFT_BPS worse than the
    paper broker: the gate suspends its intents at the first drifted fill,
    the drift score past the critical 2. Then, through Prometheus:
    (a) every series of LIVE_ONLY has data for it, and what it says agrees
    with the deployment's status; (c) PalisadeDriftHigh and
    PalisadeDriftCritical are pending or firing, and no other alert of live
    trading (PalisadeGateStuckSuspended may be pending: the gate is
    suspended, its `for` is 30 m); (d) an operator's emergency stop of all
    sets off PalisadeEmergencyStopActive and stops the gate; (b) every query
    returns data, the Live trading row's for this deployment, none excused;
    and still no alert of live trading but the induced ones."""
    started = time.time()
    bars = len((data / "spy-like-daily.csv").read_text().strip().splitlines()) - 1
    spec = {"id": DEPLOYMENT, "strategy": sma, "symbols": ["SPY"], "feed": {"url": feed},
            "interval_secs": 86400, "params": {"fast": 5, "slow": 20},
            "venue": {"drift": [{"from_intent": 6, "price_bps": DRIFT_BPS}]},
            # The gate recovers by itself 60 s after a suspension (the
            # default cooldown), and the drift measures restart: keep it
            # suspended for the whole check, however slow the machine.
            "gate": {"cooldown_ms": 600_000},
            "durability": "os"}
    api(pal, "POST", "/v1/deployments", spec, want=(201,))

    def replayed():
        _, st = api(pal, "GET", f"/v1/deployments/{DEPLOYMENT}")
        if st["state"] == "failed":
            fail(f"deployment {DEPLOYMENT} failed: {st.get('failure')}")
        return st if st["state"] == "live" and st["bars"] >= bars and st["gate"]["state"] == "suspended" else None
    status = wait_until(f"deployment {DEPLOYMENT} did not take the feed's {bars} bars with its gate suspended",
                        replayed)
    drift = status["drift"]
    print(f"deploy-check: deployment {DEPLOYMENT} live on {feed}: {status['bars']} bars, "
          f"{status['intents_published']} intents published and {status['intents_blocked']} blocked, "
          f"gate {status['gate']}, drift score {drift['score']:.2f} (price {drift['price_bps']:.1f} bps)")
    if status["bars"] != bars or not status["feed_connected"]:
        fail(f"deployment {DEPLOYMENT}: {status['bars']} bars of {bars}, feed connected "
             f"{status['feed_connected']}: {status}")
    if drift["score"] < 2:
        fail(f"the venue's drift did not carry the score past critical (2): {drift}")

    # (a) Every series of one deployment, once Prometheus has scraped the
    # replay's end and recorded from it, and what they say.
    sel = f'deployment="{DEPLOYMENT}"'
    prometheus_sees(prom, f'palisade_feed_bars_total{{{sel}}} == {bars}', "every bar counted", timeout=30)
    wait_until("not every series of LIVE_ONLY returned data for the deployment "
               f"(missing: {[n for n in sorted(LIVE_ONLY) if not query(prom, f'{n}{{{sel}}}')]})",
               lambda: all(query(prom, f"{n}{{{sel}}}") for n in LIVE_ONLY), timeout=30)
    recorded_by = time.time()
    got = {n: samples(prom, f"{n}{{{sel}}}") for n in sorted(LIVE_ONLY)}
    check_live_values(got, status, bars)
    print(f"deploy-check: all {len(LIVE_ONLY)} series of LIVE_ONLY have data for {DEPLOYMENT}, "
          "and agree with its status (gate suspended, drift score, deltas, bars, intents, fills, feed)")

    # (c) The drift alerts; nothing else of live trading (the feed is up and
    # current, no bar was rejected or missed, no strategy trapped).
    wait_alert(prom, "PalisadeDriftCritical", {"deployment": DEPLOYMENT}, timeout=30)
    wait_alert(prom, "PalisadeDriftHigh", {"deployment": DEPLOYMENT}, timeout=30)
    live_group_evaluated_after(prom, recorded_by)
    seen = check_live_alerts(prom, {"PalisadeDriftHigh", "PalisadeDriftCritical"},
                             pending_only={"PalisadeGateStuckSuspended"})
    print(f"deploy-check: alerts of live trading with the gate suspended by drift: {seen}")

    # (d) An operator's emergency stop of all.
    _, stopped = api(pal, "POST", "/v1/emergency-stop", {"scope": "all", "reason": "check"})
    if DEPLOYMENT not in stopped.get("stopped", []):
        fail(f"POST /v1/emergency-stop (all) stopped {stopped}, not {DEPLOYMENT}")
    _, status = api(pal, "GET", f"/v1/deployments/{DEPLOYMENT}")
    if status["gate"]["state"] != "stopped":
        fail(f"after the emergency stop, the gate of {DEPLOYMENT} is {status['gate']}")
    prometheus_sees(prom, f'palisade_gate_state{{{sel}}} == 3', "the gate stopped (3)", timeout=30)
    prometheus_sees(prom, 'palisade_emergency_stops{scope="all"} == 1', "the emergency stop of all", timeout=30)
    prometheus_sees(prom, f'palisade_gate_transitions_total{{{sel}, from="suspended", to="stopped"}} == 1',
                    "the gate's transition suspended -> stopped", timeout=30)
    stop_seen = time.time()
    wait_alert(prom, "PalisadeEmergencyStopActive", {"scope": "all"}, timeout=30)

    # (b) Every query, the dashboard's Live trading row for this deployment
    # (its gate transitions panel shows the stop), nothing excused for want
    # of a deployment.
    check_queries(prom, deployment=DEPLOYMENT)
    live_group_evaluated_after(prom, stop_seen)
    seen = check_live_alerts(prom, {"PalisadeDriftHigh", "PalisadeDriftCritical", "PalisadeEmergencyStopActive"})
    print(f"deploy-check: after the emergency stop, alerts of live trading: {seen}; "
          f"the deployment stage took {time.time() - started:.1f} s")


def check_live_values(got, status, bars):
    """What Prometheus scraped of the deployment agrees with its status.
    `got`: {series: {labels: value}}."""
    problems = []

    def one(name, labels=(), want=None, close=None, what=""):
        key = tuple(sorted((("deployment", DEPLOYMENT),) + tuple(labels)))
        if key not in got[name]:
            problems.append(f"{name}{dict(labels)}: no series (there are {[dict(k) for k in got[name]]})")
            return None
        v = got[name][key]
        if want is not None and abs(v - want) > 1e-6 * max(1.0, abs(want)):
            problems.append(f"{name}{dict(labels)} is {v}, the status says {want} {what}".rstrip())
        if close is not None and not close(v):
            problems.append(f"{name}{dict(labels)} is {v} {what}".rstrip())
        return v

    drift = status["drift"]
    one("palisade_gate_state", want=2, what="(suspended)")
    one("palisade_drift_score", want=drift["score"])
    for kind in ("price_bps", "volume_pct", "latency_ms", "pnl_pct", "signal"):
        one("palisade_paper_live_delta", [("kind", kind)], want=drift[kind])
    one("palisade_feed_up", want=1, what="(connected)")
    one("palisade_feed_bars_total", want=status["bars"])
    one("palisade_feed_interval_seconds", want=86400)
    received = one("palisade_feed_last_bar_received_seconds",
                   close=lambda v: time.time() - 120 < v <= time.time() + 1, what="(not within the last 2 minutes)")
    if received is not None:
        # The last bar opened at last_bar_ts and closed an interval later.
        one("palisade_feed_lag_seconds", want=received - (status["last_bar_ts"] + 86400),
            what="(its receipt less its close time)")
    one("palisade_feed_gaps_total", want=status["gap_bars"])
    reasons = ("malformed", "invalid", "unknown_symbol", "out_of_order", "duplicate")
    for reason in reasons:
        one("palisade_feed_rejected_bars_total", [("reason", reason)], want=0)
        one("palisade:feed_rejected_bars:increase5m", [("reason", reason)], want=0)
    if status["rejected_bars"] != 0:
        problems.append(f"the status says {status['rejected_bars']} bars rejected")
    one("palisade_live_intents_total", [("outcome", "published")], want=status["intents_published"])
    one("palisade_live_intents_total", [("outcome", "blocked")], want=status["intents_blocked"])
    one("palisade_live_fills_total", [("source", "paper")], want=status["paper_fills"])
    one("palisade_live_fills_total", [("source", "live")], want=status["live_fills"])
    states = ("open", "recovering", "suspended", "stopped")
    for a in states:
        for b in states:
            if a != b:
                one("palisade_gate_transitions_total", [("from", a), ("to", b)],
                    want=1 if (a, b) == ("open", "suspended") else 0)
    one("palisade:feed_gaps:increase15m", want=0)
    one("palisade:feed_behind:intervals", close=lambda v: v < 2, what="(PalisadeFeedLagging reads > 2)")
    if problems:
        fail(f"the metrics of deployment {DEPLOYMENT} disagree with its status {status}:\n  "
             + "\n  ".join(problems))


def recent_bars(src, dst):
    """Writes the daily bars of `src` to `dst`, moved by whole days so that
    the last one closed at the last midnight UTC."""
    from datetime import datetime, timezone
    lines = Path(src).read_text().strip().splitlines()
    header, rows = lines[0], [line.split(",", 1) for line in lines[1:]]
    ts = [int(datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) for t, _ in rows]
    step = min(b - a for a, b in zip(ts, ts[1:]))
    if step != 86400 or any(t % 86400 for t in ts):
        fail(f"{src}: not daily bars at midnight")
    shift = (int(time.time()) // 86400 * 86400 - step) - ts[-1]
    out = [header] + [datetime.fromtimestamp(t + shift, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") + "," + rest
                      for t, (_, rest) in zip(ts, rows)]
    Path(dst).write_text("\n".join(out) + "\n")


# ---- live, the distributed mode ----

def firing_or_pending(prom):
    _, v = api(prom, "GET", "/api/v1/alerts")
    return v["data"]["alerts"]


def wait_alert(prom, name, labels, timeout=60):
    """Waits for alert `name` with `labels` to be pending or firing: its
    condition held on live data (promtool tests its `for`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for a in firing_or_pending(prom):
            if a["labels"]["alertname"] == name and all(a["labels"].get(k) == x for k, x in labels.items()):
                return a
        time.sleep(1)
    fail(f"alert {name} {labels} neither pending nor firing within {timeout} s; "
         f"alerts: {[a['labels'] for a in firing_or_pending(prom)]}")


def live_distributed(api_url, prom, workers, guests, data):
    """Drives an API node and workers (`workers`: id -> pid) scraped by
    Prometheus: runs a job, kills the worker of a running job with SIGKILL
    so that another reclaims it, then asks every query for data (the
    distributed mode's included), and requires PalisadeWorkerDown and
    PalisadeWorkerHeartbeatMissing (for the dead worker) to be pending or
    firing and no other alert of the distributed mode to be."""
    # Prometheus scrapes a new target within a few seconds only: let it
    # record every worker's reclaims at 0 first, so the reclaim below is an
    # increase.
    prometheus_sees(prom, f'count(palisade_reclaimed_jobs_total{{job="palisade-worker"}} == 0) == {len(workers)}',
                    "every worker's reclaimed jobs at 0")
    sma, adv, _, submit = upload(api_url, guests, data)
    wait_job(api_url, submit(sma, {"fast": 5, "slow": 20}), {"succeeded"})
    job = submit(adv, {"mode": 1}, policy="endless")
    try:
        wait_job(api_url, job, {"running"})
        victim = None
        deadline = time.time() + 30
        while victim is None:
            _, listed = api(api_url, "GET", "/v1/workers")
            victim = next((w["id"] for w in listed["workers"] if job in w["current_jobs"]), None)
            if victim is None:
                if time.time() > deadline:
                    fail(f"no worker says it runs job {job}: {listed}")
                time.sleep(0.2)
        if victim not in workers:
            fail(f"job {job} runs on {victim}, which is none of {sorted(workers)}")
        os.kill(workers[victim], signal.SIGKILL)
        print(f"deploy-check: killed worker {victim}, which ran job {job}")
        # Another worker takes it back within the TTL and one interval.
        context = ("up", "palisade_reclaimed_jobs_total", "palisade_workers", "palisade_queue_up")
        prometheus_sees(prom, 'palisade:reclaimed_jobs:increase10m{job="palisade-worker"} > 0',
                        "the job reclaimed by another worker", context=context)
        prometheus_sees(prom, 'palisade:workers_down:max{job="palisade"} == 1', "the dead worker listed down",
                        context=context)
        wait_job(api_url, job, {"running"})
        check_queries(prom, distributed=True)
        wait_alert(prom, "PalisadeWorkerDown", {"job": "palisade"})
        # Its heartbeat passes 30 s half a minute after the kill.
        wait_alert(prom, "PalisadeWorkerHeartbeatMissing", {"worker": victim[:64]}, timeout=90)
        expected = {"PalisadeWorkerDown", "PalisadeWorkerHeartbeatMissing"}
        wrong = [a["labels"] for a in firing_or_pending(prom)
                 if a["labels"]["alertname"] in distributed_alerts() - expected]
        if wrong:
            fail(f"alerts of the distributed mode not induced, yet pending or firing: {wrong}")
        check_no_live_alerts(prom)
        loaded = check_rules_loaded(prom)
        print(f"deploy-check: {loaded} rules healthy; pending or firing as induced: {sorted(expected)}, "
              f"and no other alert of the distributed mode nor any of live trading")
    finally:
        http("DELETE", f"{api_url}/v1/jobs/{job}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("static")
    lv = sub.add_parser("live")
    lv.add_argument("--palisade", required=True)
    lv.add_argument("--prometheus", required=True)
    lv.add_argument("--feed", required=True, help="a replay feed of SPY's daily bars (ws://HOST:PORT/)")
    lv.add_argument("--guests", default=str(ROOT / "guest-examples/out"))
    lv.add_argument("--data", default=str(ROOT / "data/sample"))
    rb = sub.add_parser("recent-bars")
    rb.add_argument("src")
    rb.add_argument("dst")
    ld = sub.add_parser("live-distributed")
    ld.add_argument("--api", required=True)
    ld.add_argument("--prometheus", required=True)
    ld.add_argument("--worker", action="append", required=True, metavar="ID=PID",
                    help="a worker's id (as it prints it) and process id")
    ld.add_argument("--guests", default=str(ROOT / "guest-examples/out"))
    ld.add_argument("--data", default=str(ROOT / "data/sample"))
    a = p.parse_args()
    if a.cmd == "static":
        static()
    elif a.cmd == "live":
        live(a.palisade.rstrip("/"), a.prometheus.rstrip("/"), a.feed, Path(a.guests), Path(a.data))
    elif a.cmd == "recent-bars":
        recent_bars(a.src, a.dst)
    else:
        workers = {w.rpartition("=")[0]: int(w.rpartition("=")[2]) for w in a.worker}
        live_distributed(a.api.rstrip("/"), a.prometheus.rstrip("/"), workers, Path(a.guests), Path(a.data))


if __name__ == "__main__":
    main()

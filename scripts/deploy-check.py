#!/usr/bin/env python3
"""Checks of the operator kit in deploy/, run by scripts/check-deploy.sh.

  deploy-check.py static
      Every alert of deploy/prometheus/rules.yml has the shape the live check
      relies on (`<selector> <op> <number>`) and is tested by
      deploy/prometheus/tests/ both firing and not firing; the dashboard JSON
      is a well-formed Grafana dashboard whose every panel has a query and
      whose panels do not overlap.

  deploy-check.py live --palisade URL --prometheus URL
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
      trading's (group palisade-live: no deployment runs) may be pending.

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
deployment (LIVE_ONLY below) exist only while it runs, and neither check
runs one: both ask the queries that name them to parse only.

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
# Neither live check starts a deployment, so the queries naming them must
# parse, but may return nothing. The other metrics of live trading exist
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


def live(pal, prom, guests, data):
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


def check_queries(prom, distributed=False):
    """Every rule's and panel's query parses, and each that must returns
    data: those of the distributed mode only when `distributed`."""
    todo, excused, no_deployment = [], [], []
    variables = DISTRIBUTED_VARIABLES if distributed else VARIABLES

    def ask(what, expr, need_data=True, records=""):
        # A series of the distributed mode only cannot have data on an
        # embedded server, nor can the expression of a recording rule that
        # records one; nor can a deployment's series while none runs.
        if need_data and live_names(f"{expr} {records}"):
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
    if distributed:
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
    """The alerts of live trading: no deployment runs in either live check,
    so none may even be pending."""
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
    lv.add_argument("--guests", default=str(ROOT / "guest-examples/out"))
    lv.add_argument("--data", default=str(ROOT / "data/sample"))
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
        live(a.palisade.rstrip("/"), a.prometheus.rstrip("/"), Path(a.guests), Path(a.data))
    else:
        workers = {w.rpartition("=")[0]: int(w.rpartition("=")[2]) for w in a.worker}
        live_distributed(a.api.rstrip("/"), a.prometheus.rstrip("/"), workers, Path(a.guests), Path(a.data))


if __name__ == "__main__":
    main()

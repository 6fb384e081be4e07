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
      distributed mode's alerts (group palisade-distributed) may be pending.

The distributed mode's series (DISTRIBUTED_ONLY below) do not exist on an
embedded server: the queries that name them must parse, but need not return
data.

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
import re
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
# `palisade serve` never has them, so the live check, which runs one, cannot
# ask them for data. A query naming one of them must parse, but may return
# nothing; every other query must still return data. The raw metrics here
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

# What the dashboard's variables stand for when a query is sent directly.
VARIABLES = {"$job": "palisade", "$instance": ".*", "$__rate_interval": "1m"}


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


def distributed_names(expr):
    """The series of DISTRIBUTED_ONLY that `expr` names."""
    return {name for name in DISTRIBUTED_ONLY
            if re.search(rf"(?<![a-zA-Z0-9_:]){re.escape(name)}(?![a-zA-Z0-9_:])", expr)}


def panels():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        for t in p.get("targets", []):
            out.append((p["title"], t["refId"], t["expr"]))
    return dash, out


def expand(expr):
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
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
    # DISTRIBUTED_ONLY must not outlive what it excuses.
    recorded = {r["record"] for r in rules() if "record" in r}
    exprs = [r["expr"] for r in rules()] + [expr for _, _, expr in panels()[1]]
    for name in sorted(DISTRIBUTED_ONLY):
        if ":" in name and name not in recorded:
            fail(f"DISTRIBUTED_ONLY names {name}, which rules.yml does not record")
        if not any(name in distributed_names(e) for e in exprs):
            fail(f"DISTRIBUTED_ONLY names {name}, which no rule or panel reads")

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
    if variables != {"datasource", "job", "instance"}:
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


def prometheus_sees(prom, expr, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if query(prom, expr):
            return
        time.sleep(0.5)
    fail(f"Prometheus did not see {what} ({expr}) within {timeout} s")


def live(pal, prom, guests, data):
    # Work for every panel and rule to have data: a strategy that succeeds,
    # one that runs out of fuel, and a full queue.
    api(pal, "PUT", "/v1/policies/endless", ENDLESS, "application/toml")
    _, sma = api(pal, "POST", "/v1/strategies", (guests / "sma_cross.wasm").read_bytes(), "application/wasm")
    _, adv = api(pal, "POST", "/v1/strategies", (guests / "adversary.wasm").read_bytes(), "application/wasm")
    _, ds = api(pal, "POST", "/v1/datasets?name=spy", (data / "spy-like-daily.csv").read_bytes(), "text/csv")
    sma, adv, ds = sma["id"], adv["id"], ds["id"]

    def submit(strategy, params, **extra):
        _, v = api(pal, "POST", "/v1/jobs", {"strategy": strategy, "dataset": ds, "params": params, **extra})
        return v["id"]

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


def check_queries(prom):
    todo, excused = [], []

    def ask(what, expr, need_data=True, records=""):
        # A series of the distributed mode only cannot have data here, nor
        # can the expression of a recording rule that records one.
        if need_data and distributed_names(f"{expr} {records}"):
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
        ask(f"panel {title!r} query {ref}", expand(expr))
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
    print(f"deploy-check: {len(todo)} queries parse, and each that must returns data "
          f"({len(excused)} of the distributed mode only were not asked)")


def check_rules_and_alerts(prom, cause):
    _, v = api(prom, "GET", "/api/v1/rules")
    loaded = [r for g in v["data"]["groups"] for r in g["rules"]]
    if len(loaded) != len(rules()):
        fail(f"Prometheus loaded {len(loaded)} rules, rules.yml has {len(rules())}")
    bad = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    if bad:
        fail(f"rules not healthy: {bad}")
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
    groups = yaml.safe_load(RULES.read_text())["groups"]
    distributed = {r["alert"] for g in groups if g["name"] == "palisade-distributed" for r in g["rules"]}
    wrong = [a["labels"] for a in v["data"]["alerts"] if a["labels"]["alertname"] in distributed]
    if wrong:
        fail(f"alerts of the distributed mode set off by an embedded server: {wrong}")
    print(f"deploy-check: {len(loaded)} rules healthy; firing as induced: {names}; "
          f"none of the {len(distributed)} alerts of the distributed mode pending")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("static")
    lv = sub.add_parser("live")
    lv.add_argument("--palisade", required=True)
    lv.add_argument("--prometheus", required=True)
    lv.add_argument("--guests", default=str(ROOT / "guest-examples/out"))
    lv.add_argument("--data", default=str(ROOT / "data/sample"))
    a = p.parse_args()
    if a.cmd == "static":
        static()
    else:
        live(a.palisade.rstrip("/"), a.prometheus.rstrip("/"), Path(a.guests), Path(a.data))


if __name__ == "__main__":
    main()

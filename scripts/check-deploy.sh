#!/usr/bin/env bash
# Checks the operator kit in deploy/: the Prometheus rules (promtool check and
# unit tests), the dashboard JSON, the systemd units (when systemd-analyze is
# there), and then the whole kit live, twice, on loopback ports in a
# temporary directory: a real `palisade serve` and a real Prometheus
# (Debian's package) scraping it every second with rules.yml loaded; then
# the distributed mode, a real Postgres and Redis, an API node and two
# workers, and another Prometheus scraping them. Every dashboard query and
# every rule expression is evaluated through Prometheus's HTTP API, and the
# alerts whose conditions the check induces must fire; the first server also
# runs a live deployment on a replay feed (`palisade feed replay`) whose
# simulated venue drifts, then is stopped by an emergency stop (see
# scripts/deploy-check.py for what is checked and why).
#
# Needs the binary at ${CARGO_TARGET_DIR:-target}/debug/palisade (or $PALISADE_BIN) and the
# guest modules in guest-examples/out/ (scripts/build-guests.sh). Installs
# Prometheus and promtool (Debian's `prometheus`) and PyYAML
# (`python3-yaml`) with apt-get if they are missing, and Redis and Postgres
# with scripts/install-servers.sh. Stops everything it starts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '==> %s\n' "$*" >&2; }

bin="${PALISADE_BIN:-${CARGO_TARGET_DIR:-target}/debug/palisade}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
[ -x "$bin" ] || { echo "no palisade binary at $bin: run cargo build first" >&2; exit 1; }

missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} with apt-get (promtool and prometheus come from Debian's prometheus package)"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

say "checking the rules and the example config (promtool check)"
promtool check rules deploy/prometheus/rules.yml
promtool check config deploy/prometheus/prometheus.yml

say "unit-testing every rule (promtool test rules)"
promtool test rules deploy/prometheus/tests/*.yml

say "checking the alerts' shape and test coverage, and the dashboard JSON"
python3 scripts/deploy-check.py static

if command -v systemd-analyze >/dev/null 2>&1; then
    say "checking the systemd units (systemd-analyze verify)"
    for unit in deploy/systemd/*.service; do
        name=$(basename "$unit")
        # verify wants the ExecStart binary to exist: point it at ours.
        unit_dir=$(mktemp -d)
        sed "s|/usr/local/bin/palisade|$bin|" "$unit" > "$unit_dir/$name"
        out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit_dir/$name" 2>&1 || true)
        rm -rf "$unit_dir"
        # Every complaint about the unit names its file.
        if printf '%s\n' "$out" | grep -F "$name"; then
            echo "systemd-analyze verify found problems in $unit" >&2
            exit 1
        fi
    done
fi

for g in sma_cross adversary; do
    [ -f "guest-examples/out/$g.wasm" ] || { echo "no guest-examples/out/$g.wasm: run scripts/build-guests.sh" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
pg_dir=""
pg_bin=""
# Postgres refuses to run as root: as root, run it as the postgres user.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c "$1"
    else
        sh -c "$1"
    fi
}
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -f "$work/redis/pid" ]; then
        kill "$(cat "$work/redis/pid")" 2>/dev/null || true
    fi
    if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
        as_postgres "$pg_bin/pg_ctl -D $pg_dir/data -m immediate stop" >/dev/null 2>&1 || true
    fi
    [ -z "$pg_dir" ] || rm -rf "$pg_dir"
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_prometheus NAME: Prometheus with the configuration $work/NAME.yml on
# a loopback port, its data and log in $work; sets PROM_URL once it is ready.
start_prometheus() {
    local name=$1 port pid
    port=$(free_port)
    prometheus --config.file="$work/$name.yml" --storage.tsdb.path="$work/$name-tsdb" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn 2> "$work/$name.log" &
    pid=$!
    pids+=("$pid")
    PROM_URL="http://127.0.0.1:$port"
    for _ in $(seq 200); do
        prom_ready && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    prom_ready || { echo "Prometheus did not get ready; log:" >&2; cat "$work/$name.log" >&2; exit 1; }
}
prom_ready() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$PROM_URL/-/ready" 2>/dev/null
}

say "starting palisade serve on a loopback port (one job at a time, a queue of 2)"
printf 'max_running = 1\nqueue_depth = 2\n' > "$work/serve.toml"
. scripts/serve-lib.sh
PALISADE_LOG=warn start_palisade "$work" "$bin" --config "$work/serve.toml"
pids+=("$PALISADE_PID")
palisade=$PALISADE_URL

say "starting Prometheus on a loopback port, scraping $palisade every second"
cat > "$work/prometheus.yml" <<EOC
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: palisade
    static_configs:
      - targets: ["${palisade#http://}"]
EOC
start_prometheus prometheus

# The feed of the live deployment: the sample's daily bars as SPY, moved to
# end at the last midnight (replayed bars from 2015-2021 would be years
# late, and PalisadeFeedLagging would rightly go off), sent as fast as the
# deployment reads them.
say "starting a replay feed (palisade feed replay, SPY's daily bars up to today) on a loopback port"
python3 scripts/deploy-check.py recent-bars data/sample/spy-like-daily.csv "$work/SPY.csv"
feed_port=$(free_port)
"$bin" feed replay "SPY=$work/SPY.csv" --speed 0 --listen "127.0.0.1:$feed_port" \
    > "$work/feed.log" 2>&1 &
feed_pid=$!
pids+=("$feed_pid")
# It says "replaying N bars of SPY ... on ws://ADDR/" once it listens.
for _ in $(seq 200); do
    grep -q '^replaying' "$work/feed.log" && break
    kill -0 "$feed_pid" 2>/dev/null || break
    sleep 0.05
done
grep -q '^replaying' "$work/feed.log" || { echo "the replay feed did not start; its log:" >&2; cat "$work/feed.log" >&2; exit 1; }

say "running jobs, then a live deployment and an emergency stop, evaluating every rule and panel query against the live data"
if ! python3 scripts/deploy-check.py live --palisade "$palisade" --prometheus "$PROM_URL" \
        --feed "ws://127.0.0.1:$feed_port/"; then
    for log in "$work/palisade.log" "$work/feed.log"; do
        printf '==> the end of %s\n' "$log" >&2
        tail -n 30 "$log" >&2
    done
    exit 1
fi

# ---- the distributed mode ----
if ! command -v redis-server >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    say "installing Redis and Postgres (scripts/install-servers.sh)"
    scripts/install-servers.sh
fi
pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")

say "the distributed mode: starting Postgres and Redis on loopback ports"
# Postgres's directory must belong to the user that runs it.
pg_dir=$(mktemp -d)
[ "$(id -u)" -ne 0 ] || chown postgres "$pg_dir"
pg_port=$(free_port)
as_postgres "$pg_bin/initdb -D $pg_dir/data -A trust -U palisade" > "$work/initdb.log" 2>&1 \
    || { cat "$work/initdb.log" >&2; exit 1; }
as_postgres "$pg_bin/pg_ctl -D $pg_dir/data -o '-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1' -l $pg_dir/log -w start" \
    > /dev/null || { cat "$pg_dir/log" >&2; exit 1; }
mkdir -p "$work/redis"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --dir "$work/redis" --daemonize yes \
    --pidfile "$work/redis/pid" --logfile "$work/redis/log"
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
done
export PALISADE_STORE="postgres://palisade@127.0.0.1:$pg_port/postgres"
export PALISADE_QUEUE="redis://127.0.0.1:$redis_port"

say "the distributed mode: an API node and two workers (one job each, a heartbeat every second, dead after 3 s)"
mkdir -p "$work/api"
PALISADE_LOG=warn start_palisade "$work/api" "$bin"
pids+=("$PALISADE_PID")
api=$PALISADE_URL
workers=()
worker_targets=()
for w in w1 w2; do
    mkdir -p "$work/$w"
    PALISADE_LOG=warn start_worker "$work/$w" "$bin" --max-running 1 \
        --heartbeat-interval-ms 1000 --heartbeat-ttl-ms 3000
    pids+=("$WORKER_PID")
    workers+=(--worker "$WORKER_ID=$WORKER_PID")
    worker_targets+=("\"${WORKER_URL#http://}\"")
done

say "starting Prometheus scraping the API node (job palisade) and the workers (job palisade-worker)"
cat > "$work/prometheus-distributed.yml" <<EOC
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: palisade
    static_configs:
      - targets: ["${api#http://}"]
  - job_name: palisade-worker
    static_configs:
      - targets: [$(IFS=,; echo "${worker_targets[*]}")]
EOC
start_prometheus prometheus-distributed

say "killing the worker of a running job, then evaluating every rule and panel query"
if ! python3 scripts/deploy-check.py live-distributed --api "$api" --prometheus "$PROM_URL" "${workers[@]}"; then
    for log in "$work/api/palisade.log" "$work"/w?/worker.log; do
        printf '==> the end of %s\n' "$log" >&2
        tail -n 30 "$log" >&2
    done
    exit 1
fi
say "deploy/ checked"

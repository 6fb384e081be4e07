#!/usr/bin/env bash
# Checks the operator kit in deploy/: the Prometheus rules (promtool check and
# unit tests), the dashboard JSON, the systemd units (when systemd-analyze is
# there), and then the whole kit live: a real `palisade serve` and a real
# Prometheus (Debian's package) scraping it every second with rules.yml
# loaded, on loopback ports, in a temporary directory. Every dashboard query
# and every rule expression is evaluated through Prometheus's HTTP API, and
# the alerts whose conditions the check induces must fire (see
# scripts/deploy-check.py for what is checked and why).
#
# Needs the binary at ${CARGO_TARGET_DIR:-target}/debug/palisade (or $PALISADE_BIN) and the
# guest modules in guest-examples/out/ (scripts/build-guests.sh). Installs
# Prometheus and promtool (Debian's `prometheus`) and PyYAML
# (`python3-yaml`) with apt-get if they are missing. Stops everything it
# starts.
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
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

say "starting palisade serve on a loopback port (one job at a time, a queue of 2)"
printf 'max_running = 1\nqueue_depth = 2\n' > "$work/serve.toml"
. scripts/serve-lib.sh
PALISADE_LOG=warn start_palisade "$work" "$bin" --config "$work/serve.toml"
pids+=("$PALISADE_PID")
palisade=$PALISADE_URL

say "starting Prometheus on a loopback port, scraping $palisade every second"
prom_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/deploy/prometheus/rules.yml
scrape_configs:
  - job_name: palisade
    static_configs:
      - targets: ["${palisade#http://}"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn 2> "$work/prometheus.log" &
pids+=($!)
prom="http://127.0.0.1:$prom_port"
prom_ready() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$prom/-/ready" 2>/dev/null
}
for _ in $(seq 200); do
    prom_ready && break
    kill -0 "${pids[1]}" 2>/dev/null || { cat "$work/prometheus.log" >&2; exit 1; }
    sleep 0.1
done
prom_ready || { echo "Prometheus did not get ready; log:" >&2; cat "$work/prometheus.log" >&2; exit 1; }

say "running jobs, then evaluating every rule and panel query against the live data"
python3 scripts/deploy-check.py live --palisade "$palisade" --prometheus "$prom"
say "deploy/ checked"

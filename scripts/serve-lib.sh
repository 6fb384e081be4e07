# Starting a real `palisade serve` for a check, shared by the scripts that
# need one (api-fuzz.sh, load-check.sh, check-deploy.sh). Source it, then:
#
#   start_palisade DIR BIN [SERVE ARGS...]
#       starts BIN serve on a loopback port with its data in DIR/data, its
#       stdout in DIR/palisade.out and its log in DIR/palisade.log, and waits
#       (up to 10 s) for it to say where it listens; sets PALISADE_PID and
#       PALISADE_URL (http://127.0.0.1:PORT). Fails, showing the log, when
#       the server exits or never says.
#   start_worker DIR BIN [WORKER ARGS...]
#       starts BIN worker (the distributed mode's) likewise, its stdout in
#       DIR/worker.out and its log in DIR/worker.log, and waits (up to 10 s)
#       for it to say its id and where it serves its probes and metrics;
#       sets WORKER_PID, WORKER_ID and WORKER_URL.
#   palisade_healthy NAME DIR
#       fails, naming NAME, when the server's log shows a panic or the
#       server is gone.
#
# The caller stops it (kill "$PALISADE_PID") in its EXIT trap.

start_palisade() {
    local dir=$1 bin=$2
    shift 2
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" \
        > "$dir/palisade.out" 2> "$dir/palisade.log" &
    PALISADE_PID=$!
    PALISADE_URL=
    for _ in $(seq 1 200); do
        PALISADE_URL=$(sed -n 's/^palisade listening on //p' "$dir/palisade.out" | head -1)
        [ -n "$PALISADE_URL" ] && return 0
        kill -0 "$PALISADE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "palisade serve did not say where it listens; its log:" >&2
    cat "$dir/palisade.log" >&2
    return 1
}

start_worker() {
    local dir=$1 bin=$2 line
    shift 2
    "$bin" worker --listen 127.0.0.1:0 --data-dir "$dir/data" "$@" \
        > "$dir/worker.out" 2> "$dir/worker.log" &
    WORKER_PID=$!
    WORKER_ID=
    WORKER_URL=
    for _ in $(seq 1 200); do
        # palisade worker <id> on http://ADDR
        line=$(sed -n 's/^palisade worker //p' "$dir/worker.out" | head -1)
        if [ -n "$line" ]; then
            WORKER_ID=${line%% on *}
            WORKER_URL=${line##* on }
            return 0
        fi
        kill -0 "$WORKER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "palisade worker did not say where it serves; its log:" >&2
    cat "$dir/worker.log" >&2
    return 1
}

palisade_healthy() {
    local name=$1 dir=$2 status=0
    if grep -q "panicked" "$dir/palisade.log"; then
        echo "$name: the server panicked:" >&2
        grep -A5 "panicked" "$dir/palisade.log" >&2
        status=1
    fi
    kill -0 "$PALISADE_PID" 2>/dev/null || { echo "$name: the server died" >&2; status=1; }
    return $status
}

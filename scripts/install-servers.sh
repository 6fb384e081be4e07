#!/usr/bin/env bash
# Installs the real servers that tests start on loopback ports through
# palisade-testkit's `servers` module: Redis (Debian's `redis-server`, which
# gives redis-server and redis-cli) and Postgres (Debian's `postgresql`, whose
# initdb, pg_ctl and postgres live in /usr/lib/postgresql/<version>/bin).
#
# Idempotent: installs with apt-get only what is missing, and nothing when
# both are there. Starts no server (the packages leave no daemon running on
# these machines: there is no init system); the tests start their own, in
# temporary directories (see ../shared/SERVERS.md for the recipes).
set -euo pipefail
say() { printf '==> %s\n' "$*" >&2; }

have_postgres() {
    local initdb
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [ -x "$initdb" ] && return 0
    done
    return 1
}

missing=()
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    say "redis-server and redis-cli are installed ($(redis-server --version | cut -d' ' -f3))"
else
    missing+=(redis-server)
fi
if have_postgres; then
    say "postgresql is installed ($(echo /usr/lib/postgresql/*/bin))"
else
    missing+=(postgresql)
fi

if [ ${#missing[@]} -eq 0 ]; then
    say "nothing to install"
    exit 0
fi

say "installing ${missing[*]} with apt-get"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
    { echo "redis-server or redis-cli is still missing after apt-get install" >&2; exit 1; }
have_postgres || { echo "no /usr/lib/postgresql/*/bin/initdb after apt-get install" >&2; exit 1; }
say "installed ${missing[*]}"

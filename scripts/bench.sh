#!/usr/bin/env bash
# Every figure of BENCHMARKS.md, measured as users run it, by one command:
#
#   scripts/bench.sh                    # all sections, markdown on stdout
#   scripts/bench.sh --write            # ... and written into BENCHMARKS.md
#   scripts/bench.sh --write ratios soak
#                                       # only those sections
#
# Sections (scripts/bench.py says what each measures): process, ratios,
# costs, criterion, service, load, uploads, soak, python, distributed, live,
# takeover. Each is
# written between its own markers in BENCHMARKS.md with the command, date, commit and machine,
# so the file is never edited by hand. RUNS (default 5) sets the runs per
# whole-process figure, SOAK_SECONDS (default 600) the soak's length.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
say() { printf '==> %s\n' "$*" >&2; }

say "building the guests and the release binary"
scripts/build-guests.sh >/dev/null
cargo build --release -j2 -p palisade --bin palisade >&2
say "installing the Python peers (backtesting.py, pandas)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/crosscheck/requirements.txt
exec python3 scripts/bench.py "$@"

#!/usr/bin/env bash
# Every benchmark, ours and the peers', in one table:
#   bash tests/perf/run.sh [--quick] [--no-peers] [--only W1,W3]
# Sets up its own environment first: .venv-perf (git-ignored) with durable and
# the peers of tests/perf/requirements-peers.txt. A peer that cannot be
# installed is reported as "not run" in the table; the run still exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${PERF_VENV:-.venv-perf}
python=${PYTHON:-python3}
log="$venv/install.log"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ tests/perf/requirements-peers.txt -nt "$stamp" ]; then
    echo "setting up $venv (log: $log) ..." >&2
    "$venv/bin/pip" install -e . >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
    ok=1
    while read -r requirement; do
        case "$requirement" in "#"* | "") continue ;; esac
        if ! "$venv/bin/pip" install "$requirement" >>"$log" 2>&1; then
            echo "could not install $requirement (see $log); its figures will say 'not run'" >&2
            ok=0
        fi
    done <tests/perf/requirements-peers.txt
    if [ "$ok" = 1 ]; then touch "$stamp"; fi
fi
exec "$venv/bin/python" -m tests.perf "$@"

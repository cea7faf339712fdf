#!/usr/bin/env bash
# A/B of two vermilion installs, alternating on one Redis so that a slow phase of the
# machine hits both: drain (and the vermilion-observed variant on the new one) and the
# server's footprint. Prints one JSON line per run; compare medians of each label.
#
#   bash benchmarks/ab.sh OLD_PYTHON NEW_PYTHON [REPS]
#   OBSERVED=1 bash benchmarks/ab.sh OLD_PYTHON NEW_PYTHON [REPS]
#
# OBSERVED=1 measures the drain only, plain and with each observability variant
# (vermilion-metrics, vermilion-observed, vermilion-observed-10pct; see _libs.py for
# their SDK configuration) on both installs, in turn within each repetition.
# Each Python must have vermilion installed (e.g. a venv with `pip install <old commit>`),
# with the test extra (prometheus-client, opentelemetry-sdk) for the variants.
set -euo pipefail
OLD=$1 NEW=$2 REPS=${3:-5}
PORT=${PORT:-6391}
cd "$(dirname "$0")"
if redis-cli -p "$PORT" ping >/dev/null 2>&1; then echo "port $PORT is in use" >&2; exit 1; fi
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
sleep 0.5
URL=redis://127.0.0.1:$PORT/0
run() { # label python measure lib args...
  local label=$1 py=$2 measure=$3 lib=$4
  shift 4
  redis-cli -p "$PORT" FLUSHALL >/dev/null
  redis-cli -p "$PORT" CONFIG RESETSTAT >/dev/null
  echo "$label $measure $("$py" "$measure" --lib "$lib" --url "$URL" "$@" 2>/dev/null | tail -1)"
}
if [ "${OBSERVED:-0}" = 1 ]; then
  for _ in $(seq "$REPS"); do
    for lib in vermilion vermilion-metrics vermilion-observed vermilion-observed-10pct; do
      run "old:$lib" "$OLD" drain.py "$lib" --n 20000
      run "new:$lib" "$NEW" drain.py "$lib" --n 20000
    done
  done
  exit 0
fi
for _ in $(seq "$REPS"); do
  run old "$OLD" drain.py vermilion --n 20000
  run new "$NEW" drain.py vermilion --n 20000
  run observed "$NEW" drain.py vermilion-observed --n 20000
  run bare "$NEW" drain.py bare-list --n 20000
done
for _ in 1 2 3; do
  run old "$OLD" footprint.py vermilion --idle-window 5 --idle-settle 2
  run new "$NEW" footprint.py vermilion --idle-window 5 --idle-settle 2
  run bare "$NEW" footprint.py bare-list --idle-window 5 --idle-settle 2
done
run new-idle "$NEW" footprint.py vermilion --idle-window 60

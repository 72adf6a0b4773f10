#!/usr/bin/env bash
# Nightly retrain: train a challenger on the current data window, evaluate it against the model
# in production on the newest held-out rows, and swap it in only when it passes the gate.
#
#   recipes/nightly-retrain.sh DATA...        # DATA: the window's tables (Parquet/CSV, globs)
#
# crontab (02:30 UTC every night; the lock makes an overrunning night skip, never overlap):
#
#   30 2 * * *  cd /srv/churn && MLSYS=/srv/churn/.venv/bin/mlsys NIGHTLY_HOME=/srv/churn/state recipes/nightly-retrain.sh 'data/snapshots/*.parquet'
#
# State lives in $NIGHTLY_HOME:
#   current.mlsys      the model in production; replaced only by an atomic mv (readers never see
#                      a half-written file), the one it replaced is kept as previous.mlsys
#   runs/<stamp>/      each run's tables, challenger, JSON reports and HTML evaluation
#   logs/nightly-<YYYY-MM-DD>.log   everything a run prints, appended per day
#   nightly.lock       flock(1) lock: a second run while one is going exits 5 (busy)
#
# The data is split by time: train (oldest), valid (early stopping), test (the newest rows).
# Both models are scored on test; the challenger must meet $REQUIRE and must not be worse than
# the current model on $METRIC (minus $MARGIN). Exit status is mlsys's: 0 swapped (or first
# model installed), 4 the gate failed and current.mlsys is untouched, 3 bad input, 5 busy.
#
# Settings (environment): MLSYS, NIGHTLY_HOME, TARGET, TIME, MODEL, PARAMS (a tune params
# file), SEED, RATIOS, REQUIRE (space-separated gates), METRIC, MARGIN, KEEP_RUNS, PYTHON.

set -euo pipefail

MLSYS=${MLSYS:-mlsys}
NIGHTLY_HOME=${NIGHTLY_HOME:-nightly}
TARGET=${TARGET:-churned}
TIME=${TIME:-snapshot_date}
MODEL=${MODEL:-xgboost}
PARAMS=${PARAMS:-}
SEED=${SEED:-7}
RATIOS=${RATIOS:-0.7,0.15,0.15}
REQUIRE=${REQUIRE:-auc>=0.70}
METRIC=${METRIC:-auc}
MARGIN=${MARGIN:-0}
KEEP_RUNS=${KEEP_RUNS:-14}
PYTHON=${PYTHON:-python3}

if [ $# -eq 0 ]; then
  echo "usage: nightly-retrain.sh DATA...  (see the comment at the top of this script)" >&2
  exit 2
fi

mkdir -p "$NIGHTLY_HOME/logs" "$NIGHTLY_HOME/runs"
stamp=$(date -u +%Y%m%dT%H%M%SZ)-$$
log="$NIGHTLY_HOME/logs/nightly-$(date -u +%F).log"

# Take the lock before anything is written, so an overlapping run changes nothing.
exec 9>"$NIGHTLY_HOME/nightly.lock"
if ! flock -n 9; then
  echo "nightly-retrain: another run holds $NIGHTLY_HOME/nightly.lock; exiting" | tee -a "$log" >&2
  exit 5
fi

# From here on everything goes to the dated log (cron mails nothing unless this script fails).
exec >>"$log" 2>&1
say() { echo "[$(date -u +%FT%TZ)] nightly-retrain: $*"; }
trap 'status=$?; [ $status -eq 0 ] || say "failed with exit $status"' EXIT

run="$NIGHTLY_HOME/runs/$stamp"
mkdir -p "$run"
say "run $run on: $*"

"$MLSYS" ingest "$@" --dedupe -o "$run/all.parquet" --report "$run/ingest.json"
"$MLSYS" split "$run/all.parquet" --by "time:$TIME" --ratios "$RATIOS" --target "$TARGET" --strict \
  --seed "$SEED" -o "$run" --report "$run/split.json"
"$MLSYS" train "$run/train.parquet" --valid "$run/valid.parquet" --target "$TARGET" --model "$MODEL" \
  ${PARAMS:+--params "$PARAMS"} --seed "$SEED" -o "$run/challenger.mlsys" --report "$run/train.json"

read -r -a floors <<<"$REQUIRE"
gates=()
for gate in "${floors[@]}"; do gates+=(--require "$gate"); done

# Lower is better for the loss-like metrics; the champion's score on the same newest rows
# becomes one more --require gate, so mlsys itself decides and exits 4.
case "$METRIC" in
  rmse|mae|mape|log_loss|brier|ece) op="<=" ;;
  *) op=">=" ;;
esac
if [ -f "$NIGHTLY_HOME/current.mlsys" ]; then
  "$MLSYS" evaluate "$NIGHTLY_HOME/current.mlsys" "$run/test.parquet" --target "$TARGET" --seed "$SEED" \
    --report "$run/current.json" >/dev/null
  bar=$("$PYTHON" - "$run/current.json" "$METRIC" "$MARGIN" "$op" <<'PY'
import json, sys
report, metric, margin, op = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
value = json.load(open(report))["metrics"][metric]
print(repr(value - margin if op == ">=" else value + margin))
PY
)
  say "current model: $METRIC=$bar (with margin $MARGIN); the challenger must reach it"
  gates+=(--require "$METRIC$op$bar")
else
  say "no current model yet: the challenger only has to pass: $REQUIRE"
fi

status=0
"$MLSYS" evaluate "$run/challenger.mlsys" "$run/test.parquet" --target "$TARGET" --seed "$SEED" \
  "${gates[@]}" --html "$run/evaluate.html" --report "$run/evaluate.json" || status=$?
if [ $status -ne 0 ]; then
  say "challenger rejected (mlsys evaluate exited $status); current.mlsys unchanged; report: $run/evaluate.json"
  exit $status
fi

# Swap: copy next to the target first (same filesystem), then rename over it atomically.
cp "$run/challenger.mlsys" "$NIGHTLY_HOME/.current.mlsys.tmp"
if [ -f "$NIGHTLY_HOME/current.mlsys" ]; then
  cp -p "$NIGHTLY_HOME/current.mlsys" "$NIGHTLY_HOME/.previous.mlsys.tmp"
  mv -f "$NIGHTLY_HOME/.previous.mlsys.tmp" "$NIGHTLY_HOME/previous.mlsys"
fi
mv -f "$NIGHTLY_HOME/.current.mlsys.tmp" "$NIGHTLY_HOME/current.mlsys"
say "swapped in $run/challenger.mlsys as $NIGHTLY_HOME/current.mlsys"

# Keep the newest $KEEP_RUNS run directories (stamps sort by time).
mapfile -t old < <(find "$NIGHTLY_HOME/runs" -mindepth 1 -maxdepth 1 -type d | sort | head -n "-$KEEP_RUNS")
[ ${#old[@]} -eq 0 ] || rm -rf -- "${old[@]}"

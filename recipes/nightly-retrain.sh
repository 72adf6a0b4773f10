#!/usr/bin/env bash
# Nightly retrain with the model registry: `mlsys retrain` decides whether the model needs
# retraining (triggers), retrains it from the champion's recipe on the newest data window, and
# promotes the challenger only when it beats the champion on the newest held-out rows.
#
#   recipes/nightly-retrain.sh DATA...        # DATA: the labelled tables (Parquet/CSV, globs)
#
# crontab (02:30 UTC every night; an overrunning night makes the next one skip, never overlap):
#
#   30 2 * * *  cd /srv/churn && MLSYS=/srv/churn/.venv/bin/mlsys REGISTRY=/srv/churn/models NIGHTLY_HOME=/srv/churn/state recipes/nightly-retrain.sh 'data/snapshots/*.parquet'
#
# State:
#   $REGISTRY                       the model registry (mlsys registry list $REGISTRY); serve
#                                   follows its champion with `mlsys serve --registry $REGISTRY`
#   $NIGHTLY_HOME/logs/nightly-<YYYY-MM-DD>.log   everything a run prints, appended per day
#   $NIGHTLY_HOME/reports/<stamp>.json            each run's retrain report (the newest KEEP_REPORTS)
#   $NIGHTLY_HOME/nightly.lock      flock(1): a second run while one is going exits 5 at once
#                                   (mlsys also locks the registry itself, against any other writer)
#
# Exit status (mlsys retrain's, so a wrapper can branch; cron mails only what reaches stderr,
# i.e. failures): 0 retrained and promoted, 10 not needed (no trigger fired), 11 challenger
# rejected (kept in the registry with the reason; the champion serves on), 2 usage, 3 bad input
# (a changed schema, too few rows, a tampered champion), 5 busy.
#
# Settings (environment): MLSYS, REGISTRY (default ./models), NIGHTLY_HOME (default ./nightly),
# TIME (the time column, default snapshot_date), WINDOW (default 180d), TRIGGERS (space-separated,
# default "schedule:7d performance:auc<0.75"; add "drift" to retrain on drift), REQUIRE
# (space-separated gates, default "auc>=0.70"), MIN_GAIN (default 0), STATEFUL (1: warm start),
# WAIT (seconds to wait for the registry lock, default 0), KEEP_REPORTS (default 30), and for the
# first run of an empty registry TARGET (default churned), MODEL (default xgboost) or RECIPE (a
# model bundle or tune's params.json).

set -euo pipefail

MLSYS=${MLSYS:-mlsys}
REGISTRY=${REGISTRY:-models}
NIGHTLY_HOME=${NIGHTLY_HOME:-nightly}
TIME=${TIME:-snapshot_date}
WINDOW=${WINDOW:-180d}
TRIGGERS=${TRIGGERS:-schedule:7d performance:auc<0.75}
REQUIRE=${REQUIRE:-auc>=0.70}
MIN_GAIN=${MIN_GAIN:-0}
STATEFUL=${STATEFUL:-0}
WAIT=${WAIT:-0}
KEEP_REPORTS=${KEEP_REPORTS:-30}
TARGET=${TARGET:-churned}
MODEL=${MODEL:-xgboost}
RECIPE=${RECIPE:-}

if [ $# -eq 0 ]; then
  echo "usage: nightly-retrain.sh DATA...  (see the comment at the top of this script)" >&2
  exit 2
fi

mkdir -p "$NIGHTLY_HOME/logs" "$NIGHTLY_HOME/reports"
stamp=$(date -u +%Y%m%dT%H%M%SZ)-$$
log="$NIGHTLY_HOME/logs/nightly-$(date -u +%F).log"

# Take the lock before anything is written, so an overlapping run changes nothing.
exec 9>"$NIGHTLY_HOME/nightly.lock"
if ! flock -n 9; then
  echo "nightly-retrain: another run holds $NIGHTLY_HOME/nightly.lock; exiting" | tee -a "$log" >&2
  exit 5
fi

# From here on everything goes to the dated log; a failure is also said on stderr (cron mails it).
exec 3>&2 >>"$log" 2>&1
say() { echo "[$(date -u +%FT%TZ)] nightly-retrain: $*"; }

args=(--registry "$REGISTRY" --time-col "$TIME" --data-window "$WINDOW" --min-gain "$MIN_GAIN" --wait "$WAIT"
      --report "$NIGHTLY_HOME/reports/$stamp.json")
for data in "$@"; do args+=(--data "$data"); done
read -r -a triggers <<<"$TRIGGERS"
for t in "${triggers[@]}"; do args+=(--trigger "$t"); done
read -r -a gates <<<"$REQUIRE"
for g in "${gates[@]}"; do args+=(--require "$g"); done
[ "$STATEFUL" = 1 ] && args+=(--stateful)
if [ ! -f "$REGISTRY/champion.json" ]; then
  # An empty registry: the first champion comes from a recipe, or from train's flags.
  if [ -n "$RECIPE" ]; then args+=(--recipe "$RECIPE"); else args+=(--target "$TARGET" --model "$MODEL"); fi
fi

say "retrain $REGISTRY on: $*"
status=0
"$MLSYS" retrain "${args[@]}" || status=$?
case $status in
  0) say "retrained: the challenger is the champion now ($(cat "$REGISTRY/champion.json"))" ;;
  10) say "not needed: no trigger fired; report $NIGHTLY_HOME/reports/$stamp.json" ;;
  11) say "challenger rejected and kept in the registry; the champion serves on; report $NIGHTLY_HOME/reports/$stamp.json" ;;
  5) say "busy: another writer holds the registry lock (set WAIT=SECONDS to wait for it)" ;;
  *) say "failed with exit $status"
     echo "nightly-retrain: mlsys retrain exited $status; see $log" >&3 ;;
esac

# Keep the newest $KEEP_REPORTS reports (stamps sort by time).
mapfile -t old < <(find "$NIGHTLY_HOME/reports" -mindepth 1 -maxdepth 1 -name '*.json' | sort | head -n "-$KEEP_REPORTS")
[ ${#old[@]} -eq 0 ] || rm -f -- "${old[@]}"
exit $status

#!/usr/bin/env bash
# One command from a fresh clone to a finished lifecycle on the sample data:
#
#   bash scripts/quickstart.sh          # or: make quickstart
#
# Creates .venv (if missing), installs torch 2.13.0 (CPU wheels) and then mlsys with its nn
# and test extras, editable, and runs recipes/lifecycle.mk with that mlsys. OUT, SEED and
# BUDGET pass through to the recipe; PYTHON picks the interpreter that creates .venv.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-build/lifecycle}
SEED=${SEED:-7}
BUDGET=${BUDGET:-20s}

if [ ! -x .venv/bin/python ]; then
  echo "quickstart: creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
# torch 2.13.0 first, as .ci/run does: the nn extra's bare `torch>=2.2` would otherwise pull the
# newest build with gigabytes of CUDA libraries.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet 'torch==2.13.0'
.venv/bin/python -m pip install --quiet -e '.[nn,test]'
.venv/bin/mlsys --version

make -f recipes/lifecycle.mk MLSYS=.venv/bin/mlsys OUT="$OUT" SEED="$SEED" BUDGET="$BUDGET"

cat <<DONE

quickstart: the lifecycle finished; outputs are in $OUT/
  data/        ingested table, rejected rows, train/valid/test split, their reports
  features/    fitted feature bundles (trees, linear)
  models/      tuned params (tune.html), xgboost, linear and the ensemble bundles
  evaluate/    the gate's report: evaluate.json and evaluate.html (open it in a browser)
  deploy/      compressed.mlsys, model.onnx, predictions.parquet, info.json, lineage.json
Try:  .venv/bin/mlsys info $OUT/deploy/model.onnx
DONE

# The offline lifecycle on the churn sample, as real file targets: Make's timestamps decide
# what reruns. Touch the raw CSV and everything downstream is rebuilt; run it twice and the
# second run does nothing.
#
#   make -f recipes/lifecycle.mk                         # mlsys on PATH, outputs in build/lifecycle
#   make -f recipes/lifecycle.mk MLSYS=.venv/bin/mlsys OUT=/tmp/run SEED=1 BUDGET=1m
#   make -f recipes/lifecycle.mk gate                    # stop after the evaluate gate
#   make -f recipes/lifecycle.mk clean
#   mlsys registry list build/lifecycle/continual/models   # the registry the last step keeps
#
# The variables are listed below and in recipes/README.md.
#
# Every step writes its JSON report (--report) next to its outputs. A failed evaluate gate
# stops the run with mlsys's exit status in the log, keeps the failing report as
# evaluate.failed.json/.html, and leaves no target behind, so the next run evaluates again
# instead of trusting a model that did not pass.
#
# Grouped targets (&:) need GNU Make >= 4.3.

MLSYS ?= mlsys
OUT ?= build/lifecycle
SEED ?= 7
BUDGET ?= 20s

RAW ?= sample_data/churn_raw.csv
TARGET ?= churned
TIME ?= snapshot_date
ID ?= customer_id
GROUP ?=
TRIALS ?=
RATIOS ?= 0.7,0.15,0.15
SLICES ?= plan contract
REQUIRE ?= auc>=0.70 slice_min:auc>=0.55
ENSEMBLE ?= average
MAX_DROP ?= 0.01
TECHNIQUES ?=
DRIFT_EXCLUDE ?= $(TIME) signup_date tenure_months total_charges

MONITOR := $(OUT)/monitor
CONTINUAL := $(OUT)/continual
REGISTRY ?= $(CONTINUAL)/models
DATA := $(OUT)/data
FEATURES := $(OUT)/features
MODELS := $(OUT)/models
EVAL := $(OUT)/evaluate
DEPLOY := $(OUT)/deploy

# Each recipe runs in one shell with -e and pipefail, so a failing mlsys fails the target.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.ONESHELL:
.DELETE_ON_ERROR:
.SUFFIXES:

.PHONY: all gate clean
all: $(DEPLOY)/predictions.parquet $(DEPLOY)/info.json $(DEPLOY)/lineage.json $(MONITOR)/drift.json \
  $(CONTINUAL)/retrain.json

# Everything up to and including the evaluate gate: `make -f recipes/lifecycle.mk gate`.
gate: $(EVAL)/evaluate.json

# ingest: bad lines go to the rejects table with their reason; the load goes on.
$(DATA)/all.parquet $(DATA)/rejects.parquet $(DATA)/ingest.json &: $(RAW)
	$(MLSYS) ingest $(RAW) --rejects $(DATA)/rejects.parquet --dedupe \
	  -o $(DATA)/all.parquet --report $(DATA)/ingest.json

# split by time: no future row in train. --strict refuses duplicate rows across the parts and
# holdout rows older than train. A customer has one row per month, so returning customers are
# in several parts, exactly as they will be in production: on the churn sample a group check
# finds 905 customers in two parts, and with --strict refuses the split (exit 3). The time
# split is the leakage boundary here; set GROUP=customer_id for data with one row per entity
# (or to see the overlap: it then fails the run).
$(DATA)/train.parquet $(DATA)/valid.parquet $(DATA)/test.parquet $(DATA)/split.json &: $(DATA)/all.parquet
	$(MLSYS) split $(DATA)/all.parquet --by time:$(TIME) --ratios $(RATIOS) --target $(TARGET) \
	  $(if $(GROUP),--group $(GROUP)) --strict --seed $(SEED) -o $(DATA) --report $(DATA)/split.json

# featurize on train only, one bundle per preset: trees (xgboost) and linear.
$(FEATURES)/trees.mlsys $(FEATURES)/linear.mlsys: $(FEATURES)/%.mlsys: $(DATA)/train.parquet $(DATA)/valid.parquet
	$(MLSYS) featurize $(DATA)/train.parquet --target $(TARGET) --preset $* --id $(ID) --drop $(TIME) \
	  --check $(DATA)/valid.parquet --seed $(SEED) -o $@ --report $(FEATURES)/$*.json

# tune xgboost within the time budget on the validation rows (the time column left out, as in
# featurize). A binding time budget makes the result depend on the machine's speed; for a run
# that is reproducible anywhere, cap the trials with a budget that does not bind
# (TRIALS=5 BUDGET=10m): the same seed then gives the same params, models and predictions.
$(MODELS)/params.json $(MODELS)/tune.json $(MODELS)/tune.html &: $(DATA)/train.parquet $(DATA)/valid.parquet
	$(MLSYS) tune $(DATA)/train.parquet --valid $(DATA)/valid.parquet --target $(TARGET) --model xgboost \
	  --drop $(TIME) --timeout $(BUDGET) $(if $(TRIALS),--trials $(TRIALS)) --seed $(SEED) \
	  -o $(MODELS)/params.json --html $(MODELS)/tune.html --report $(MODELS)/tune.json

$(MODELS)/xgboost.mlsys: $(DATA)/train.parquet $(DATA)/valid.parquet $(FEATURES)/trees.mlsys $(MODELS)/params.json
	$(MLSYS) train $(DATA)/train.parquet --valid $(DATA)/valid.parquet --target $(TARGET) \
	  --features $(FEATURES)/trees.mlsys --params $(MODELS)/params.json --seed $(SEED) \
	  -o $@ --report $(MODELS)/xgboost.json

$(MODELS)/linear.mlsys: $(DATA)/train.parquet $(DATA)/valid.parquet $(FEATURES)/linear.mlsys
	$(MLSYS) train $(DATA)/train.parquet --valid $(DATA)/valid.parquet --target $(TARGET) --model linear \
	  --features $(FEATURES)/linear.mlsys --seed $(SEED) -o $@ --report $(MODELS)/linear.json

# The combiner is fit on the validation rows, never on the members' training rows.
$(MODELS)/ensemble.mlsys: $(MODELS)/xgboost.mlsys $(MODELS)/linear.mlsys $(DATA)/valid.parquet
	$(MLSYS) ensemble $(MODELS)/xgboost.mlsys $(MODELS)/linear.mlsys --data $(DATA)/valid.parquet \
	  --method $(ENSEMBLE) --seed $(SEED) -o $@ --report $(MODELS)/ensemble.json

# The gate: test metrics with intervals, slices and --require. Nothing downstream is built
# from a model that fails it.
$(EVAL)/evaluate.json $(EVAL)/evaluate.html &: $(MODELS)/ensemble.mlsys $(DATA)/test.parquet
	rm -f $(EVAL)/evaluate.failed.json $(EVAL)/evaluate.failed.html
	status=0
	$(MLSYS) evaluate $(MODELS)/ensemble.mlsys $(DATA)/test.parquet --target $(TARGET) \
	  $(foreach s,$(SLICES),--slice $(s)) $(foreach r,$(REQUIRE),--require '$(r)') --seed $(SEED) \
	  --html $(EVAL)/evaluate.html --report $(EVAL)/evaluate.json || status=$$?
	if [ $$status -ne 0 ]; then
	  [ ! -f $(EVAL)/evaluate.json ] || mv $(EVAL)/evaluate.json $(EVAL)/evaluate.failed.json
	  [ ! -f $(EVAL)/evaluate.html ] || mv $(EVAL)/evaluate.html $(EVAL)/evaluate.failed.html
	  echo "lifecycle: mlsys evaluate exited $$status; report kept as $(EVAL)/evaluate.failed.json" >&2
	  exit $$status
	fi

# compress measures every candidate on the validation rows (students learn from the train rows)
# and keeps the smallest within MAX_DROP, or the ensemble itself. TECHNIQUES limits the search
# (e.g. TECHNIQUES=pruning for a quick run); empty tries them all.
$(DEPLOY)/compressed.mlsys $(DEPLOY)/compress.json $(DEPLOY)/compress.html &: $(MODELS)/ensemble.mlsys $(DATA)/train.parquet $(DATA)/valid.parquet $(EVAL)/evaluate.json
	$(MLSYS) compress $(MODELS)/ensemble.mlsys --data $(DATA)/valid.parquet --transfer $(DATA)/train.parquet \
	  --max-metric-drop $(MAX_DROP) $(foreach t,$(TECHNIQUES),--technique $(t)) --seed $(SEED) \
	  -o $(DEPLOY)/compressed.mlsys --html $(DEPLOY)/compress.html --report $(DEPLOY)/compress.json

# export refuses a graph that disagrees with the bundle; parity is checked on real test rows.
$(DEPLOY)/model.onnx $(DEPLOY)/export.json &: $(DEPLOY)/compressed.mlsys $(DATA)/test.parquet
	$(MLSYS) export $(DEPLOY)/compressed.mlsys --data $(DATA)/test.parquet --seed $(SEED) \
	  -o $(DEPLOY)/model.onnx --report $(DEPLOY)/export.json

# Batch predictions from the ONNX file alone, the way a serving job would make them.
$(DEPLOY)/predictions.parquet: $(DEPLOY)/model.onnx $(DATA)/test.parquet
	$(MLSYS) predict $(DEPLOY)/model.onnx $(DATA)/test.parquet --keep $(ID) -o $@ \
	  --report $(DEPLOY)/predict.json

$(DEPLOY)/info.json: $(DEPLOY)/model.onnx
	$(MLSYS) info $(DEPLOY)/model.onnx --report $@ > /dev/null

# The predictions' lineage, back through split and ingest to the raw file's sha256.
$(DEPLOY)/lineage.json: $(DEPLOY)/predictions.parquet
	$(MLSYS) info $(DEPLOY)/predictions.parquet --report $@ > /dev/null

# Drift of the newest rows (test) from the training rows, as a report (the CI workflow makes it a
# gate with --fail-on-drift). DRIFT_EXCLUDE: columns that move with time by construction.
$(MONITOR)/drift.json $(MONITOR)/drift.html &: $(DATA)/train.parquet $(DATA)/test.parquet
	$(MLSYS) drift $(DATA)/test.parquet --reference $(DATA)/train.parquet $(foreach c,$(DRIFT_EXCLUDE),--exclude $(c)) \
	  --html $(MONITOR)/drift.html --report $(MONITOR)/drift.json > /dev/null

# The model registry (what `mlsys serve --registry` follows): a retrain decision with the tuned
# xgboost recipe on the whole table, whenever the table or the recipe's model changes, once the
# ensemble passed its gate. The newest rows are held out; the challenger is promoted only when it
# passes the same gates and does not lose to the champion. Promoted (0), not needed (10) and
# rejected (11) are all outcomes: the report is the target either way.
$(CONTINUAL)/retrain.json: $(DATA)/all.parquet $(MODELS)/xgboost.mlsys $(EVAL)/evaluate.json
	status=0
	$(MLSYS) retrain --registry $(REGISTRY) --data $(DATA)/all.parquet --time-col $(TIME) \
	  --recipe $(MODELS)/xgboost.mlsys $(foreach s,$(SLICES),--slice $(s)) $(foreach r,$(REQUIRE),--require '$(r)') \
	  --seed $(SEED) --report $@ > /dev/null || status=$$?
	case $$status in
	  0|10|11) ;;
	  *) echo "lifecycle: mlsys retrain exited $$status" >&2; exit $$status ;;
	esac

clean:
	rm -rf $(OUT)

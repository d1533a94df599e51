# The two commands: `make demo` and `make test`. Each creates or refreshes .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: venv demo test test-all bench lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# Re-resolves core + the serve/tfds/plots/test extras in a throwaway venv and pins the result.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e ".[test]"; \
	{ sed -n '/^#/p' requirements.lock; "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; } \
	  > "$$tmp/lock"; \
	mv "$$tmp/lock" requirements.lock

# The funnel end to end with demo-sized training (configs/*.py:demo); benchmarks run the full configs.
demo: $(STAMP)
	@echo "== make demo: MovieLens-100K -> two-tower retrieval + DLRM ranker -> export + index -> serve"
	@echo "== DEMO-SIZED training (configs/*.py:demo): fewer steps than the full configs, which the benchmarks run"
	$(VENV)/bin/jaxrec data prepare --dataset movielens-100k --out $(DEMO_DIR)/ml-100k --overwrite
	$(VENV)/bin/jaxrec data stats $(DEMO_DIR)/ml-100k
	$(VENV)/bin/jaxrec data show $(DEMO_DIR)/ml-100k --users 2 --tokens 5
	rm -rf $(DEMO_DIR)/sasrec $(DEMO_DIR)/two_tower $(DEMO_DIR)/dlrm $(DEMO_DIR)/export
	$(VENV)/bin/jaxrec train --config configs/movielens_two_tower.py:demo --workdir $(DEMO_DIR)/two_tower \
	  --config.data.dir=$(DEMO_DIR)/ml-100k
	$(VENV)/bin/jaxrec train --config configs/movielens_dlrm.py:demo --workdir $(DEMO_DIR)/dlrm \
	  --config.data.dir=$(DEMO_DIR)/ml-100k
	$(VENV)/bin/jaxrec export --workdir $(DEMO_DIR)/two_tower --ranker $(DEMO_DIR)/dlrm \
	  --out $(DEMO_DIR)/export
	$(PY) -m serving.demo --export $(DEMO_DIR)/export --user 5
	@$(PY) -c 'import json; r = {m: json.load(open("$(DEMO_DIR)/" + m + "/results.json")) for m in ("two_tower", "dlrm")}; \
	  print("\nDEMO-SIZED training (configs/*.py:demo), validation split, best checkpoint:"); \
	  print("  two-tower retrieval  NDCG@10   %.4f  (step %d of %d)" % (r["two_tower"]["valid"]["ndcg@10"], r["two_tower"]["best_step"], r["two_tower"]["last_step"])); \
	  print("  DLRM ranker          click AUC %.4f  (step %d of %d)" % (r["dlrm"]["valid"]["click/auc"], r["dlrm"]["best_step"], r["dlrm"]["last_step"])); \
	  print("Full-sized runs and their test numbers: README.md (Headline results), docs/benchmarks.md.")'

# The fast tier: everything but the tests marked `slow` (pyproject.toml lists the markers).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" tests

# Every test, the long end-to-end runs too.
test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/sasrec_time_to_quality.py
	$(PY) benchmarks/sequential_quality.py
	$(PY) benchmarks/forward_in_time.py
	$(PY) benchmarks/retrieval_quality.py
	$(PY) benchmarks/cold_start.py
	$(PY) benchmarks/ranking_quality.py
	$(PY) benchmarks/embedding_update.py
	$(PY) benchmarks/serving_latency.py
	$(PY) benchmarks/foundation_quality.py
	$(PY) benchmarks/foundation_long_context.py
	$(PY) benchmarks/foundation_scaling.py
	$(PY) benchmarks/foundation_incremental.py
	$(PY) benchmarks/foundation_features.py
	$(PY) benchmarks/foundation_sampled_step.py
	$(PY) benchmarks/cold_start_ceiling.py
	$(PY) benchmarks/serving_foundation_latency.py
	$(PY) benchmarks/beyond_accuracy.py
	$(PY) benchmarks/slate_ope.py
	$(PY) benchmarks/ope_accuracy.py
	$(VENV)/bin/jaxrec train --config configs/synthetic_two_tower.py --workdir workdirs/synthetic-two-tower
	$(PY) benchmarks/scann_vs_exact.py --workdir workdirs/synthetic-two-tower
	$(PY) benchmarks/scann_vs_exact.py --synthetic-clusters --name scann_vs_exact_clusters

clean:
	rm -rf $(VENV) $(DEMO_DIR)

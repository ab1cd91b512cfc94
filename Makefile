# Both targets install what they need into .venv first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup run test check test-reference bench demo
setup:
	bash scripts/setup.sh

# The main job on the embedded default: the whole pipeline on the bundled sample assets, into out/.
run: setup
	$(PY) jobs/run_all.py --out out

# Both test targets run on TEST_WORKERS test processes, each taking whole files, the longest first
# (TEST_WORKERS=0: one process; docs/running.md).
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

# Every test this machine can run (docs/running.md: the tiers and their durations on 2 CPU cores).
test: setup
	$(PYTEST) $(PYTEST_ARGS)

# The inner loop after each change: units, contracts, layout, the fast Serve and data tests; no Ray,
# no learning runs, no browser (docs/running.md).
check: setup
	$(PYTEST) -m "not slow and not ray and not cluster and not gpu" $(PYTEST_ARGS)

# The metrics against their reference libraries (torchvision's RAFT, torchmetrics' LPIPS), in
# .venv-reference: PyPI's torch with its torchvision, which the CPU build of torch cannot have.
test-reference:
	bash scripts/setup.sh --reference
	.venv-reference/bin/python -m pytest tests/test_metrics.py $(PYTEST_ARGS)

# The demo page (http://127.0.0.1:8000/) on the models `make run` trains (it runs first when they are missing).
DEMO_MODEL ?= out/runs/finetune/final_model
DEMO_LGM ?= out/runs/reconstructor/final_model
demo: setup
	@test -d $(DEMO_MODEL) || $(MAKE) run
	$(PY) jobs/serve.py --model-dir $(DEMO_MODEL) --reconstructor $(DEMO_LGM) --port 8000

bench: setup
	$(PY) benchmarks/render.py
	$(PY) benchmarks/ray_overhead.py
	$(PY) benchmarks/gaussians.py
	$(PY) benchmarks/diffusion_memory.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/sampler.py
	$(PY) benchmarks/full_size_costs.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/evaluation_cost.py
	$(PY) benchmarks/cli_help.py
	if nvidia-smi -L >/dev/null 2>&1; then $(PY) benchmarks/gpu_check.py; fi

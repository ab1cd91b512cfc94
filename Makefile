# Both targets install what they need into .venv first (scripts/setup.sh).
PY := .venv/bin/python

.PHONY: setup run test bench
setup:
	bash scripts/setup.sh

# The main job on the embedded default: render the bundled sample assets into out/.
run: setup
	mkdir -p out
	$(PY) jobs/render.py --input assets --output out/shards --resolution 128 --samples 16 \
		--mlflow-uri sqlite:///out/mlflow.db

# The test suite (about N minutes on 2 CPU cores; see README).
test: setup
	$(PY) -m pytest -m "not benchmark" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/render.py

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: install demo test test-slow bench bench-bc-targets clean

# The lock installs everything but imitation, whose 1.0.1 release pins an old
# gymnasium/SB3; it goes in with --no-deps, then this package with --no-deps.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r constraints.txt
	$(PY) -m pip install --quiet --no-deps imitation==1.0.1
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

QUICK := demos/quickstart
LAM := $(VENV)/bin/lam-robot

# The main job on its small default task (nav-umaze): record expert demos, inspect them,
# behaviour-clone a Transformer on them, evaluate expert and BC policy (with videos).
# Writes into demos/quickstart/; a few minutes on a 2-core CPU.
demo: $(STAMP)
	mkdir -p $(QUICK)
	rm -rf $(QUICK)/nav-umaze.hdf5 $(QUICK)/bc
	$(LAM) record --task nav-umaze --source expert --episodes 50 --seed 0 --out $(QUICK)/nav-umaze.hdf5
	$(LAM) inspect $(QUICK)/nav-umaze.hdf5
	$(LAM) train-bc --data $(QUICK)/nav-umaze.hdf5 --out $(QUICK)/bc --epochs 40 --seed 0
	$(LAM) evaluate --policy expert --task nav-umaze --episodes 50 --video $(QUICK)/expert.mp4 --json $(QUICK)/expert.json
	$(LAM) evaluate --policy $(QUICK)/bc --task nav-umaze --episodes 50 --video $(QUICK)/bc.mp4 --json $(QUICK)/bc.json

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/record_overhead.py
	$(PY) benchmarks/bc_throughput.py

# BC success targets (success vs demos, NLL vs MSE); about an hour on 2 CPU cores, resumable.
bench-bc-targets: $(STAMP)
	$(PY) benchmarks/bc_targets.py

clean:
	rm -rf $(VENV) demos/quickstart

# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export MUJOCO_GL ?= egl

.PHONY: install demo test lint test-slow bench bench-bc-targets bench-finetune-targets bench-goal-targets bench-transfer-targets check-lerobot clean

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

# The main job on its small default task (nav-umaze): record noisy expert demos, behaviour-clone
# a Transformer, fine-tune it with PPO, evaluate expert / BC / fine-tuned (table, videos,
# learning curve). Writes into demos/quickstart/; a few minutes on a 2-core CPU; re-running
# continues where a killed run stopped.
demo: $(STAMP)
	$(LAM) pipeline --task nav-umaze --out $(QUICK)
	$(LAM) inspect $(QUICK)/demos.hdf5

test: $(STAMP)
	$(PY) -m pytest -q

# ruff (lint and format check) and mypy over the package: zero findings expected.
lint: $(STAMP)
	$(VENV)/bin/ruff check lam_robot
	$(VENV)/bin/ruff format --check lam_robot
	$(VENV)/bin/mypy lam_robot

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/record_overhead.py
	$(PY) benchmarks/bc_throughput.py
	$(PY) benchmarks/finetune_speed.py
	$(PY) benchmarks/finetune_profile.py --demos
	$(PY) benchmarks/teleop_latency.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/bc_ranks.py
	$(PY) benchmarks/sac_update_speed.py

# PPO fine-tuning targets (BC then RL vs scratch, 3 seeds, 300k steps); many hours on 2 CPU cores, resumable.
bench-finetune-targets: $(STAMP)
	$(PY) benchmarks/finetune_targets.py

# BC success targets (success vs demos, NLL vs MSE); about an hour on 2 CPU cores, resumable.
bench-bc-targets: $(STAMP)
	$(PY) benchmarks/bc_targets.py

# Goal-reaching (relabelling, play data, pretraining) and transfer targets: hours; both resume.
bench-goal-targets: $(STAMP)
	$(PY) benchmarks/goal_targets.py

bench-transfer-targets: $(STAMP)
	$(PY) benchmarks/transfer_targets.py

# LeRobot's own LeRobotDataset (lerobot==0.4.4 in benchmarks/.work/lerobot-venv, built on first use:
# a few GB, about 6 minutes) opens our exports; every frame against the HDF5 -> benchmarks/results/lerobot_check.json.
check-lerobot: $(STAMP)
	$(PY) benchmarks/lerobot_check.py

clean:
	rm -rf $(VENV) demos/quickstart

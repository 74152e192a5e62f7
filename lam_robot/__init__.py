"""lam-robot: record demonstrations, behaviour-clone a Transformer, fine-tune it with PPO, evaluate in simulation.

The public API is one import::

    import lam_robot as lr

    lr.record(task="nav-umaze", out="demos.hdf5", episodes=20, noise=0.3)
    lr.train_bc(data="demos.hdf5", out="runs/bc", epochs=30)
    lr.finetune(policy="runs/bc", out="runs/ft", steps=20_000, demos="demos.hdf5")
    print(lr.evaluate(task="nav-umaze", policy="runs/ft", episodes=50).success_rate)

Each function takes its config dataclass, keyword fields, or both (fields replace the config's), and is
exactly what the matching `lam-robot` command runs. Names load on first use, so importing is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_task": "lam_robot.tasks",
    "TaskSpec": "lam_robot.tasks",
    "load_policy": "lam_robot.sources",
    "record": "lam_robot.recording",
    "train_bc": "lam_robot.train.bc",
    "pretrain": "lam_robot.train.pretrain",
    "finetune": "lam_robot.train.finetune",
    "evaluate": "lam_robot.evaluation",
    "dagger": "lam_robot.train.dagger",
    "run_pipeline": "lam_robot.pipeline",
    "replay_demos": "lam_robot.replay",
    "DemoFile": "lam_robot.data.dataset",
    "LamRobotError": "lam_robot.errors",
    "RecordConfig": "lam_robot.config",
    "BCConfig": "lam_robot.config",
    "PretrainConfig": "lam_robot.config",
    "FinetuneConfig": "lam_robot.config",
    "EvaluateConfig": "lam_robot.config",
    "DaggerConfig": "lam_robot.config",
    "PipelineConfig": "lam_robot.config",
    "BaselineConfig": "lam_robot.config",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from lam_robot.config import (
        BaselineConfig,
        BCConfig,
        DaggerConfig,
        EvaluateConfig,
        FinetuneConfig,
        PipelineConfig,
        PretrainConfig,
        RecordConfig,
    )
    from lam_robot.data.dataset import DemoFile
    from lam_robot.errors import LamRobotError
    from lam_robot.evaluation import evaluate
    from lam_robot.pipeline import run_pipeline
    from lam_robot.recording import record
    from lam_robot.replay import replay_demos
    from lam_robot.sources import load_policy
    from lam_robot.tasks import TaskSpec, load_task
    from lam_robot.train.bc import train_bc
    from lam_robot.train.dagger import dagger
    from lam_robot.train.finetune import finetune
    from lam_robot.train.pretrain import pretrain


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (torch and MuJoCo load only when needed)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lam_robot' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

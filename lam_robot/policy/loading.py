"""One ``load`` for every checkpoint directory: it reads the recorded ``kind`` and opens it."""

from __future__ import annotations

from pathlib import Path

from lam_robot.errors import LamRobotError
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.policy.checkpoint import TRANSFORMER_KIND, checkpoint_kind
from lam_robot.policy.mlp import MLP_KIND, MlpPolicy, load_mlp
from lam_robot.tasks import TaskSpec


def load(directory: str | Path, task: TaskSpec | None = None, seed: int = 0) -> TransformerPolicy | MlpPolicy:
    """The policy saved in ``directory`` (Transformer or MLP baseline), checked against ``task`` if given."""
    kind = checkpoint_kind(directory)
    if kind == MLP_KIND:
        return load_mlp(Path(directory), task)
    if kind != TRANSFORMER_KIND:
        raise LamRobotError(
            f"{directory} holds a checkpoint of kind {kind!r}, which this lam-robot cannot open; upgrade lam-robot"
        )
    policy = TransformerPolicy.load(directory, seed=seed, task=task)
    if task is not None:
        env = task.make_env()
        try:
            policy.check_env(task, env)
        finally:
            env.close()
    return policy

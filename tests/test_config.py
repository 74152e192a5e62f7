"""Configs reject nonsense with a one-line error naming the flag, in Python and on the command line."""

from __future__ import annotations

import pytest

from lam_robot.config import (
    BaselineConfig,
    BCConfig,
    DaggerConfig,
    EvaluateConfig,
    FinetuneConfig,
    PipelineConfig,
    RecordConfig,
)
from lam_robot.errors import LamRobotError
from tests.conftest import assert_clean_error, run_cli

REQUIRED = {
    BCConfig: dict(data="d.hdf5", out="run"),
    FinetuneConfig: dict(policy="bc", out="ft"),
    DaggerConfig: dict(policy="bc", out="dg"),
    RecordConfig: dict(task="nav-umaze", out="d.hdf5"),
    EvaluateConfig: dict(task="nav-umaze"),
    PipelineConfig: {},
    BaselineConfig: dict(algo="bc-mlp", data="d.hdf5", task="nav-umaze", out="b"),
}

BAD = [
    (BCConfig, "epochs", 0, "--epochs must be positive"),
    (BCConfig, "epochs", "5", "--epochs must be an integer"),
    (BCConfig, "epochs", 2.5, "--epochs must be an integer"),
    (BCConfig, "lr", -1e-3, "--lr must be positive"),
    (BCConfig, "lr", float("nan"), "--lr must be a finite number"),
    (BCConfig, "warmup_fraction", -0.1, "--warmup-fraction must be in [0, 1)"),
    (BCConfig, "dropout", 1.0, "--dropout must be in [0, 1)"),
    (BCConfig, "n_heads", 3, "--n-heads (3) must divide --d-model (64)"),
    (BCConfig, "loss", "l1", "--loss must be one of nll, mse"),
    (BCConfig, "eval_every", 0, "--eval-every must be positive"),
    (BCConfig, "weight_decay", -1.0, "--weight-decay must be non-negative"),
    (BCConfig, "data", "", "--data must be a path"),
    (BCConfig, "overwrite", "yes", "--overwrite must be true or false"),
    (FinetuneConfig, "bc_steps", 0, "--bc-steps must be positive"),
    (FinetuneConfig, "gamma", 3.0, "--gamma must be in (0, 1]"),
    (FinetuneConfig, "gamma", 0.0, "--gamma must be in (0, 1]"),
    (FinetuneConfig, "critic_warmup", -1, "--critic-warmup must be non-negative"),
    (FinetuneConfig, "gae_lambda", 1.5, "--gae-lambda must be in [0, 1]"),
    (FinetuneConfig, "bc_decay", 0.0, "--bc-decay must be in (0, 1]"),
    (FinetuneConfig, "bc_weight", -1.0, "--bc-weight must be non-negative"),
    (FinetuneConfig, "actor_lr_scale", 0.0, "--actor-lr-scale must be in (0, 10]"),
    (FinetuneConfig, "vec_env", "ray", "--vec-env must be one of dummy, subproc"),
    (FinetuneConfig, "steps", -5, "--steps must be positive"),
    (FinetuneConfig, "init_log_std", float("inf"), "--init-log-std must be a finite number"),
    (FinetuneConfig, "clip_range", 0.0, "--clip-range must be positive"),
    (FinetuneConfig, "task", "", "--task must be a non-empty string"),
    (DaggerConfig, "rounds", 0, "--rounds must be positive"),
    (DaggerConfig, "threshold", -0.5, "--threshold must be positive"),
    (DaggerConfig, "epochs", 0, "--epochs must be positive"),
    (RecordConfig, "episodes", 0, "--episodes must be positive"),
    (RecordConfig, "noise", -0.1, "--noise must be non-negative"),
    (RecordConfig, "valid_fraction", 1.0, "--valid-fraction must be in [0, 1)"),
    (RecordConfig, "dead_zone", 1.5, "--dead-zone must be in [0, 1)"),
    (RecordConfig, "max_attempts", 0, "--max-attempts must be positive"),
    (EvaluateConfig, "n_envs", 0, "--n-envs must be positive"),
    (EvaluateConfig, "video_episodes", 0, "--video-episodes must be positive"),
    (PipelineConfig, "finetune_steps", 0, "--finetune-steps must be positive"),
    (BaselineConfig, "algo", "sac", "--algo must be one of bc-mlp, dagger, gail, airl"),
]


@pytest.mark.parametrize(("cls", "field", "value", "message"), BAD,
                         ids=[f"{c.__name__}.{f}={v!r}" for c, f, v, _ in BAD])
def test_bad_value_is_one_line_error(cls, field, value, message):
    with pytest.raises(LamRobotError) as info:
        cls(**{**REQUIRED[cls], field: value})
    text = str(info.value)
    assert message in text and "\n" not in text


def test_good_defaults_validate():
    for cls, required in REQUIRED.items():
        cls(**required)


@pytest.mark.parametrize(("args", "message"), [
    (["finetune", "--policy", "x", "--out", "y", "--gamma", "3"], "--gamma must be in (0, 1], got 3.0"),
    (["finetune", "--policy", "x", "--out", "y", "--bc-steps", "0"], "--bc-steps must be positive"),
    (["train-bc", "--data", "x", "--out", "y", "--warmup-fraction", "-0.5"], "--warmup-fraction must be in [0, 1)"),
    (["record", "--task", "nav-umaze", "--out", "x.hdf5", "--gain", "2"], "--gain applies to teleoperation"),
])
def test_cli_bad_value_is_one_clean_line(args, message):
    assert_clean_error(run_cli(*args), message)

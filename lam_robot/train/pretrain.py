"""Pretraining on unlabelled trajectories (``lam-robot pretrain``).

Play data (no task goal, reward or success) still shows how to reach every state it passed through:
each window is trained toward a goal its trajectory reached later (goal-conditioned BC on hindsight
goals, as GCSL does). Trajectories without actions are labelled first by an inverse-dynamics model fit on
labelled demos of the same task (as VPT does). The result is an ordinary BC checkpoint:
``train-bc --init-from`` and ``finetune --policy`` start from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lam_robot.config import PretrainConfig
from lam_robot.data.dataset import DemoFile, PolicyEpisode
from lam_robot.errors import LamRobotError
from lam_robot.tasks import TaskSpec, load_task, require_same_task
from lam_robot.train.bc import BCResult, prepare_training_data, run_bc
from lam_robot.train.inverse_dynamics import InverseDynamics, fit_inverse_dynamics


def pretrain(config: PretrainConfig | None = None, /, *, progress: bool = True, **fields: Any) -> BCResult:
    """Pretrain (or resume pretraining) a Transformer on the play data ``config.data`` (and ``more_data``)."""
    config = PretrainConfig.build(config, fields)
    given = load_task(config.task) if config.task is not None else None
    paths = [config.data, *config.more_data]
    task: TaskSpec | None = None
    idm: InverseDynamics | None = None
    train: list[PolicyEpisode] = []
    valid: list[PolicyEpisode] = []
    n_episodes = 0
    for path in paths:
        # A file written by another program (no task spec) is read as --task, or else as the first file's task.
        with DemoFile(path, check_values=True, task=given or task) as play:
            if task is None:
                task = play.task
                if given is not None:
                    require_same_task(task, given, f"{path} holds trajectories of task", "give that task's data")
                task.require_goals("pretraining on unlabelled trajectories")
            else:
                require_same_task(
                    play.task, task, f"{path} holds trajectories of task", f"pretrain on files of {task.name!r} only"
                )
            if not play.unlabelled:
                print(f"note: {path} holds demos; pretraining ignores their goals and relabels every window")
            if idm is None and not play.has_actions():
                idm = inverse_model(config, task, path)
            labeller = None if play.has_actions() else idm
            train += play_episodes(play, "train", task, labeller)
            valid += play_episodes(play, "valid", task, labeller)
            n_episodes += len(play)
    assert task is not None
    if not train:
        raise LamRobotError(f"{', '.join(map(str, paths))}: mask/train is empty; record more play episodes")
    data = prepare_training_data(config, task, train, valid, n_episodes, relabel_valid=True)
    result = run_bc(config, data, progress=progress)
    if idm is not None:
        print(f"inverse-dynamics labels: held-out MSE {idm.valid_mse:.4f} (actions in [-1, 1] units)")
    return result


def idm_keys(task: TaskSpec) -> list[str]:
    """What the inverse-dynamics model sees: the policy's observation keys except the desired goal."""
    return [k for k in task.policy_obs_keys if k not in task.goal_keys]


def _flat(obs: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(obs[k], np.float64) for k in keys], axis=-1)


def inverse_model(config: PretrainConfig, task: TaskSpec, unlabelled: Path | None = None) -> InverseDynamics:
    """The inverse-dynamics model fit on ``config.demos``, or the error saying it is needed (for the file
    ``unlabelled``, by default ``config.data``)."""
    if config.demos is None:
        raise LamRobotError(
            f"{unlabelled or config.data} has no actions; give --demos FILE (labelled demos of task {task.name!r}) "
            "to train an inverse-dynamics model that labels it"
        )
    keys = idm_keys(task)
    with DemoFile(config.demos, check_values=True, task=task) as demos:
        require_same_task(demos.task, task, f"--demos {config.demos} holds demos of task", "give that task's demos")
        demos.require_demos()
        episodes = [demos.episode(n) for n in demos.demo_names]
    env = task.make_env()
    low, high = env.action_space.low, env.action_space.high  # type: ignore[attr-defined]
    env.close()
    obs = np.concatenate([_flat(e["obs"], keys) for e in episodes])
    next_obs = np.concatenate([_flat(e["next_obs"], keys) for e in episodes])
    actions = np.concatenate([e["actions"] for e in episodes])
    return fit_inverse_dynamics(obs, next_obs, actions, low, high, epochs=config.idm_epochs, seed=config.seed)


def play_episodes(play: DemoFile, split: str, task: TaskSpec, idm: InverseDynamics | None) -> list[PolicyEpisode]:
    """The split's trajectories as policy episodes with reached goals; actions from ``idm`` if given."""
    if idm is None:
        return play.policy_episodes(split, task, goals=True)
    achieved_key, desired_key = task.require_goals("pretraining")
    keys = idm_keys(task)
    out = []
    for name in play.split(split):
        episode = play.episode(name)
        obs, next_obs = episode["obs"], episode["next_obs"]
        parts = {k: obs[k] for k in task.policy_obs_keys if k in obs}
        parts.setdefault(desired_key, obs[achieved_key])  # placeholder: every window gets a hindsight goal
        actions = idm.label(_flat(obs, keys), _flat(next_obs, keys))
        out.append(PolicyEpisode(task.flat_obs(parts), actions, np.ones(len(actions), bool), next_obs[achieved_key]))
    return out

"""Policies called as users call SB3 policies: without ``state``, and ppo.zip on the env's own observations."""

import numpy as np
import pytest
from stable_baselines3 import PPO

from lam_robot.config import BCConfig, FinetuneConfig
from lam_robot.errors import LamRobotError
from lam_robot.evaluation import evaluate_policy as evaluate
from lam_robot.policy.bc_policy import TransformerPolicy
from lam_robot.policy.history import History
from lam_robot.policy.sb3_bridge import load_ppo
from lam_robot.sources import resolve_policy
from lam_robot.tasks import load_task
from lam_robot.train.bc import train_bc
from lam_robot.train.finetune import FinetuneRun
from tests.conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def ft_run(umaze_demos, tmp_path_factory):
    """A tiny BC run fine-tuned for 128 env steps: the BC-format checkpoint and ppo.zip of one run."""
    root = tmp_path_factory.mktemp("policy")
    train_bc(
        BCConfig(
            data=str(umaze_demos),
            out=str(root / "bc"),
            epochs=2,
            context=4,
            d_model=16,
            n_layers=1,
            n_heads=2,
            batch_size=64,
        ),
        progress=False,
    )
    FinetuneRun(
        FinetuneConfig(
            policy=str(root / "bc"),
            out=str(root / "ft"),
            steps=128,
            n_envs=2,
            n_steps=32,
            batch_size=32,
            n_epochs=1,
            eval_every=128,
            eval_episodes=1,
        ),
        progress=False,
    ).train()
    return root / "ft"


def random_obs(rng, n):
    return {
        "observation": rng.normal(size=(n, 4)),
        "achieved_goal": rng.normal(size=(n, 2)),
        "desired_goal": rng.normal(size=(n, 2)),
    }


def test_predict_without_state_keeps_history(ft_run):
    rng = np.random.default_rng(0)
    steps = [random_obs(rng, 2) for _ in range(6)]
    starts = [[True, True], [False, False], [False, False], [False, True], [False, False], [False, False]]
    passing, kept = TransformerPolicy.load(ft_run), TransformerPolicy.load(ft_run)
    state = None
    for obs, start in zip(steps, starts):
        expected, state = passing.predict(obs, state, np.array(start))
        got, returned = kept.predict(obs, None, np.array(start))  # state=None every call: the policy keeps it
        np.testing.assert_array_equal(got, expected)
    assert list(returned.valid.sum(axis=1)) == [4, 3]  # K=4 full for env 0; env 1 restarted 3 steps ago
    # An explicit state is used as given and leaves the kept history alone.
    fresh, _ = kept.predict(steps[0], History.empty(2, 4, 6))
    np.testing.assert_array_equal(kept.predict(steps[1])[1].valid.sum(axis=1), [4, 4])
    # episode_start clears the history: the action is the one a fresh policy gives on that observation.
    single = {k: v[0] for k, v in steps[2].items()}
    restarted, _ = kept.predict(single, episode_start=np.array([True]))  # a new batch size resets too
    np.testing.assert_array_equal(restarted, TransformerPolicy.load(ft_run).predict(single)[0])
    np.testing.assert_array_equal(fresh, TransformerPolicy.load(ft_run).predict(steps[0])[0])
    # A plain loop without state or episode_start sees the same history as the state-passing loop.
    plain, passing, state = TransformerPolicy.load(ft_run), TransformerPolicy.load(ft_run), None
    for obs in steps:
        expected, state = passing.predict(obs, state)
        np.testing.assert_array_equal(plain.predict(obs)[0], expected)
    plain.reset_history()
    np.testing.assert_array_equal(plain.predict(steps[0])[1].valid.sum(axis=1), [1, 1])


def test_ppo_zip_predicts_on_env_observations_like_the_bc_checkpoint(ft_run):
    """PPO.load(...).predict(raw obs) keeps its own history and gives the BC-format checkpoint's action."""
    model = PPO.load(ft_run / "ppo.zip", device="cpu")
    bc = TransformerPolicy.load(ft_run)
    env = load_task("nav-umaze").make_env()
    obs, _ = env.reset(seed=3)
    for _ in range(12):
        action, _ = model.predict(obs, deterministic=True)
        np.testing.assert_allclose(action, bc.predict(obs)[0], rtol=0, atol=1e-6)
        obs, *_ = env.step(action)
    env.close()
    # Batched, with state passed back and an episode start, as SB3's evaluate_policy calls it.
    rng = np.random.default_rng(1)
    state, kept = None, TransformerPolicy.load(ft_run)
    for start in ([True, True], [False, False], [False, True]):
        obs = random_obs(rng, 2)
        action, state = model.predict(obs, state, np.array(start), deterministic=True)
        # Same network, other tensor layout: the CPU's summation order may differ in the last bit.
        np.testing.assert_allclose(action, kept.predict(obs, None, np.array(start))[0], rtol=0, atol=1e-6)
    # The history observation itself still works as in SB3.
    history = np.zeros((1, *model.observation_space.shape), np.float32)
    history[0, -1, -1] = 1.0
    assert model.predict(history, deterministic=True)[0].shape == (1, 2)


def test_evaluate_ppo_zip(ft_run, monkeypatch):
    task = load_task("nav-umaze")
    env = task.make_env()
    results = [
        evaluate(task, resolve_policy(name, task, env), name, 2, n_envs=2).to_dict()
        for name in (str(ft_run / "ppo.zip"), str(ft_run))
    ]
    env.close()
    assert results[0]["mean_return"] == results[1]["mean_return"]
    assert results[0]["mean_length"] == results[1]["mean_length"]
    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    load_ppo(ft_run / "ppo.zip", task)  # opens without unpickling any entry of the file


def test_evaluate_ppo_zip_cli(ft_run, tmp_path):
    result = run_cli("evaluate", "--policy", str(ft_run / "ppo.zip"), "--task", "nav-umaze", "--episodes", "2")
    assert result.returncode == 0, result.stderr
    assert_clean_error(
        run_cli("evaluate", "--policy", str(ft_run / "ppo.zip"), "--task", "grasp", "--episodes", "1"),
        "trained with observation size 6, but task 'grasp' gives 28",
    )
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(LamRobotError, match="not a PPO model from lam-robot finetune"):
        load_ppo(tmp_path / "bad.zip")

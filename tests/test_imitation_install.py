"""imitation 1.0.1 is installed with --no-deps next to gymnasium 1.x / SB3 2.x: its algorithms must
import and really train on our demos in our tasks."""

import copy

import numpy as np
from gymnasium.spaces import flatten
from gymnasium.wrappers import FilterObservation, FlattenObservation

from lam_robot.data.dataset import DemoFile
from lam_robot.tasks import load_task


def _flat_env_and_transitions(demo_path):
    from imitation.data.types import Transitions

    task = load_task("nav-umaze")
    env = FlattenObservation(FilterObservation(task.make_env(), list(task.policy_obs_keys)))
    space = env.env.observation_space
    parts = {"obs": [], "next_obs": [], "acts": [], "dones": []}
    with DemoFile(demo_path) as demos:
        for name in demos.demo_names:
            ep = demos.episode(name)
            for t in range(len(ep["actions"])):
                parts["obs"].append(flatten(space, {k: ep["obs"][k][t] for k in task.policy_obs_keys}))
                parts["next_obs"].append(flatten(space, {k: ep["next_obs"][k][t] for k in task.policy_obs_keys}))
            parts["acts"].append(ep["actions"])
            parts["dones"].append(ep["dones"])
    transitions = Transitions(
        obs=np.array(parts["obs"], dtype=np.float32),
        next_obs=np.array(parts["next_obs"], dtype=np.float32),
        acts=np.concatenate(parts["acts"]),
        dones=np.concatenate(parts["dones"]),
        infos=np.array([{}] * sum(len(a) for a in parts["acts"])),
    )
    return env, transitions


def test_imitation_bc_dagger_gail_import_and_train(umaze_demos, tmp_path):
    from imitation.algorithms import bc
    from imitation.algorithms.adversarial.gail import GAIL
    from imitation.algorithms.dagger import SimpleDAggerTrainer
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.util import make_vec_env  # noqa: F401  (imported to prove the module loads)
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    env, transitions = _flat_env_and_transitions(umaze_demos)
    rng = np.random.default_rng(0)
    trainer = bc.BC(
        observation_space=env.observation_space,
        action_space=env.action_space,
        demonstrations=transitions,
        rng=rng,
        batch_size=64,
    )
    import torch as th

    obs, acts = th.as_tensor(transitions.obs[:256]), th.as_tensor(transitions.acts[:256])

    def neglogp() -> float:
        return float(trainer.loss_calculator(trainer.policy, obs, acts).neglogp.detach())

    before = neglogp()
    trainer.train(n_batches=50)
    assert neglogp() < before

    assert callable(SimpleDAggerTrainer)  # DAgger needs an SB3 expert policy; the baselines issue trains it

    venv = DummyVecEnv(
        [
            lambda: FlattenObservation(
                FilterObservation(load_task("nav-umaze").make_env(), ["observation", "desired_goal"])
            )
        ]
    )
    learner = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0)
    th.manual_seed(0)
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space)
    untrained = copy.deepcopy(reward_net)
    generator_before = [p.detach().clone() for p in learner.policy.parameters()]
    gail = GAIL(
        demonstrations=transitions,
        demo_batch_size=32,
        gen_replay_buffer_capacity=128,
        n_disc_updates_per_round=16,
        venv=venv,
        gen_algo=learner,
        reward_net=reward_net,
        allow_variable_horizon=True,
    )
    gail.train(256)  # 4 rounds of 64 generator steps, 16 discriminator updates each
    # The generator trained on GAIL's reward ...
    assert learner.num_timesteps == 256
    assert any(not th.equal(b, a) for b, a in zip(generator_before, learner.policy.parameters()))
    # ... and the discriminator learnt to tell the demos from the generator's transitions (those it was
    # trained against: GAIL's replay buffer, a private attribute of the pinned imitation 1.0.1).
    generated = gail._gen_replay_buffer.sample(128)
    trained_loss, trained_accuracy = _discriminator_loss_and_accuracy(reward_net, transitions, generated)
    untrained_loss, _ = _discriminator_loss_and_accuracy(untrained, transitions, generated)
    assert trained_loss < 0.6 * untrained_loss and trained_accuracy > 0.8, (
        trained_loss,
        untrained_loss,
        trained_accuracy,
    )
    env.close()
    venv.close()


def _discriminator_loss_and_accuracy(reward_net, expert, generated) -> tuple[float, float]:
    """GAIL's discriminator is its reward net: logits high on expert transitions, low on generated ones.
    Returns the balanced cross-entropy and accuracy over all demo transitions and the generated ones."""
    import torch as th
    import torch.nn.functional as F

    def logits(transitions):
        with th.no_grad():
            return reward_net(
                *reward_net.preprocess(transitions.obs, transitions.acts, transitions.next_obs, transitions.dones)
            )

    high, low = logits(expert), logits(generated)
    loss = 0.5 * (
        F.binary_cross_entropy_with_logits(high, th.ones_like(high))
        + F.binary_cross_entropy_with_logits(low, th.zeros_like(low))
    )
    return float(loss), 0.5 * float((high > 0).float().mean() + (low < 0).float().mean())

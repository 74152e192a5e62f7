"""Self-imitation inside PPO fine-tuning: the policy's own rollouts, relabelled with goals they reached.

While PPO collects a rollout, ``SelfImitation.recorder`` keeps each env's episode in progress: the
history window the policy saw at every step, the action the env received, and the goal achieved
after the step (copied into ``info`` by ``ReachedGoals``). When an episode ends, every step ``t`` but
the first gets a goal the same episode reached a geometric number of steps later (hindsight, future
strategy: ``train.bc.hindsight_rows``), written into the desired-goal columns of its whole window.
Its relabelled rewards come from the env's own ``compute_reward``; the relabelled episode ends at the
first step whose reward equals the reward at the goal itself (where a goal-reaching maze ends), so
every relabelled window reaches its goal by construction. A window whose goal was already reached
before step ``t`` teaches nothing and is dropped. With the ``value`` filter (ESIL, Dai et al. 2020)
a window is kept only if its relabelled discounted return beats the critic's value of the
relabelled window; with ``progress``, only if it neared its goal faster (goal-space distance per step) than
the median window of the latest episodes. ``drop_detours`` also drops windows whose path loops back to where
it started before reaching the goal. The kept windows fill a FIFO buffer whose NLL ``FinetunePPO`` adds to
the BC regulariser.

Measured once (nav-medium, 5 demos recorded with --noise 0.3 --seed 31, train-bc --epochs 400 --relabel
hindsight, finetune seed 0 with the defaults, 50 evaluation episodes): BC 30%; PPO with the demo regulariser
36% after 100k env steps, 34% after 200k; with --self-imitation hindsight 64% after 100k, 66% after 200k.
On grasp the value filter passes nearly every window (the critic values relabelled goals as failures), and a
constant weight holds PPO back: 65% after 300k against 91% without
self-imitation and 99% with --si-decay 0.95 (3 seeds each; README, "Tests and benchmarks").

The buffer and the episodes in progress live in memory only: a resumed run starts with an empty
buffer and refills it from new rollouts.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Literal, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from lam_robot.train.bc import Hindsight, hindsight_rows

ACHIEVED = "hindsight_achieved"
"""The ``info`` key under which ``ReachedGoals`` puts the goal achieved after each step."""


class ReachedGoals(gym.Wrapper):
    """Copies the achieved goal of each step's observation into ``info`` (the policy's history drops it)."""

    def __init__(self, env: gym.Env, achieved_key: str) -> None:
        super().__init__(env)
        self.achieved_key = achieved_key

    def step(self, action):
        """Step the env; ``info[ACHIEVED]`` is the goal achieved after the step."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info[ACHIEVED] = np.array(obs[self.achieved_key], dtype=np.float32)
        return obs, reward, terminated, truncated, info


class Episode(NamedTuple):
    """One finished rollout episode of one env, as recorded."""

    number: int
    """Running number of the episode (all envs together), which the buffer's windows refer to."""
    boxes: np.ndarray
    """(T, K, obs_dim + 1) the history window the policy saw before each step."""
    actions: np.ndarray
    """(T, A) the actions the env received, in [-1, 1] units."""
    achieved: np.ndarray
    """(T, G) the goal achieved after each step."""
    infos: list[dict[str, Any]]
    """The env's info of each step (without SB3's terminal observation)."""


class _Running:
    """An episode in progress."""

    def __init__(self) -> None:
        self.boxes: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.achieved: list[np.ndarray] = []
        self.infos: list[dict[str, Any]] = []


class SelfImitation:
    """Relabels finished rollout episodes with reached goals and keeps the windows worth imitating.

    ``env`` is an env of the fine-tuning task, used only for its ``compute_reward``; ``columns`` is
    the desired goal's slice of the flat policy observation; ``to_unit`` maps env actions to the
    actor's [-1, 1] units. The buffer holds at most ``capacity`` windows (oldest dropped first).
    """

    def __init__(
        self,
        env: gym.Env,
        n_envs: int,
        columns: slice,
        to_unit: Any,
        capacity: int,
        horizon: float,
        gamma: float,
        keep: Literal["value", "none", "progress"],
        seed: int,
        drop_detours: bool = False,
        actions: Literal["sent", "sampled"] = "sent",
        labels: Literal["newest", "window"] = "newest",
        priority: Literal["uniform", "advantage"] = "uniform",
        final: float = 0.0,
    ) -> None:
        self.env = env
        self.compute_reward = env.unwrapped.compute_reward  # type: ignore[attr-defined]
        self.columns = columns
        self.to_unit = to_unit
        self.capacity = capacity
        self.hindsight = Hindsight(1.0, horizon, columns)
        self.gamma = gamma
        self.keep = keep
        self.drop_detours = drop_detours
        self._progress: deque[np.ndarray] = deque(maxlen=64)
        """Goal-space progress per step of the latest episodes' windows (the ``progress`` filter's bar)."""
        self.actions = actions
        """Which action of a step to imitate: ``sent`` (clipped to the env's bounds) or ``sampled`` (the
        policy's own draw, unclipped: its expectation is the policy's mean, so imitating it does not pull
        a mean near a bound inwards, rollout after rollout)."""
        self.labels = labels
        """Which steps of a kept window ``sample`` labels: its ``newest`` (the one the filter judged), or every
        real step of the ``window`` (each reached the relabelled goal later as well)."""
        self.priority = priority
        """How ``sample`` draws kept windows: ``uniform``, or in proportion to ``advantage`` = relabelled return
        minus the critic's value at relabelling, floored at a small share (SIL's prioritised replay, Oh et al.
        2018): the windows that beat the policy's usual result by most are imitated most."""
        self.final = final
        """Share of relabelled steps whose goal is their episode's last reached one (HER's final strategy)."""
        self.generator = torch.Generator().manual_seed(seed)
        self._running = [_Running() for _ in range(n_envs)]
        self._finished: list[Episode] = []
        self.episodes_finished = 0
        """Rollout episodes finished so far (each relabelled, whether or not it gave windows)."""
        self.recent: deque[Episode] = deque(maxlen=8)
        """The last finished episodes, for inspection (tests, debugging)."""
        self.size = 0
        self._next = 0
        self.relabelled = 0
        """Windows relabelled so far (before the filter)."""
        self.kept = 0
        """Windows kept so far."""
        self.detours = 0
        """Windows dropped as detours (``drop_detours``), before the value filter."""
        self.buffer: dict[str, torch.Tensor] = {}
        """Kept windows: ``obs`` (history with the relabelled goal), ``actions``, ``goal``, ``achieved``
        (after the window's step), ``reward`` (relabelled, at that step), ``ret`` (relabelled discounted
        return), ``value`` (the critic's, at relabelling), ``episode``, ``step`` and ``goal_step``;
        with ``labels="window"`` also ``window_actions``, the action of every history row (zeros on padding)."""

    # --- recording ------------------------------------------------------------------------------

    def recorder(self) -> BaseCallback:
        """A callback for SB3's ``collect_rollouts`` that records every env step."""
        return _Recorder(self)

    def forget_running(self) -> None:
        """Drop the episodes in progress (the envs were reset)."""
        self._running = [_Running() for _ in self._running]

    def record(self, boxes: np.ndarray, actions: np.ndarray, infos: list[dict[str, Any]], dones: np.ndarray) -> None:
        """One VecEnv step: the histories before it, the actions sent, the infos and dones it returned."""
        units = self.to_unit(np.asarray(actions))
        for i, running in enumerate(self._running):
            running.boxes.append(np.array(boxes[i], dtype=np.float32))
            running.actions.append(units[i])
            running.achieved.append(infos[i][ACHIEVED])
            running.infos.append({k: v for k, v in infos[i].items() if k != "terminal_observation"})
            if dones[i]:
                episode = Episode(
                    self.episodes_finished,
                    np.stack(running.boxes),
                    np.stack(running.actions),
                    np.stack(running.achieved),
                    running.infos,
                )
                self.episodes_finished += 1
                self._finished.append(episode)
                self.recent.append(episode)
                self._running[i] = _Running()

    # --- relabelling ----------------------------------------------------------------------------

    @torch.no_grad()
    def relabel_finished(self, values: Any) -> None:
        """Relabel the episodes finished since the last call; ``values`` maps (n, K, obs_dim + 1) history
        windows to the critic's (n, 1) values."""
        for episode in self._finished:
            self._relabel(episode, values)
        self._finished = []

    def _relabel(self, episode: Episode, values: Any) -> None:
        n = len(episode.actions)
        if n < 2:
            return
        goal_rows, _ = hindsight_rows(
            torch.arange(n), torch.full((n,), n - 1), self.hindsight, self.generator
        )  # ratio 1: every step relabelled
        if self.final > 0:  # drawn only when on, so that the default keeps its random stream
            goal_rows[torch.rand(n, generator=self.generator) < self.final] = n - 1
        steps = np.arange(1, n)  # step 0 has no achieved goal before it to test "already reached"
        goal_steps = goal_rows.numpy()[1:]
        infos = np.array(episode.infos, dtype=object)
        achieved = episode.achieved
        goals = achieved[goal_steps]
        at_goal = np.asarray(self.compute_reward(goals, goals, infos[goal_steps]), dtype=np.float64)
        before = np.asarray(self.compute_reward(achieved[steps - 1], goals, infos[steps - 1]), dtype=np.float64)
        fresh = before < at_goal  # not reached before the step
        steps, goal_steps, goals, at_goal = steps[fresh], goal_steps[fresh], goals[fresh], at_goal[fresh]
        if not len(steps):
            return
        # Every (window, step) pair from the window's step to its goal step, scored in one call.
        lengths = goal_steps - steps + 1
        window = np.repeat(np.arange(len(steps)), lengths)
        ahead = np.arange(len(window)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pair_steps = steps[window] + ahead
        rewards = np.asarray(
            self.compute_reward(achieved[pair_steps], goals[window], infos[pair_steps]), dtype=np.float64
        )
        reached = rewards >= at_goal[window]
        first = np.full(len(steps), np.iinfo(np.int64).max)
        np.minimum.at(first, window[reached], ahead[reached])  # the goal step itself always reaches
        counted = ahead <= first[window]
        detour = self._detours(achieved, steps, window, ahead, pair_steps, counted, infos)
        returns = np.zeros(len(steps))
        np.add.at(returns, window[counted], (self.gamma ** ahead[counted]) * rewards[counted])
        starts = np.cumsum(lengths) - lengths
        step_rewards = rewards[starts]
        boxes = episode.boxes[steps].copy()
        boxes[:, :, self.columns] = goals[:, None, :]  # padding rows are masked by the features extractor
        obs = torch.from_numpy(boxes)
        value = torch.cat([values(chunk).reshape(-1) for chunk in obs.split(1024)]).numpy().astype(np.float64)
        if self.keep == "value":
            keep = returns > value
        elif self.keep == "progress":
            keep = self._fast(np.linalg.norm(goals - achieved[steps - 1], axis=-1) / (first + 1))
        else:
            keep = np.ones(len(steps), bool)
        keep &= ~detour
        self.detours += int(detour.sum())
        self.relabelled += len(steps)
        self.kept += int(keep.sum())
        if keep.any():
            window_actions = {}
            if self.labels == "window":  # history row j of step t's window is step t - (K - 1 - j)
                context = boxes.shape[1]
                rows = steps[keep, None] - (context - 1) + np.arange(context)
                acts = episode.actions[np.maximum(rows, 0)] * (rows >= 0)[..., None]
                window_actions = {"window_actions": torch.from_numpy(acts.astype(np.float32))}
            self._push(
                **window_actions,
                obs=obs[keep],
                actions=torch.from_numpy(episode.actions[steps[keep]]),
                goal=torch.from_numpy(goals[keep]),
                achieved=torch.from_numpy(achieved[steps[keep]]),
                reward=torch.from_numpy(step_rewards[keep]),
                ret=torch.from_numpy(returns[keep]),
                value=torch.from_numpy(value[keep]),
                episode=torch.full((int(keep.sum()),), episode.number),
                step=torch.from_numpy(steps[keep]),
                goal_step=torch.from_numpy(goal_steps[keep]),
            )

    def _fast(self, progress: np.ndarray) -> np.ndarray:
        """Which windows moved towards their goal faster (goal-space distance per step to reach it) than the
        median window of the latest episodes, this one's included."""
        self._progress.append(progress)
        return progress >= np.median(np.concatenate(self._progress))

    def _detours(
        self,
        achieved: np.ndarray,
        steps: np.ndarray,
        window: np.ndarray,
        ahead: np.ndarray,
        pair_steps: np.ndarray,
        counted: np.ndarray,
        infos: np.ndarray,
    ) -> np.ndarray:
        """Which windows' paths leave the goal achieved before their step and come back to it before reaching
        their relabelled goal ("at it" in the sense of the env's ``compute_reward``): a loop the policy would
        learn to repeat. The window at the loop's end, which heads straight on, is kept."""
        detour = np.zeros(len(steps), bool)
        if not self.drop_detours:
            return detour
        home = achieved[steps - 1]
        at_home = np.asarray(self.compute_reward(home, home, infos[steps - 1]), dtype=np.float64)
        near = (
            np.asarray(self.compute_reward(achieved[pair_steps], home[window], infos[pair_steps]), dtype=np.float64)
            >= at_home[window]
        )
        left = np.full(len(steps), np.iinfo(np.int64).max)
        np.minimum.at(left, window[~near & counted], ahead[~near & counted])
        back = near & counted & (ahead > left[window])
        np.logical_or.at(detour, window[back], True)
        return detour

    def _push(self, **rows: torch.Tensor) -> None:
        """Append windows to the FIFO buffer, overwriting the oldest when full."""
        n = len(rows["obs"])
        if not self.buffer:
            self.buffer = {k: torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
        if n > self.capacity:
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            n = self.capacity
        at = (self._next + torch.arange(n)) % self.capacity
        for key, value in rows.items():
            self.buffer[key][at] = value
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    # --- training -------------------------------------------------------------------------------

    def windows(self) -> dict[str, torch.Tensor]:
        """The kept windows (the filled part of the buffer, in no particular order)."""
        return {k: v[: self.size] for k, v in self.buffer.items()}

    def priorities(self) -> torch.Tensor:
        """``advantage`` sampling weights of the kept windows: return minus value, floored at 1% of the
        largest (so that no kept window is never imitated)."""
        advantage = (self.buffer["ret"][: self.size] - self.buffer["value"][: self.size]).float()
        return advantage.clamp(min=0.01 * max(float(advantage.max()), 1e-6))

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` kept windows drawn by ``priority``: (n, K, obs_dim + 1) histories, (n, K, A) actions and the (n, K)
        rows to imitate (``labels``: the newest only, or every row; padding rows are masked by the caller)."""
        if self.priority == "advantage":
            idx = torch.multinomial(self.priorities(), n, replacement=True, generator=self.generator)
        else:
            idx = torch.randint(self.size, (n,), generator=self.generator)
        history = self.buffer["obs"][idx]
        labels = torch.zeros(history.shape[:2], dtype=torch.bool)
        if self.labels == "window":
            labels[:] = True
            return history, self.buffer["window_actions"][idx], labels
        labels[:, -1] = True
        return history, self.buffer["actions"][idx][:, None, :].expand(-1, history.shape[1], -1), labels


class _Recorder(BaseCallback):
    """Feeds every VecEnv step of a rollout to ``SelfImitation.record``."""

    def __init__(self, self_imitation: SelfImitation) -> None:
        super().__init__()
        self.si = self_imitation

    def _on_step(self) -> bool:
        # SB3 calls back after env.step and before it moves _last_obs on: the history the action was chosen on.
        assert isinstance(self.model._last_obs, np.ndarray)  # HistoryObservation's Box
        actions = self.locals["clipped_actions" if self.si.actions == "sent" else "actions"]
        self.si.record(self.model._last_obs, actions, self.locals["infos"], self.locals["dones"])
        return True

"""Scripted, stateless pick-and-place expert for the Fetch ``PickAndPlace`` task.

The phase is inferred from the current observation alone (gripper/object/goal
positions and finger opening), so one instance serves any batch of envs and
recovers automatically when a grasp slips or fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from lam_robot.experts._batch import as_batch, finish

# Fetch observation layout (gymnasium_robotics BaseFetchEnv._get_obs).
GRIP = slice(0, 3)
OBJECT = slice(3, 6)
REL = slice(6, 9)  # object_pos - grip_pos
FINGERS = slice(9, 11)  # finger joints in [0, 0.05]; each ~0.024 when holding the 5 cm block


class PickAndPlaceExpert:
    """Reach above the block, descend, close, carry the block to the goal and hold it.

    Actions are ``[dx, dy, dz, grip]``; the env moves the mocap by ``0.05 * d``
    per step and the arm reaches ~65% of that, so position gains are high.
    """

    def __init__(
        self,
        table_z: float = 0.425,
        gain: float = 20.0,
        hover: float = 0.07,
        lift: float = 0.04,
        press: float = 0.02,
        funnel_slope: float = 3.0,
        funnel_tol: float = 0.008,
        grasp_tol: tuple[float, float] = (0.02, 0.015),
        keep_tol: float = 0.03,
        held_tol: float = 0.05,
        held_width: tuple[float, float] = (0.03, 0.07),
        open_width: float = 0.09,
    ) -> None:
        self.table_z = table_z  # block-centre height when resting on the table
        self.gain = gain
        self.hover = hover
        self.lift = lift
        self.press = press
        self.funnel_slope = funnel_slope
        self.funnel_tol = funnel_tol
        self.grasp_tol = grasp_tol
        self.keep_tol = keep_tol
        self.held_tol = held_tol
        self.held_width = held_width
        self.open_width = open_width

    @classmethod
    def from_env(cls, env: gym.Env) -> PickAndPlaceExpert:
        """Build for a (wrapped) Fetch pick-and-place env; checks it is one."""
        base: Any = env.unwrapped  # the Fetch env's own attributes are not on gym.Env
        if not getattr(base, "has_object", False) or getattr(base, "block_gripper", True):
            raise ValueError(f"{base!r} is not a Fetch env with an object and a free gripper")
        return cls(table_z=float(base.height_offset))

    def predict(
        self,
        obs: Mapping[str, np.ndarray],
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style predict; stateless, so ``state`` is passed through untouched."""
        o, single = as_batch(obs, "observation", 25)
        goal, _ = as_batch(obs, "desired_goal", 3)
        grip, obj = o[:, GRIP], o[:, OBJECT]
        close, held = self._grasp_state(o)

        # Approach: target above the block, lowered as xy converges (a funnel,
        # so noise near the threshold does not make the gripper bounce).
        d_xy = np.hypot(o[:, 6], o[:, 7])
        target = obj.copy()
        target[:, 2] += np.clip(self.funnel_slope * (d_xy - self.funnel_tol), 0.0, self.hover)
        # Carry: steer the block itself (not the gripper) onto the goal.
        move = np.where(held[:, None], self._carry_target(obj, goal) - obj, target - grip)

        action = np.empty((o.shape[0], 4))
        action[:, :3] = self.gain * move
        action[:, 3] = np.where(close, -1.0, 1.0)
        return finish(action, single), state

    def _grasp_state(self, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row masks: should the fingers close, and is the block held."""
        rel = o[:, REL]
        d_xy = np.hypot(rel[:, 0], rel[:, 1])
        dz = np.abs(rel[:, 2])
        width = o[:, FINGERS].sum(axis=1)
        near = (d_xy < self.grasp_tol[0]) & (dz < self.grasp_tol[1])
        # Finger width is the memory: once closing has started, a looser box
        # keeps it closing despite jitter.
        in_fingers = (d_xy < self.keep_tol) & (dz < self.keep_tol)
        # A half-closed width means something is between the fingers, so the
        # block counts as held even when it has slid off-centre in the grasp.
        lo, hi = self.held_width
        held = (d_xy < self.held_tol) & (dz < self.held_tol) & (width > lo) & (width < hi)
        close = near | (in_fingers & (width < self.open_width)) | held
        return close, held

    def _carry_target(self, obj: np.ndarray, goal: np.ndarray) -> np.ndarray:
        """Where to steer a held block: the goal, lifted off the table while far away."""
        g_xy = np.hypot(goal[:, 0] - obj[:, 0], goal[:, 1] - obj[:, 1])
        lift = np.clip(self.funnel_slope * (g_xy - self.funnel_tol), 0.0, self.lift)
        carry = goal.copy()
        carry[:, 2] = np.maximum(goal[:, 2], self.table_z + lift)
        # For goals on the table aim slightly into it: the table stops the
        # block and the steady downward push keeps action noise from lifting it.
        on_table = goal[:, 2] < self.table_z + 0.005
        carry[:, 2] -= np.where(on_table, self.press, 0.0)
        return carry

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for one observation (a plain ``obs -> action`` callable)."""
        return self.predict(obs)[0]

"""Policies a user might bring with --source py:module:attr (used by the recorder tests)."""

import numpy as np


def push_towards_goal(obs):
    """A plain callable: push straight at the goal (fails in most mazes, fine for recording)."""
    delta = obs["desired_goal"] - obs["observation"][:2]
    return np.clip(3.0 * delta, -1.0, 1.0)


class StillPolicy:
    """A class with SB3's predict, instantiated with no arguments."""

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros(obs["observation"].shape[:-1] + (2,), dtype=np.float32), state


class DiesOnceInARayWorker:
    """The nav-umaze expert, except that in a Ray worker, once per $LAM_ROBOT_TEST_DIE_ONCE directory, the
    process kills itself (SIGKILL) at its 100th predict call: a worker lost mid-recording."""

    @classmethod
    def from_env(cls, env):
        from lam_robot.experts import make_expert

        return cls(make_expert("maze-waypoints", env))

    def __init__(self, expert):
        self.expert, self.calls = expert, 0

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        import os
        import signal
        import sys
        from pathlib import Path

        self.calls += 1
        flags = os.environ.get("LAM_ROBOT_TEST_DIE_ONCE")
        if flags and self.calls == 100 and "ray" in sys.modules:
            import ray

            if ray.get_runtime_context().get_actor_id() is not None:
                try:
                    (Path(flags) / "died").open("x").close()  # the first worker here to get this far
                except FileExistsError:
                    pass
                else:
                    os.kill(os.getpid(), signal.SIGKILL)
        return self.expert.predict(obs, state, episode_start, deterministic)

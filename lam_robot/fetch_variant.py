"""Fetch object envs whose world is edited by a ``Variant`` (MuJoCo's ``MjSpec``), not a patched copy.

gymnasium-robotics builds the model in ``MujocoRobotEnv._initialize_simulation`` from its MJCF file
and then places the arm in ``_env_setup``, which also reads the gripper start and the table-top
height that goal sampling and the scripted expert use. The subclasses here override just those
two steps: the model is compiled from an ``MjSpec`` of the same file, edited per the variant,
before anything (renderer, initial state, goal constants) is derived from it, so all of it stays
consistent. Registered as ``lam_robot/FetchPickAndPlaceVariant-v4`` and ``lam_robot/FetchPushVariant-v4``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.utils.ezpickle import EzPickle
from gymnasium_robotics.envs.fetch.pick_and_place import MujocoFetchPickAndPlaceEnv
from gymnasium_robotics.envs.fetch.push import MujocoFetchPushEnv

from lam_robot.variants import FETCH_OBJECT_SIZE, Variant, parse_variant

TABLE_TOP = 0.4  # table0's top in the Fetch MJCF files: body z 0.2 plus half-height 0.2
SETTLE_STEPS = 10  # as many env steps as gymnasium-robotics lets the arm settle in _env_setup


def edit_fetch_spec(spec: mujoco.MjSpec, variant: Variant) -> None:
    """Apply a variant's object and table changes to the MjSpec of a Fetch object task."""
    obj = spec.geom("object0")
    if variant.object_size is not None:
        obj.size = np.full(3, variant.object_size)
    if variant.object_mass is not None:
        obj.mass = variant.object_mass
    if variant.object_friction is not None:
        obj.friction = np.array(variant.object_friction)
    if variant.table_offset is not None:
        dx, dy, dz = variant.table_offset
        table = spec.body("table0")
        # Raise the top by dz while the box keeps standing on the floor.
        table.pos = np.asarray(table.pos) + [dx, dy, dz / 2]
        top = table.geoms[0]
        top.size = np.asarray(top.size) + [0.0, 0.0, dz / 2]


class _FetchVariantMixin:
    """Builds the model from an edited MjSpec and moves the object and gripper starts with it."""

    variant: Variant
    # Attributes of gymnasium-robotics' MujocoFetchEnv that the overrides below use.
    fullpath: str
    width: int
    height: int
    initial_qpos: Any
    n_substeps: int
    model: mujoco.MjModel
    data: mujoco.MjData
    _utils: Any
    _model_names: Any
    initial_gripper_xpos: np.ndarray
    height_offset: float

    def _initialize_simulation(self) -> None:
        # MujocoRobotEnv._initialize_simulation with MjModel.from_xml_path replaced by the edited spec.
        spec = mujoco.MjSpec.from_file(self.fullpath)
        edit_fetch_spec(spec, self.variant)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._model_names = self._utils.MujocoModelNames(self.model)
        self.model.vis.global_.offwidth = self.width
        self.model.vis.global_.offheight = self.height
        self._env_setup(initial_qpos=self.initial_qpos)
        self.initial_time = self.data.time
        self.initial_qpos = np.copy(self.data.qpos)
        self.initial_qvel = np.copy(self.data.qvel)

    def _env_setup(self, initial_qpos: dict[str, Any]) -> None:
        v = self.variant
        qpos = dict(initial_qpos)
        table = np.array(v.table_offset or (0.0, 0.0, 0.0))
        # The object rests on the (moved) table while the arm settles, so height_offset is read off it.
        obj = np.array(qpos["object0:joint"], dtype=float)
        obj[:2] += table[:2]
        obj[2] = TABLE_TOP + table[2] + (v.object_size or FETCH_OBJECT_SIZE)
        qpos["object0:joint"] = obj
        super()._env_setup(qpos)  # type: ignore[misc]
        if v.gripper_offset is None:
            return
        mocap = self.model.body_mocapid[self._model_names.body_name2id["robot0:mocap"]]
        target = self.data.mocap_pos[mocap] + np.array(v.gripper_offset)
        self._utils.set_mocap_pos(self.model, self.data, "robot0:mocap", target)
        for _ in range(SETTLE_STEPS):
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.initial_gripper_xpos = self._utils.get_site_xpos(self.model, self.data, "robot0:grip").copy()
        self.height_offset = float(self._utils.get_site_xpos(self.model, self.data, "object0")[2])


def _as_variant(variant: Variant | Mapping[str, Any], env_id: str) -> Variant:
    return variant if isinstance(variant, Variant) else parse_variant(variant, env_id, {}, env_id)


class FetchPickAndPlaceVariantEnv(_FetchVariantMixin, MujocoFetchPickAndPlaceEnv):
    """FetchPickAndPlace-v4 in a world edited by ``variant`` (a ``Variant`` or its ``[variant]`` table)."""

    def __init__(self, variant: Variant | Mapping[str, Any], reward_type: str = "sparse", **kwargs: Any) -> None:
        self.variant = _as_variant(variant, "FetchPickAndPlace-v4")
        super().__init__(reward_type=reward_type, **kwargs)
        EzPickle.__init__(self, variant=self.variant, reward_type=reward_type, **kwargs)


class FetchPushVariantEnv(_FetchVariantMixin, MujocoFetchPushEnv):
    """FetchPush-v4 in a world edited by ``variant`` (a ``Variant`` or its ``[variant]`` table)."""

    def __init__(self, variant: Variant | Mapping[str, Any], reward_type: str = "sparse", **kwargs: Any) -> None:
        self.variant = _as_variant(variant, "FetchPush-v4")
        super().__init__(reward_type=reward_type, **kwargs)
        EzPickle.__init__(self, variant=self.variant, reward_type=reward_type, **kwargs)


# Env id families (FetchPickAndPlace-v4 and its Dense id, ...) -> the variant id registered for them.
VARIANT_IDS = {
    "FetchPickAndPlace": "lam_robot/FetchPickAndPlaceVariant-v4",
    "FetchPush": "lam_robot/FetchPushVariant-v4",
}
for _family, _variant_id in VARIANT_IDS.items():
    if _variant_id not in gym.registry:
        gym.register(_variant_id, entry_point=f"{__name__}:{_family}VariantEnv", max_episode_steps=50)


def make_fetch_variant(env_id: str, variant: Variant, **make_kwargs: Any) -> gym.Env:
    """``gymnasium.make`` of the variant env for ``env_id`` (one of ``FETCH_VARIANT_ENV_IDS``), keeping
    the kwargs that id registers (the Dense ids' reward type); ``make_kwargs`` override them."""
    family = env_id.split("-")[0].removesuffix("Dense")
    return gym.make(VARIANT_IDS[family], **{**gym.spec(env_id).kwargs, **make_kwargs, "variant": variant})

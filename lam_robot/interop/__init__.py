"""Move demos between lam-robot's HDF5 files and other tools: `imitation` trajectories, Minari and
LeRobot (v3.0) datasets.

Exports read through the one reader (DemoFile) and imports write through the one writer
(DemoWriter); ``carry`` is the format-neutral whole file in between. A round trip gives back every
dataset and attribute: observations, actions, rewards, dones, terminated, truncated, interventions,
input events and any other per-step array, each demo's seed, source, success and input device, the
masks and env_args. Each exporter returns ``Exported(demos, dropped)``; ``dropped`` names, one line
each, what the format could not keep.
"""

from lam_robot.interop.carry import Exported
from lam_robot.interop.imitation_io import export_imitation, import_imitation, to_imitation
from lam_robot.interop.lerobot_io import export_lerobot, import_lerobot
from lam_robot.interop.minari_io import export_minari, import_minari

__all__ = [
    "Exported",
    "export_imitation",
    "export_lerobot",
    "export_minari",
    "import_imitation",
    "import_lerobot",
    "import_minari",
    "to_imitation",
]

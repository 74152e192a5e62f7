"""BC training throughput, and the share of training wall time spent outside the model.

    python benchmarks/bc_throughput.py [--demos 50] [--epochs 10] [--out benchmarks/results/bc_throughput.json]

Records expert demos of grasp (once, into a temporary file), trains the default Transformer
and reports samples/s and the share of each training step's wall time spent outside
forward, backward and the optimizer step (batch gathering, schedule, logging, progress bar).
Target: that share <= 10%. Both numbers come from the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402
from lam_robot.config import BCConfig  # noqa: E402
from lam_robot.train.bc import train_bc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bc_throughput.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "grasp.hdf5"
        record_expert(load_task("grasp"), data, args.demos)
        # Warm-up run: pays the one-time imports (torch's optimizer pulls in dynamo, matplotlib).
        train_bc(BCConfig(data=str(data), out=str(Path(tmp) / "warmup"), epochs=1), progress=False)
        config = BCConfig(data=str(data), out=str(Path(tmp) / "run"), epochs=args.epochs)
        start = time.perf_counter()
        result = train_bc(config, progress=False)
        wall = time.perf_counter() - start
    # Whole run: also counts reading and normalising the file, validation, checkpoints and the plot.
    run_outside = 1.0 - result.model_seconds / wall
    report = {
        "task": "grasp", "demos": args.demos, "epochs": args.epochs, "torch_threads": torch.get_num_threads(),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("data", "out")},
        "samples_per_second": round(result.samples_per_second, 1),
        "outside_model_fraction": round(result.data_time_fraction, 4),
        "target_outside_model_fraction": 0.10,
        "meets_target": result.data_time_fraction <= 0.10,
        "whole_run_seconds": round(wall, 2),
        "whole_run_outside_model_fraction": round(run_outside, 4),
    }
    print(f"{report['samples_per_second']:.0f} samples/s (windows of K={config.context}); "
          f"{100 * result.data_time_fraction:.1f}% of step time outside forward/backward (target <= 10%); "
          f"whole run incl. loading, validation, checkpoints: {100 * run_outside:.1f}% outside")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""BC samples/s at 1 and 2 data-parallel ranks (torchrun, gloo on CPU), measured in one run, alternating.

    python benchmarks/bc_ranks.py [--demos 50] [--epochs 4] [--repeats 2]

Records grasp expert demos once, then trains the default Transformer with the same global batch,
once as one process and once under `torchrun --nproc_per_node 2`, `--repeats` times alternating, each
process with one torch thread (so 2 ranks use the 2 cores one process leaves idle). Samples/s is the
median over epochs 2.. of the log's samples_per_s (global windows per second; epoch 1 pays start-up).
Writes benchmarks/results/bc_ranks.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from lam_robot.recording import record_expert  # noqa: E402
from lam_robot.tasks import load_task  # noqa: E402


def train(data: Path, out: Path, ranks: int, epochs: int) -> float:
    """Samples/s of one train-bc run with ``ranks`` processes."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port",
                "29531", "-m", "lam_robot"] if ranks > 1 else [sys.executable, "-m", "lam_robot"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([*launcher, "train-bc", "--data", str(data), "--out", str(out), "--epochs", str(epochs),
                    "--overwrite"], check=True, env=env, capture_output=True)
    with open(out / "log.csv") as f:
        rates = [float(r["samples_per_s"]) for r in csv.DictReader(f)][1:]
    return statistics.median(rates)


def main() -> None:
    """Alternate 1 and 2 ranks, then write the medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bc_ranks.json")
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "grasp.hdf5"
        record_expert(load_task("grasp"), data, args.demos)
        for _ in range(args.repeats):
            for ranks in (1, 2):
                rates[ranks].append(train(data, Path(tmp) / f"run{ranks}", ranks, args.epochs))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    report = {"task": "grasp", "demos": args.demos, "epochs": args.epochs, "samples_per_s": rates,
              "median_1_rank": round(one), "median_2_ranks": round(two), "ratio_2_to_1": round(two / one, 2),
              "load_average": os.getloadavg()[0]}
    print(f"BC samples/s: 1 rank {one:.0f}, 2 ranks {two:.0f} ({two / one:.2f}x); load {report['load_average']:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

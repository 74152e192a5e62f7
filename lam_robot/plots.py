"""The figures a training run leaves beside its checkpoint: BC loss curves, the fine-tuning learning
curve and the HG-DAgger rounds. Drawn on a bare matplotlib ``Figure`` (not pyplot, which would change
the caller's backend, e.g. a notebook's) and saved under a temporary name, then moved into place, so
that a reader never sees half a PNG."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@contextmanager
def _figure(png: Path, figsize: tuple[float, float], dpi: int) -> Iterator[Axes]:
    """One set of axes on a fresh figure; on a clean exit, tight layout and an atomic save to ``png``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    yield fig.subplots()
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, png)


def _read_log(log_path: Path) -> list[dict[str, str]]:
    with open(log_path) as f:
        return list(csv.DictReader(f))


def _column(rows: list[dict[str, str]], key: str, kind: Callable[[str], Any] = float) -> np.ndarray:
    return np.array([kind(r[key]) for r in rows])


def plot_bc_curves(log_path: Path, png: Path) -> None:
    """Training and validation loss (and success, if evaluated) against epoch, from a BC run's log."""
    rows = _read_log(log_path)
    if not rows:
        return
    with _figure(png, (6, 4), dpi=100) as ax:
        ax.plot([int(r["epoch"]) for r in rows], [float(r["train_loss"]) for r in rows], label="train loss")
        valid = [(int(r["epoch"]), float(r["valid_loss"])) for r in rows if r["valid_loss"]]
        if valid:
            ax.plot(*zip(*valid), label="valid loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        success = [(int(r["epoch"]), float(r["success_rate"])) for r in rows if r["success_rate"]]
        if success:
            ax2 = ax.twinx()
            ax2.plot(*zip(*success), "o-", color="tab:green", label="success rate")
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("success rate")
            ax2.legend(loc="upper center")
        ax.legend(loc="upper right")
        ax.set_title(log_path.parent.name)


def plot_finetune_curve(log_path: Path, png: Path, title: str) -> None:
    """Success rate with its 95% Wilson interval against environment steps, from a fine-tuning run's log."""
    rows = _read_log(log_path)
    if not rows:
        return
    steps = _column(rows, "env_steps", int)
    with _figure(png, (6, 4), dpi=100) as ax:
        ax.plot(steps, _column(rows, "success_rate"), "o-", label="success rate")
        ax.fill_between(steps, _column(rows, "ci_low"), _column(rows, "ci_high"), alpha=0.2, label="95% Wilson CI")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.legend(loc="lower right")


def plot_dagger_rounds(rows: list[dict[str, Any]], png: Path, task: str) -> None:
    """Success rate (95% Wilson interval as error bars) after each HG-DAgger round, round 0 being the BC start."""
    rounds = [r["round"] for r in rows]
    rates = np.array([r["success_rate"] for r in rows])
    low = rates - np.array([r["ci_low"] for r in rows])
    high = np.array([r["ci_high"] for r in rows]) - rates
    with _figure(png, (5, 3.5), dpi=110) as ax:
        ax.errorbar(rounds, 100 * rates, yerr=100 * np.vstack([low, high]), marker="o", capsize=3)
        ax.set_xlabel("HG-DAgger round (0: BC start)")
        ax.set_ylabel("success % (95% Wilson CI)")
        ax.set_ylim(0, 102)
        ax.set_xticks(rounds)
        ax.set_title(f"{task}: expert interventions, then retraining")

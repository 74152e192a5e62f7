"""The result cache the learning-target benchmarks share: one JSON file of finished runs, appended
atomically, re-read before each append (another benchmark process may have added runs meanwhile)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path


def _cache(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def load_runs(path: Path, kind: str = "runs") -> list[dict]:
    """The finished runs of this kind in the cache (none if it does not exist yet)."""
    return _cache(path).get(kind, [])


def append_run(path: Path, run: dict, kind: str = "runs") -> None:
    """Add one finished run of this kind (other kinds kept): written to a temporary name, then renamed over
    the cache."""
    cache = _cache(path)
    cache[kind] = [*cache.get(kind, []), run]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    os.replace(tmp, path)


def made_once(path: Path, make) -> Path:
    """``path``, made by ``make(partial_path)`` through a temporary name the first time, so that a killed
    benchmark leaves no half-written file behind."""
    if not path.exists():
        partial = path.with_name(f"{path.stem}.partial{path.suffix}")
        partial.unlink(missing_ok=True)
        make(partial)
        partial.rename(path)
    return path


def finetune_curve(out: Path, *columns: str) -> list[tuple]:
    """A finetune run's evaluations from its log.csv: (env steps, then the named columns as floats) per row."""
    with open(out / "log.csv") as f:
        return [(int(r["env_steps"]), *(float(r[c]) for c in columns)) for r in csv.DictReader(f)]

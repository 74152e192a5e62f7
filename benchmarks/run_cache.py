"""The result cache the learning-target benchmarks share: one JSON file of finished runs, appended
atomically, re-read before each append (another benchmark process may have added runs meanwhile)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def load_runs(path: Path) -> list[dict]:
    """The finished runs in the cache (none if it does not exist yet)."""
    return json.loads(path.read_text())["runs"] if path.exists() else []


def append_run(path: Path, run: dict) -> None:
    """Add one finished run: written to a temporary name, then renamed over the cache."""
    cache = {"runs": [*load_runs(path), run]}
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

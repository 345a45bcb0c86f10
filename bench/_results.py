"""Where the benchmarks write their figures."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(path: str | Path, figures: object) -> None:
    """Write `figures` as JSON to `path`, creating its directory first.

    The documented commands write under ``bench/results/``, which a fresh clone does not
    have (it is ignored by git); a run of several minutes must not fail at its last step.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(figures, indent=2))

"""``rpnet run`` / ``rpnet status`` / ``rpnet sweep``: the stages in order in one work dir, each
skipped when its inputs are unchanged, rerun when they changed, continued when it was killed.

- :mod:`.graph`: which config sections and upstream stages each stage depends on.
- :mod:`.fingerprint`: hashes of those inputs (config sections, upstream fingerprints, the dataset).
- :mod:`.state`: each stage's state in a work dir (done / stale / partial / missing).
- :mod:`.runner`: :func:`run_pipeline`, the loop that acts on those states.
- :mod:`.status`: the ``rpnet status`` table.
- :mod:`.commands`: the command-line side of ``run``, ``status`` and ``sweep``.

The names below are imported on first use, so that ``rpnet --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run_pipeline": "runner", "StageResult": "runner",
    "stage_statuses": "state", "StageStatus": "state",
    "format_status": "status",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)

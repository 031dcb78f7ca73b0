"""Progress bars: live on a terminal, a line every so often in logs (CI, nohup)."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # when stderr is not a terminal, refresh at most this often


def progress_bar(total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True) -> tqdm:
    """A tqdm bar with ETA; quiet (one update per LOG_INTERVAL_S) when stderr is not a TTY."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, mininterval=0.1 if interactive else LOG_INTERVAL_S)

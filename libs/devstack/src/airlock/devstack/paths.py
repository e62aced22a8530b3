"""Where the dev stack keeps downloaded jars (shared cache) and run state (per checkout)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Download cache shared by every checkout: ``$AIRLOCK_CACHE_DIR`` or ``~/.cache/airlock``."""
    configured = os.environ.get("AIRLOCK_CACHE_DIR")
    base = Path(configured) if configured else Path.home() / ".cache" / "airlock"
    base.mkdir(parents=True, exist_ok=True)
    return base


def state_dir(create: bool = True) -> Path:
    """Run state of the local stack (broker data, logs, dev keys): ``$AIRLOCK_STATE_DIR`` or ``./.airlock``.

    Args:
        create: Create the directory if missing (commands that only look for it pass False).
    """
    configured = os.environ.get("AIRLOCK_STATE_DIR")
    base = Path(configured) if configured else Path.cwd() / ".airlock"
    if create:
        base.mkdir(parents=True, exist_ok=True)
    return base

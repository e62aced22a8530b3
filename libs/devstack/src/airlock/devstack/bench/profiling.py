"""A sampling profile of a running service (py-spy), summarized as its hottest functions.

py-spy attaches to the process from outside (no code change, little overhead with
``--nonblocking``) and writes collapsed stacks (``frame;frame;frame count`` per line); the
summary counts, per function, the samples in which it is on the CPU (self) and anywhere on
the stack (inclusive).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def hottest(cpu_ms_per_request: Mapping[str, float]) -> str:
    """The service with the most CPU per request (the load generator's own process excluded)."""
    services = {k: v for k, v in cpu_ms_per_request.items() if k not in ("kafka", "fake-openai")}
    return max(services, key=lambda name: services[name]) if services else "redactor"


#: Frames on every stack (threads, the event loop, the CLI): noise in the inclusive list.
PLUMBING = ("threading.py", "concurrent/futures", "asyncio/", "runpy", "typer/", "anyio/", "click/", "uvicorn/")


def summarize_collapsed(lines: Iterable[str], top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed ("raw") output.

    The inclusive list leaves out :data:`PLUMBING` frames (thread and event-loop entry points
    that are on every stack); the self list keeps everything, idle waits included.
    """
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return {"samples": 0, "self": [], "inclusive": []}
    return {
        "samples": total,
        "self": [(name, 100 * count / total) for name, count in self_counts.most_common(top)],
        "inclusive": [
            (name, 100 * count / total)
            for name, count in inclusive.most_common()
            if not any(marker in name for marker in PLUMBING)
        ][:top],
    }


def _short(frame: str) -> str:
    """``handle (airlock/redactor/handlers.py:42)`` → ``handle (airlock/redactor/handlers.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_profile(pid: int, seconds: float, out: Path, rate: int = 100) -> dict[str, Any]:
    """Sample ``pid`` for ``seconds`` with py-spy; keep the collapsed stacks in ``out`` and summarize.

    Returns a dict with ``samples``, ``self`` and ``inclusive`` (function, % of samples), or
    ``error`` saying why there is no profile (py-spy missing, not permitted to attach…).
    """
    executable = py_spy()
    if executable is None:
        return {"error": "py-spy is not installed (it is a dev requirement: make install)"}
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        return {"error": f"py-spy exited {done.returncode}: {(done.stderr or done.stdout)[-300:]}"}
    return {**summarize_collapsed(out.read_text().splitlines()), "raw": out.name}


async def profile_process(pid: int, seconds: float, out: Path, rate: int = 100) -> dict[str, Any]:
    """:func:`record_profile` in a thread, so the event loop keeps driving load meanwhile."""
    return await asyncio.to_thread(record_profile, pid, seconds, out, rate)

"""``airlock dev up`` (what ``make run`` runs): the demo completes, and stopping leaves nothing behind.

It runs the real command as a separate process on its own broker port and state directory,
interrupts it the way people and supervisors do (SIGINT, then an impatient SIGTERM while it
is still stopping) and checks that every process it started is gone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airlock.devstack.kafka import free_port

pytestmark = pytest.mark.integration

AIRLOCK = Path(sys.executable).with_name("airlock")


class Output:
    """The command's stdout lines, read on a thread so waiting for one can time out."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        """The first line starting with ``prefix``; fails with everything read so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting with {prefix!r}; output so far:\n" + "\n".join(self.lines))


class DevUp:
    """The running command, its output, and every process it was seen to start."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.output = Output(process)
        self.seen: list[psutil.Process] = []

    def children(self) -> list[psutil.Process]:
        """Its processes now (remembered, so teardown finds them even if it dies first)."""
        try:
            current = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            current = []
        self.seen += [p for p in current if p not in self.seen]
        return current


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[DevUp]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AIRLOCK_KAFKA_"))}
    env |= {"AIRLOCK_STATE_DIR": str(tmp_path / "state"), "AIRLOCK_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    process = subprocess.Popen(
        [str(AIRLOCK), "dev", "up", "--partitions", "2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    run = DevUp(process)
    try:
        yield run
    finally:
        for child in run.seen + run.children():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_the_demo_completes_and_an_impatient_stop_leaves_no_process(dev_up: DevUp) -> None:
    process, output = dev_up.process, dev_up.output
    output.wait_for("ready in", timeout_s=300)
    seen = output.wait_for("(a) model saw", timeout_s=180)
    assert "<PERSON_1>" in seen and "<EMAIL_ADDRESS_1>" in seen
    answer = output.wait_for("(b) answer", timeout_s=60)
    assert "<PERSON_1>" not in answer and "@" in answer, "the caller gets the restored answer"
    output.wait_for("serving;", timeout_s=120)
    started = dev_up.children()
    commands = " ".join(" ".join(p.cmdline()) for p in started)
    assert "kafka.Kafka" in commands and "fake_openai" in commands and "airlock.redactor.app" in commands

    # Signals to the command alone (a supervisor, `kill`): the children only stop if it stops them.
    process.send_signal(signal.SIGINT)
    output.wait_for("stopping", timeout_s=30)
    process.send_signal(signal.SIGTERM)  # and someone loses patience while it is stopping
    output.wait_for("stopped", timeout_s=180)
    process.wait(60)

    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"left running: {[' '.join(p.cmdline()) for p in alive]}"

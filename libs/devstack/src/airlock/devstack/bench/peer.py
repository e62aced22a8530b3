"""Suite ``litellm``: what users would pick instead — LiteLLM's proxy with its Presidio PII guardrail.

Set-up, built by the suite itself:

* **LiteLLM** ``==`` :data:`LITELLM_VERSION` in its own virtual environment outside the
  repository (``~/.cache/airlock/bench/litellm-<version>/``, created on first use from the
  package index with the pins in :data:`LITELLM_PACKAGES`). Its ``proxy`` extra names a
  ``litellm-proxy`` package the index does not carry, so the extra's other requirements (and
  the modules the proxy imports at start-up) are pinned here instead.
* **Presidio's REST services** (:mod:`airlock.devstack.bench.presidio_http`): ``/analyze`` and
  ``/anonymize`` with Presidio's default recognizers and the *same spaCy model* as Airlock's
  redactor, two worker processes (Airlock runs two redactor replicas).
* **The same fake OpenAI server**, answering in 0 ms and in 300 ms.
* LiteLLM's ``presidio`` guardrail in ``pre_call`` mode, on by default, with
  ``output_parse_pii`` (restore the caller's values in the answer, as Airlock does); two
  proxy workers (one per core); a master key; no database (so no spend logs, no audit trail).

It is driven by the same open-loop generator at the same offered loads with the same prompts,
and scored on the same labeled set for leakage (what the fake model received).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airlock.devstack.bench import Measurement
from airlock.devstack.bench.e2e import (
    LIGHT_RATE,
    MODEL,
    MODEL_LATENCIES_MS,
    OVERHEAD_RATE,
    PARAMS,
    RATES,
    answer_timeout,
    one_at_a_time,
    prompts,
    step_timing,
    sweep,
)
from airlock.devstack.bench.load import StepResult, drive, max_sustained, summarize
from airlock.devstack.bench.watch import ProcessMonitor, per_service
from airlock.devstack.eval.dataset import Sample
from airlock.devstack.kafka import free_port
from airlock.devstack.mesh import FakeOpenAIProcess
from airlock.redactor import SINGLE_THREADED_MATH

log = logging.getLogger(__name__)

SUITE = "litellm"
LITELLM_VERSION = "1.110.2"
#: Everything installed into the peer's virtual environment, pinned (pip resolves the rest).
LITELLM_PACKAGES: tuple[str, ...] = (
    f"litellm=={LITELLM_VERSION}",
    # The `proxy` extra, minus the `litellm-proxy` package the index lacks:
    "gunicorn==23.0.0",
    "uvicorn==0.54.0",
    "uvloop==0.23.0",
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "backoff==2.2.1",
    "rq==2.12.0",
    # Imported by the proxy at start-up (found by starting it):
    "orjson==3.13.0",
    "APScheduler==3.11.3",
    "python-multipart==0.0.34",
    "cryptography==50.0.2",
    "PyNaCl==1.6.2",
    "PyJWT==2.15.1",
    "email-validator==2.4.0",
    "websockets==17.4",
    "semver==3.1.2",
    "Expression==5.8.0",
    "fastapi-sso==0.23.0",
    "mcp==2.3.0",
    "soundfile==0.14.0",
)
MASTER_KEY = "sk-airlock-bench"  # not a secret: a loopback-only proxy started and stopped by the suite
PRESIDIO_WORKERS = 2
#: One proxy worker per core. LiteLLM's Presidio guardrail holds one lock per worker around each
#: whole /analyze and /anonymize HTTP call (``_get_session_iterator``), so a worker makes one
#: Presidio call at a time; a second worker doubles that ceiling.
PROXY_WORKERS = 2
CAVEATS = (
    "A queue against an HTTP proxy. Airlock's path is five Kafka hops (ingest, redactor, llm-worker, "
    "redactor, reply), each a consume and a transaction commit of outputs, audit event and offsets; "
    "LiteLLM's is one HTTP hop plus two HTTP calls to Presidio. Airlock's latency buys durability: a "
    "request survives any process crash and is answered once.",
    "Durability and audit. Every Airlock request, redacted prompt, answer and state transition is written "
    "to Kafka (acks=all, exactly-once transactions) and sealed by the auditor into a hash-chained, signed "
    "ledger; that work is inside Airlock's figures. LiteLLM here runs without a database: no spend logs, "
    "no audit trail, and requests in flight are lost if it stops.",
    "Admission. Airlock checks an HMAC signature, replay and duplicate ids, grants and quotas per request "
    "(with a Kafka round trip for the seen-book and usage feeds); LiteLLM compares a master key.",
    "Redaction. Airlock applies its versioned policy (tuned recognizers, name parts, context words) and also "
    "scans every answer for PII; LiteLLM's guardrail sends the prompt to Presidio with its defaults (every "
    "entity type). Both use the same spaCy model. Leakage and utility therefore differ by design, and are "
    "reported side by side rather than assumed equal.",
    "LiteLLM's guardrail (this version) holds a per-worker lock around each whole Presidio HTTP call, so each "
    "proxy worker makes one Presidio call at a time: its throughput ceiling is about workers / (analyze + "
    "anonymize time), whatever Presidio's own capacity.",
    "Processes. Airlock: ingest, 2 redactors, llm-worker, auditor, plus the Kafka broker (a JVM). LiteLLM: "
    "2 proxy workers plus 2 Presidio workers. Both share the same 2 cores with the fake model and the load "
    "generator, which for Airlock also consumes the reply topic.",
)


def venv_dir(version: str = LITELLM_VERSION) -> Path:
    """Where the peer's virtual environment lives (outside the repository)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "airlock" / "bench" / f"litellm-{version}"


def _stamp(packages: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(packages).encode()).hexdigest()


def base_python() -> str:
    """The interpreter this virtual environment was made from (new venvs start from it)."""
    return getattr(sys, "_base_executable", sys.executable)


def ensure_venv(packages: Sequence[str] = LITELLM_PACKAGES, timeout_s: float = 1200.0) -> Path:
    """Create (once) the peer's virtual environment and install ``packages``; return its ``litellm``.

    Raises:
        RuntimeError: The environment could not be created or the packages not installed
            (the message says which step and ends with pip's output).
    """
    where = venv_dir()
    stamp = where / ".airlock-installed"
    litellm = where / "bin" / "litellm"
    if litellm.exists() and stamp.exists() and stamp.read_text() == _stamp(packages):
        return litellm
    where.parent.mkdir(parents=True, exist_ok=True)
    if not (where / "bin" / "python").exists():
        made = subprocess.run([base_python(), "-m", "venv", str(where)], capture_output=True, text=True)
        if made.returncode != 0:
            raise RuntimeError(f"creating {where} failed: {made.stderr[-1000:]}")
    env = {**os.environ, "PIP_CONSTRAINT": "", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    print(f"installing LiteLLM {LITELLM_VERSION} into {where} (once)…", file=sys.stderr)
    installed = subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    if installed.returncode != 0 or not litellm.exists():
        raise RuntimeError(f"pip install into {where} failed: {(installed.stderr or installed.stdout)[-1500:]}")
    stamp.write_text(_stamp(packages))
    return litellm


def _wait_http(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{url} exited with {process.returncode}: {log_path.read_text(errors='replace')[-1500:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback only)
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout_s:.0f}s; see {log_path}")


def _spawn(command: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log_file = open(log_path, "ab")  # noqa: SIM115 (owned by the child)
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    log_file.close()
    return process


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)  # the proxy and the Presidio workers are process groups
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(10)


def config_yaml(base_url: str) -> str:
    """LiteLLM's proxy configuration: one model on the fake, the Presidio guardrail on every request."""
    return f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {base_url}
      api_key: sk-airlock-fake
guardrails:
  - guardrail_name: presidio-pii
    litellm_params:
      guardrail: presidio
      mode: pre_call
      default_on: true
      output_parse_pii: true
litellm_settings:
  telemetry: false
general_settings:
  master_key: {MASTER_KEY}
"""


class PeerBench:
    """LiteLLM + Presidio + the fake, as processes, and the instruments around them."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.fake: FakeOpenAIProcess | None = None
        self.presidio: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.monitor: ProcessMonitor | None = None
        self.url = ""
        self.prompts = prompts()

    def start(self, litellm: Path) -> None:
        """Fake, Presidio (model loading takes a while), LiteLLM; then the process monitor."""
        self.fake = FakeOpenAIProcess(free_port(), self.state / "fake-openai.log").start()
        presidio_port = free_port()
        presidio_log = self.state / "presidio.log"
        self.presidio = _spawn(
            [
                sys.executable,
                "-m",
                "airlock.devstack.bench.presidio_http",
                "--port",
                str(presidio_port),
                "--workers",
                str(PRESIDIO_WORKERS),
            ],
            presidio_log,
            # The same numeric threading as the redactor, so both run spaCy alike.
            env={**os.environ, **SINGLE_THREADED_MATH},
        )
        base = f"http://127.0.0.1:{presidio_port}"
        config = self.state / "litellm.yaml"
        config.write_text(config_yaml(self.fake.base_url))
        proxy_port = free_port()
        env = {
            **os.environ,
            "PRESIDIO_ANALYZER_API_BASE": base,
            "PRESIDIO_ANONYMIZER_API_BASE": base,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list
            "LITELLM_LOG": "ERROR",
        }
        env.pop("PIP_CONSTRAINT", None)
        proxy_log = self.state / "litellm.log"
        self.proxy = _spawn(
            [
                str(litellm),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(proxy_port),
                "--num_workers",
                str(PROXY_WORKERS),
            ],
            proxy_log,
            env,
        )
        self.url = f"http://127.0.0.1:{proxy_port}"
        _wait_http(f"{base}/health", self.presidio, presidio_log, 300)
        _wait_http(f"{self.url}/health/liveliness", self.proxy, proxy_log, 300)
        self.monitor = ProcessMonitor(self._processes()).start()

    def _processes(self) -> dict[str, int]:
        import psutil

        assert self.proxy is not None and self.presidio is not None and self.fake is not None
        assert self.fake.process is not None
        found = {"litellm-0": self.proxy.pid, "fake-openai": self.fake.process.pid}
        workers = [
            worker
            for worker in psutil.Process(self.presidio.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(worker.cmdline())
        ]
        for index, worker in enumerate(workers):
            found[f"presidio-{index}"] = worker.pid
        for index, child in enumerate(psutil.Process(self.proxy.pid).children(recursive=True), start=1):
            found[f"litellm-{index}"] = child.pid
        return found

    def stop(self) -> None:
        """Stop everything started."""
        if self.monitor is not None:
            self.monitor.stop()
        _stop(self.proxy)
        _stop(self.presidio)
        if self.fake is not None:
            self.fake.stop()

    async def step(self, session: Any, rate: float, model_ms: float, seconds: float) -> StepResult:
        """One open-loop step against the proxy."""
        assert self.monitor is not None
        timeout = answer_timeout(rate, seconds)
        import aiohttp

        async def send(index: int) -> tuple[bool, str]:
            sample = self.prompts[index % len(self.prompts)]
            body = _body(sample.text)
            try:
                async with session.post(
                    f"{self.url}/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    document = await response.json(content_type=None)
                    if response.status == 200 and document.get("choices"):
                        return True, ""
                    return False, f"HTTP {response.status}"
            except aiohttp.ClientConnectionError:
                return False, "send failed"

        cpu_before = self.monitor.cpu_seconds()
        samples = await drive(send, rate, seconds, answer_timeout_s=timeout)
        result = summarize("litellm", model_ms, rate, seconds, samples)
        # The proxy works on after a client gave up: CPU is read once it settled, per request sent.
        result.extra["settle_s"] = await self.settle(session)
        cpu_after = self.monitor.cpu_seconds()
        cpu = per_service({k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after})
        result.extra["cpu_ms_per_request"] = {k: 1000 * v / max(1, result.sent) for k, v in sorted(cpu.items())}
        log.warning(
            "litellm %4g ms model, %5g req/s offered: %.1f req/s, p50 %.0f p99 %.0f ms, failed %d %s",
            model_ms,
            rate,
            result.throughput,
            result.latency.p50,
            result.latency.p99,
            len(samples) - result.ok,
            result.errors,
        )
        return result

    async def settle(self, session: Any, quiet_s: float = 3.0, timeout_s: float = 300.0) -> float:
        """Wait until the proxy answers a request within ``quiet_s`` again (its backlog is worked off).

        Requests whose client gave up keep the proxy busy; the next step must not start behind
        them. Returns how long that took.
        """
        import aiohttp

        started = time.monotonic()
        await asyncio.sleep(1.0)
        while time.monotonic() - started < timeout_s:
            asked = time.monotonic()
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                await asyncio.wait_for(self.ask(session, self.prompts[0].text), timeout_s)
            if time.monotonic() - asked < quiet_s:
                break
        return time.monotonic() - started

    async def leakage(self, session: Any, samples: Sequence[Sample]) -> dict[str, Any]:
        """The labeled set one at a time: what the model saw, and what came back."""
        assert self.fake is not None

        async def ask(text: str) -> str:
            import aiohttp

            try:
                return await self.ask(session, text)
            except (aiohttp.ClientError, TimeoutError):  # counted as unanswered in the figures
                return ""

        return await one_at_a_time(self.fake, samples, ask)

    async def ask(self, session: Any, text: str, attempts: int = 3) -> str:
        """One request through the proxy; the answer's text ("" without one).

        A connection the server closed just as it was reused is retried (``attempts`` in all).
        """
        import aiohttp

        for attempt in range(1, attempts + 1):
            try:
                async with session.post(
                    f"{self.url}/chat/completions", json=_body(text), headers={"Authorization": f"Bearer {MASTER_KEY}"}
                ) as response:
                    document = await response.json(content_type=None)
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError):
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.5 * attempt)
        if not isinstance(document, dict):
            return ""
        choices = document.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")


def _body(text: str) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": PARAMS.max_tokens}


async def run_peer(quick: bool, rates: Sequence[float]) -> dict[str, Any]:
    """Install (once) and start the peer, run every step and the leakage set; return all data."""
    import aiohttp

    seconds, max_probes = step_timing(quick)
    data: dict[str, Any] = {
        "version": LITELLM_VERSION,
        "description": (
            f"LiteLLM {LITELLM_VERSION} proxy ({PROXY_WORKERS} workers, no database) with its `presidio` guardrail "
            f"(pre_call, default_on, output_parse_pii) calling Presidio's /analyze and /anonymize "
            f"({PRESIDIO_WORKERS} workers, Presidio defaults, the same spaCy model as Airlock's redactor), "
            f"against the same fake model; the same prompts and open-loop generator, {seconds:g} s per step."
        ),
        "caveats": list(CAVEATS),
        "step_seconds": seconds,
    }
    try:
        litellm = await asyncio.to_thread(ensure_venv)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        data["error"] = f"installing LiteLLM failed: {error}"
        return data
    state = Path(tempfile.mkdtemp(prefix="airlock-bench-litellm-"))
    bench = PeerBench(state)
    try:
        await asyncio.to_thread(bench.start, litellm)
        assert bench.monitor is not None and bench.fake is not None
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a request is
        # never written to a connection the server is closing.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.gather(*(bench.ask(session, s.text) for s in bench.prompts[:30]))
            bench.monitor.window("at rest")
            await asyncio.sleep(5)
            steps: list[StepResult] = []
            for model_ms in MODEL_LATENCIES_MS:
                bench.fake.configure(latency_ms=model_ms)
                bench.monitor.window(f"under load, model {model_ms:g} ms")

                async def step(rate: float, model: float) -> StepResult:
                    return await bench.step(session, rate, model, seconds)

                steps += await sweep(step, model_ms, rates, max_probes=max_probes, ceiling=1000.0)
            bench.monitor.window(None)
            data["steps"] = [s.as_dict() for s in steps]
            data["memory"] = bench.monitor.peaks
            data["leakage"] = await bench.leakage(session, prompts(60 if quick else 200))
    except (RuntimeError, OSError) as error:
        data["error"] = f"{error} (logs kept in {state})"
        bench.stop()
        return data
    except BaseException:
        print(f"litellm bench failed; logs kept in {state}", file=sys.stderr)
        bench.stop()
        raise
    bench.stop()
    shutil.rmtree(state, ignore_errors=True)
    return data


def measurements(data: dict[str, Any], airlock: dict[str, Any] | None) -> list[Measurement]:
    """LiteLLM's headline figures and, when the e2e suite ran too, the Airlock/LiteLLM ratios."""
    if data.get("error"):
        return [Measurement(SUITE, "LiteLLM could not be run", float("nan"), "", note=data["error"][:120])]
    theirs = [StepResult.from_dict(s) for s in data.get("steps", [])]
    ours = [StepResult.from_dict(s) for s in (airlock or {}).get("steps", [])]
    rows: list[Measurement] = []
    for model_ms in MODEL_LATENCIES_MS:
        best_theirs = max_sustained({s.offered: s.sustained for s in theirs if s.model_ms == model_ms}) or 0.0
        rows.append(Measurement(SUITE, f"max sustained, model {model_ms:g} ms", best_theirs, "req/s"))
        if ours:
            best_ours = (
                max_sustained(
                    {s.offered: s.sustained and s.extra.get("loss", 1) == 0 for s in ours if s.model_ms == model_ms}
                )
                or 0.0
            )
            rows.append(
                Measurement(
                    SUITE,
                    f"ratio Airlock/LiteLLM max sustained, model {model_ms:g} ms",
                    best_ours / best_theirs if best_theirs else float("nan"),
                    "×",
                    note="higher is better for Airlock",
                )
            )
        for rate in (LIGHT_RATE, OVERHEAD_RATE):
            rows += _overhead_rows(theirs, ours, model_ms, rate)
    theirs_leak, ours_leak = data.get("leakage", {}), (airlock or {}).get("leakage", {})
    if theirs_leak.get("matched"):
        rows.append(
            Measurement(SUITE, "PII leakage to the model", theirs_leak["leakage_pct"], "%", higher_is_better=False)
        )
        if ours_leak.get("matched") and theirs_leak["leakage_pct"] > 0:
            rows.append(
                Measurement(
                    SUITE,
                    "ratio Airlock/LiteLLM PII leakage",
                    ours_leak["leakage_pct"] / theirs_leak["leakage_pct"],
                    "×",
                    higher_is_better=False,
                    note="lower is better for Airlock",
                )
            )
    return rows


def _overhead_rows(
    theirs: Sequence[StepResult], ours: Sequence[StepResult], model_ms: float, rate: float
) -> list[Measurement]:
    """LiteLLM's overhead at one load and, when Airlock ran it too, the p50 and p99 ratios."""
    at = {s.system: s for s in [*theirs, *ours] if s.model_ms == model_ms and s.offered == rate}
    if "litellm" not in at:
        return []
    where = f"at {rate:g}/s, model {model_ms:g} ms"
    rows = [
        Measurement(SUITE, f"overhead {name} {where}", getattr(at["litellm"].overhead, name), "ms", None, False)
        for name in ("p50", "p99")
    ]
    if "airlock" in at:
        rows += [
            Measurement(
                SUITE,
                f"ratio Airlock/LiteLLM overhead {name} {where}",
                getattr(at["airlock"].overhead, name) / getattr(at["litellm"].overhead, name),
                "×",
                None,
                False,
                "lower is better for Airlock",
            )
            for name in ("p50", "p99")
            if getattr(at["litellm"].overhead, name) > 0
        ]
    return rows


def run(options: dict[str, Any]) -> list[Measurement]:
    """Run the suite; ``options``: ``quick``, ``rates``, ``run`` (the report being written)."""
    quick = bool(options.get("quick"))
    rates = tuple(options.get("rates") or RATES)
    data = asyncio.run(run_peer(quick, rates))
    report = options.get("run")
    if report is not None:
        report.data[SUITE] = data
    return measurements(data, report.data.get("e2e") if report is not None else None)

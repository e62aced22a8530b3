"""The images: multi-stage, slim, non-root, built from the repository root with the pins, and
`make images` either builds all of them or says clearly that it cannot."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from airlock.devstack.mesh import SERVICES as ENTRY_POINTS
from airlock.redactor.settings import RedactorSettings
from tests.chart.rendering import CHART, ROOT

IMAGES = {
    "ingest": ROOT / "services" / "ingest",
    "redactor": ROOT / "services" / "redactor",
    "llm-worker": ROOT / "services" / "llm-worker",
    "auditor": ROOT / "services" / "auditor",
    "cli": ROOT / "libs" / "devstack",
}
BUILD_TOOLS = re.compile(r"\b(apt-get|apt|apk|yum|dnf|gcc|g\+\+|make|build-essential|cargo|rustc|git|curl|wget)\b")


def stages(dockerfile: Path) -> list[list[str]]:
    """Instructions per stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or (line.startswith("ARG") and not result):
            continue
        if line.upper().startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def local_packages(directory: Path) -> set[str]:
    """Names of the Airlock packages a project depends on, itself included, transitively."""
    by_name = {}
    for pyproject in ROOT.glob("*/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        by_name[project["name"]] = (pyproject.parent, project.get("dependencies", []))
    wanted = {tomllib.loads((directory / "pyproject.toml").read_text())["project"]["name"]}
    todo = list(wanted)
    while todo:
        _, dependencies = by_name[todo.pop()]
        for dependency in dependencies:
            name = re.split(r"[\[<>=!~; ]", dependency, maxsplit=1)[0]
            if name in by_name and name not in wanted:
                wanted.add(name)
                todo.append(name)
    return {str(by_name[name][0].relative_to(ROOT)) for name in wanted}


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_is_multi_stage_slim_and_non_root(image: str) -> None:
    dockerfile = IMAGES[image] / "Dockerfile"
    build, final = stages(dockerfile)
    assert build[0].endswith("AS build")
    assert re.search(r"-slim", (ROOT / dockerfile).read_text()), "a slim base"
    # The build stage installs with the pins, wheels only, from the repository root.
    build_text = " ".join(build)
    assert "PIP_CONSTRAINT=/src/constraints.txt" in build_text
    assert "COPY constraints.txt" in build_text
    assert "--only-binary=:all:" in build_text
    for instruction in build:
        if instruction.startswith("COPY "):
            for source in shlex.split(instruction)[1:-1]:
                assert (ROOT / source).exists(), f"{image}: COPY {source} (paths are relative to the repo root)"
    # Every Airlock package the image needs is copied and built.
    for package in local_packages(IMAGES[image]):
        assert f"./{package}" in build_text, f"{image} misses {package}"
    # The final stage: copies the built environment, installs nothing, runs as the chart's user.
    final_text = " ".join(final)
    assert "COPY --from=build /opt/airlock /opt/airlock" in final_text
    assert not BUILD_TOOLS.search(final_text), BUILD_TOOLS.search(final_text)
    assert "pip install" not in final_text
    users = [i.split()[1] for i in final if i.startswith("USER ")]
    assert users, f"{image}: no USER"
    uid, _, gid = users[-1].partition(":")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["podSecurityContext"]["runAsUser"] != 0
    assert int(gid) == values["podSecurityContext"]["runAsGroup"]


@pytest.mark.parametrize("service", ["ingest", "redactor", "llm-worker", "auditor"])
def test_service_images_run_the_entry_point_on_the_charts_port(service: str) -> None:
    (final,) = stages(IMAGES[service] / "Dockerfile")[-1:]
    entrypoint = next(i for i in final if i.startswith("ENTRYPOINT"))
    assert yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT")) == ["faststream", "run", ENTRY_POINTS[service]]
    expose = next(i for i in final if i.startswith("EXPOSE"))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    key = {"llm-worker": "llmWorker"}.get(service, service)
    assert int(expose.split()[1]) == values[key]["port"]


def test_the_redactor_image_bakes_and_loads_its_spacy_model() -> None:
    final = stages(IMAGES["redactor"] / "Dockerfile")[-1]
    model = RedactorSettings.model_fields["spacy_model"].default
    assert any(i.startswith("RUN ") and f"spacy.load('{model}')" in i for i in final)
    # The model is a package dependency of the redactor, so the wheel install bakes it in.
    dependencies = tomllib.loads((IMAGES["redactor"] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert model in {re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].replace("-", "_") for d in dependencies}


def test_the_build_context_holds_only_sources_and_pins() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "**", "exclude everything, then allow what the images need"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"constraints.txt", "libs", "services"}


def _make_images(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAKE_ENGINE_LOG": str(tmp_path / "engine.log")}
    return subprocess.run(
        ["make", "--no-print-directory", "images", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_make_images_says_so_and_succeeds_when_no_engine_can_build(tmp_path: Path) -> None:
    result = _make_images(tmp_path, "CONTAINER_ENGINES=airlock-no-such-engine")
    assert result.returncode == 0, result.stderr
    assert "no container engine can build here" in result.stdout
    assert "nothing was built" in result.stdout
    strict = _make_images(tmp_path, "CONTAINER_ENGINES=airlock-no-such-engine", "REQUIRE_ENGINE=1")
    assert strict.returncode != 0
    assert "no container engine can build here" in strict.stdout


def test_make_images_builds_every_image_from_the_repo_root(tmp_path: Path) -> None:
    engine = tmp_path / "fake-engine"
    engine.write_text('#!/bin/sh\necho "$PWD $*" >> "$FAKE_ENGINE_LOG"\n')
    engine.chmod(engine.stat().st_mode | stat.S_IEXEC)
    # The first engine cannot build; the second answers `info`, so it is picked.
    result = _make_images(tmp_path, f"CONTAINER_ENGINES=airlock-no-such-engine {engine}")
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "engine.log").read_text().splitlines()
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert calls[0] == f"{ROOT} info"
    assert calls[1:] == [
        f"{ROOT} build -f {path.relative_to(ROOT)}/Dockerfile -t airlock/{name}:{version} ."
        for name, path in IMAGES.items()
    ]

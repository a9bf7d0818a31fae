"""The pure modules import neither asyncio nor aiohttp, directly or through sidecar imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sidecar

PACKAGE_ROOT = Path(sidecar.__file__).parent
FORBIDDEN = frozenset({"asyncio", "aiohttp"})


def pure_modules() -> list[str]:
    """Dotted names of every module the design declares pure (whole packages globbed)."""
    names = ["sidecar.analysis.queries", "sidecar.analysis.judge", "sidecar.engine.traffic"]
    for package in ("domain", "strategies"):
        for path in sorted((PACKAGE_ROOT / package).glob("*.py")):
            stem = path.stem
            names.append(
                f"sidecar.{package}" if stem == "__init__" else f"sidecar.{package}.{stem}"
            )
    return names


def module_path(name: str) -> Path:
    """The source file of a ``sidecar.*`` module or package."""
    relative = Path(*name.split(".")[1:])
    candidate = PACKAGE_ROOT / relative
    return candidate / "__init__.py" if candidate.is_dir() else candidate.with_suffix(".py")


def imported_names(path: Path) -> set[str]:
    """Every module name the file at ``path`` imports."""
    parts = ["sidecar", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts]
    is_package = parts[-1] == "__init__"
    module = ".".join(parts[:-1] if is_package else parts)
    return names_in_source(path.read_text(encoding="utf-8"), module, is_package=is_package)


def names_in_source(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module name an ``import`` or ``from ... import`` names, at any depth.

    Relative imports are resolved against ``module``'s package; ``from pkg import name``
    also yields ``pkg.name`` in case ``name`` is a submodule.
    """
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in names if n}


def forbidden_in(names: set[str]) -> set[str]:
    """The names whose top-level package is asyncio or aiohttp."""
    return {n for n in names if n.split(".")[0] in FORBIDDEN}


def sidecar_dependencies(name: str) -> set[str]:
    """The ``sidecar`` modules that importing ``name`` executes (packages included)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        path = module_path(current)
        if not path.exists():
            continue  # ``from pkg import name`` where name is not a module
        seen.add(current)
        pieces = current.split(".")
        todo.extend(".".join(pieces[:i]) for i in range(1, len(pieces)))
        todo.extend(n for n in imported_names(path) if n.split(".")[0] == "sidecar")
    return seen


def test_pure_module_list_is_complete() -> None:
    """The globbed list holds the modules the design names, so the checks below check them."""
    names = pure_modules()
    for expected in (
        "sidecar.domain.artifact",
        "sidecar.domain.manifest",
        "sidecar.domain.policy",
        "sidecar.domain.metadata_gates",
        "sidecar.domain.promotion",
        "sidecar.strategies.base",
        "sidecar.strategies.canary",
        "sidecar.strategies.blue_green",
        "sidecar.strategies.factory",
        "sidecar.analysis.queries",
        "sidecar.analysis.judge",
        "sidecar.engine.traffic",
    ):
        assert expected in names
        assert module_path(expected).is_file()


@pytest.mark.parametrize(
    ("source", "names", "forbidden"),
    [
        pytest.param("import asyncio\n", {"asyncio"}, {"asyncio"}, id="import"),
        pytest.param("import os, aiohttp.web as w\n", {"os", "aiohttp.web"}, {"aiohttp.web"},
                     id="import-as"),
        pytest.param("from asyncio import sleep\n", {"asyncio", "asyncio.sleep"},
                     {"asyncio", "asyncio.sleep"}, id="from"),
        pytest.param("def f():\n    import aiohttp\n", {"aiohttp"}, {"aiohttp"}, id="nested"),
        pytest.param("if TYPE_CHECKING:\n    from aiohttp import web\n",
                     {"aiohttp", "aiohttp.web"}, {"aiohttp", "aiohttp.web"},
                     id="type-checking-block"),
        pytest.param("import asyncio_extras\nimport aiohttpx\n", {"asyncio_extras", "aiohttpx"},
                     set(), id="similar-names"),
        pytest.param("from ..engine import clock\n", {"sidecar.engine", "sidecar.engine.clock"},
                     set(), id="relative-parent"),
        pytest.param("from . import artifact\n", {"sidecar.domain", "sidecar.domain.artifact"},
                     set(), id="relative-sibling"),
    ],
)  # fmt: skip
def test_checker_reads_every_import_form(source: str, names: set[str], forbidden: set[str]) -> None:
    """The AST checker sees every import form, resolves relative ones, and flags only ours."""
    found = names_in_source(source, "sidecar.domain.probe")
    assert found == names
    assert forbidden_in(found) == forbidden


def test_dependencies_follow_sidecar_imports() -> None:
    """The transitive walk reaches the sidecar modules a pure module pulls in."""
    reached = sidecar_dependencies("sidecar.engine.traffic")
    assert {
        "sidecar",
        "sidecar.engine",
        "sidecar.actuators.base",
        "sidecar.domain.promotion",
        "sidecar.domain.artifact",
        "sidecar.errors",
    } <= reached
    assert "sidecar.engine.clock" not in reached


def test_pure_modules_import_neither_asyncio_nor_aiohttp() -> None:
    """No pure module's source imports asyncio or aiohttp."""
    offenders = {
        name: sorted(found)
        for name in pure_modules()
        if (found := forbidden_in(imported_names(module_path(name))))
    }
    assert offenders == {}, f"pure modules importing asyncio/aiohttp: {offenders}"


def test_pure_modules_reach_no_asyncio_through_sidecar_imports() -> None:
    """No sidecar module a pure module pulls in imports asyncio or aiohttp either."""
    offenders: dict[str, dict[str, list[str]]] = {}
    for name in pure_modules():
        for dependency in sorted(sidecar_dependencies(name)):
            found = forbidden_in(imported_names(module_path(dependency)))
            if found:
                offenders.setdefault(name, {})[dependency] = sorted(found)
    assert offenders == {}, f"pure modules reaching asyncio/aiohttp: {offenders}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("sidecar.engine.clock", {"asyncio"}, id="clock-uses-asyncio"),
        pytest.param("sidecar.analysis.prometheus", {"aiohttp"}, id="client-uses-aiohttp"),
    ],
)
def test_checker_flags_known_impure_modules(name: str, expected: set[str]) -> None:
    """On modules that do use asyncio or aiohttp, the checker reports them."""
    found = {n.split(".")[0] for n in forbidden_in(imported_names(module_path(name)))}
    assert expected <= found

"""The house: a few modules at the package root, one migration, and imports
that point one way, from the leaves up (docs/internals.rst)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "django_pgpubsub"

# Each wing, and the wings it may import (besides the leaves, which all may).
LEAVES = {"exceptions", "conf", "vocabulary"}
MAY_IMPORT: dict[str, set[str]] = {
    "exceptions": set(),
    "conf": {"exceptions"},
    "vocabulary": {"exceptions", "conf"},
    "db": set(),
    "publishing": {"db"},
    "durable": {"db"},
    "hub": {"db"},
    "channel_layer": {"db", "hub"},
    "listener": {"db", "durable"},
    "ops": {"db", "listener"},
    "testing": {"db", "publishing", "durable"},
    "contrib": {"ops"},
}
# The root's modules (Django conventions and documented paths) and commands
# sit on top and may import any wing.
TOP = {"__init__", "admin", "apps", "asgi", "checks", "layers", "models", "views", "management"}


def wing_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_wings(path: Path) -> set[str]:
    wings = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "django_pgpubsub":
                continue
            if len(parts) > 1:
                wings.add(parts[1])
            else:  # from django_pgpubsub import conf, notify...
                wings |= {alias.name for alias in node.names if alias.name in LEAVES}
                wings |= {"(public API)" for alias in node.names if alias.name not in LEAVES}
    return wings


def test_the_package_root_holds_a_few_modules_and_one_migration() -> None:
    assert len(list(PACKAGE.glob("*.py"))) <= 12
    assert sorted(p.name for p in (PACKAGE / "migrations").glob("0*.py")) == ["0001_initial.py"]


def test_imports_point_one_way() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        wing = wing_of(path)
        if wing in TOP:
            continue
        allowed = MAY_IMPORT[wing] | LEAVES | {wing}
        if wing == "exceptions":
            allowed = {wing}
        wrong = imported_wings(path) - allowed
        if wrong:
            upward.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert upward == []


def test_no_module_hides_an_import_of_the_package_in_a_function() -> None:
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                module = getattr(node, "module", None) or ""
                if isinstance(node, ast.ImportFrom) and module.startswith("django_pgpubsub"):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    # AppConfig.ready() imports the checks module to register them (Django's way).
    assert hidden == ["django_pgpubsub/apps.py:23"]

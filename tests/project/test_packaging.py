"""What pip installs from a checkout, as README.rst's install lines do, offline."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.helpers import ROOT, project_files

# What the package must not carry: the project's own tests, benchmarks,
# docs and example (STYLE.md: they stay out of the built wheel).
LEFT_OUT = ("tests/", "bench/", "docs/", "example_project/", "scripts/")
REPOSITORY = "https://github.com/django-pgpubsub/django_pgpubsub"


def metadata() -> configparser.ConfigParser:
    parsed = configparser.ConfigParser()
    parsed.read(ROOT / "setup.cfg")
    return parsed


def checkout_copy(destination: Path) -> Path:
    """A copy of the checkout's files (what a clone has), away from the tree:
    building writes build/ and *.egg-info beside setup.cfg."""
    for path in project_files():
        target = destination / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return destination


def pip(*args: str, cwd: Path) -> None:
    # Offline: nothing to fetch (no dependencies, the build tools of this
    # virtualenv), so no index either.
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-build-isolation", "--no-index"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_checkout_installs_the_package_alone_typed(tmp_path: Path) -> None:
    checkout = checkout_copy(tmp_path / "django_pgpubsub")
    pip("wheel", "--quiet", "-w", str(tmp_path / "dist"), "./django_pgpubsub", cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("django_pg_pubsub-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "django_pgpubsub/py.typed" in names
    assert "django_pgpubsub/migrations/0001_initial.py" in names
    assert "django_pgpubsub/management/commands/listen_events.py" in names
    assert [name for name in names if name.startswith(LEFT_OUT)] == []
    assert {name.split("/")[0] for name in names} == {
        "django_pgpubsub",
        wheel.name.split("-py3")[0] + ".dist-info",
    }

    # pip install /path/to/checkout, into a folder of its own: importable
    # from there, with its version.
    target = tmp_path / "site"
    pip("install", "--quiet", "--target", str(target), str(checkout), cwd=tmp_path)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.metadata, django_pgpubsub; print(django_pgpubsub.__file__); "
            "print(importlib.metadata.version('django-pg-pubsub'))",
        ],
        cwd=target,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert found == [
        str(target / "django_pgpubsub" / "__init__.py"),
        metadata()["metadata"]["version"],
    ]


def test_the_install_lines_name_this_distribution_and_its_extras() -> None:
    parsed = metadata()
    name = parsed["metadata"]["name"]
    extras = set(parsed["options.extras_require"])
    assert f"Source = {REPOSITORY}" in parsed["metadata"]["project_urls"]
    pages = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
    installs = [
        line.split("pip install ", 1)[1]
        for page in pages
        for line in page.read_text().splitlines()
        if "pip install " in line and ("pg-pubsub" in line or "django_pgpubsub" in line)
    ]
    assert len(installs) > 10, installs
    readme = (ROOT / "README.rst").read_text()
    # A checkout, editable or with extras; the git URL; PyPI once released.
    assert "$ pip install -e ./django_pgpubsub " in readme
    assert f'$ pip install "{name} @ git+{REPOSITORY}"' in readme
    assert "Once released on PyPI (not yet)" in readme
    for line in installs:
        for named in re.findall(r"\[([\w,]+)\]", line):
            assert set(named.split(",")) <= extras, line
        if " @ git+" in line:
            assert line.startswith(f'"{name}'), line
            assert line.endswith(f'git+{REPOSITORY}"'), line
    # Every extra a user may want is in the README's list and on the install page.
    index = (ROOT / "docs" / "index.rst").read_text()
    for extra in ("psycopg3", "channels", "metrics", "health", "triggers"):
        assert extra in extras
        assert f"``{extra}`` (" in readme, extra
        assert f"\n``{extra}``\n" in index, extra

"""What a fresh machine needs: settings that start nothing, a server root can start."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.pgtemp import TemporaryPostgres
from tests.helpers import ROOT, run_sql

# Each test runs a process.
pytestmark = pytest.mark.slow


def test_importing_the_test_settings_starts_no_server() -> None:
    """mypy's Django plugin imports them on every lint run, without DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PG_BINDIR"] = "/nonexistent"  # any attempt to start a server fails at once
    result = subprocess.run(
        [sys.executable, "-c", "import tests.settings as s; print(s.DATABASES['default']['HOST'])"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "localhost\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_root_starts_pgserver_from_a_folder_only_root_can_enter(tmp_path: Path) -> None:
    """A virtualenv under /root: the server, run as nobody, gets a copy of
    pgserver's programs and of the shared libraries beside the package."""
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None, "the test extra installs pgserver"
    assert spec.origin is not None
    site_packages = Path(spec.origin).parent.parent
    private = tmp_path / "private" / "site-packages"
    private.parent.mkdir(mode=0o700)
    os.chmod(private.parent, 0o700)
    for name in ("pgserver", "pgserver.libs"):
        shutil.copytree(site_packages / name, private / name, symlinks=True)
    with TemporaryPostgres(private / "pgserver" / "pginstall" / "bin") as server:
        assert run_sql(server.url, "SELECT current_user, 6 * 7") == [("postgres", 42)]
        assert not server.bindir.is_relative_to(private)  # it ran a copy


def test_the_throwaway_server_runs_without_fsync_and_synchronous_commit() -> None:
    # What README.rst says of the server the benchmarks run on.
    with TemporaryPostgres() as server:
        settings = "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
        assert run_sql(server.url, settings) == [("off", "off")]

"""What a fresh machine needs: settings that start nothing, a server root can start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

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

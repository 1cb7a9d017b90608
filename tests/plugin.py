"""pytest plugin (``-p tests.plugin`` in setup.cfg): the run's PostgreSQL.

It starts a throwaway server before pytest-django reads the settings, unless
``DATABASE_URL`` is set, and exports ``DATABASE_URL`` so that the processes the
tests start (``manage.py listen_events``) reach the same server. The settings
themselves only read ``DATABASE_URL``, so importing them (as mypy's Django
plugin does) starts nothing.
"""

from __future__ import annotations

import pytest

from scripts.pgtemp import ensure_database_url


# tryfirst: pytest-django imports the settings in its own implementation of
# this hook, before any conftest.py is loaded.
@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Set ``DATABASE_URL``, starting a server for this run if it is unset."""
    options = early_config.known_args_namespace
    if options.help or options.version:
        return
    ensure_database_url()

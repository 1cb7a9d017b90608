"""The example project end to end: one command, a view, a listener, the handler's effect."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.pgtemp import free_port
from tests.helpers import ROOT, run_sql, wait_until

EXAMPLE = ROOT / "example_project"
# Every test runs the example's manage.py or run.py in a process.
pytestmark = pytest.mark.slow


@pytest.fixture
def example_database_url() -> Iterator[str]:
    """A fresh database for the example on the test server, dropped afterwards."""
    server_url = os.environ["DATABASE_URL"]
    name = f"example_{uuid.uuid4().hex[:8]}"
    run_sql(server_url, f'CREATE DATABASE "{name}"')
    yield urllib.parse.urlparse(server_url)._replace(path=f"/{name}").geturl()
    run_sql(server_url, f'DROP DATABASE "{name}" WITH (FORCE)')


def example_env(**extra: str) -> dict[str, str]:
    """The environment without the test suite's own Django settings and database."""
    drop = {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def manage(*args: str, url: str | None) -> subprocess.CompletedProcess[str]:
    env = example_env()
    if url:
        env["DATABASE_URL"] = url
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_settings_need_database_url() -> None:
    result = manage("check", url=None)
    assert result.returncode != 0
    assert "Set DATABASE_URL" in result.stderr


def test_settings_import_and_migrate(example_database_url: str) -> None:
    check = manage("check", url=example_database_url)
    assert check.returncode == 0, check.stderr
    migrate = manage("migrate", "--no-input", url=example_database_url)
    assert migrate.returncode == 0, migrate.stderr
    assert "Applying orders.0001_initial... OK" in migrate.stdout


@contextmanager
def running_example(url: str, log: Path) -> Iterator[str]:
    """``run.py`` against ``url`` on a free port: yields the site's base URL once
    the site answers and listen_events listens; Ctrl-C (and a clean exit) after."""
    address = f"127.0.0.1:{free_port()}"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "run.py")],
            env=example_env(DATABASE_URL=url, EXAMPLE_ADDRESS=address),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's
        )
    try:
        browser = Browser(f"http://{address}")

        def page_is_up() -> bool:
            try:
                return "Example shop" in browser.get("/")
            except OSError:
                return False

        wait_until(page_is_up, 60, "the example's site")
        wait_until(lambda: "Listening on" in log.read_text(), 60, "listen_events")
        yield browser.base
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0
    except BaseException:
        print(log.read_text())
        raise
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return str(response.read().decode())

    def post(self, path: str, data: dict[str, str]) -> int:
        token = next(c.value for c in self.cookies if c.name == "csrftoken")
        body = urllib.parse.urlencode({**data, "csrfmiddlewaretoken": token or ""}).encode()
        request = urllib.request.Request(
            self.base + path, data=body, headers={"Referer": self.base + "/"}
        )
        with self.opener.open(request, timeout=10) as response:
            return int(response.status)

    def activity(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.get("/activity/"))["activity"]
        return rows


def test_the_one_command_runs_everything_and_ctrl_c_stops_it(
    example_database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = example_env(DATABASE_URL=example_database_url, EXAMPLE_ADDRESS=address)
    log = tmp_path / "run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "run.py")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a terminal's
        )
    try:
        browser = Browser(f"http://{address}")

        def page_is_up() -> bool:
            try:
                return "Example shop" in browser.get("/")
            except OSError:
                return False

        wait_until(page_is_up, 60, "the development server")
        # Plain NOTIFY reaches only those listening: wait for the listener too.
        wait_until(lambda: "Listening on" in log.read_text(), 60, "listen_events")
        assert browser.post("/checkout/", {"customer": "Ada", "item": "Lamp", "quantity": "2"})

        def handled() -> bool:
            return len(browser.activity()) == 3

        try:
            wait_until(handled, 20, "the handlers' activity rows")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; output:\n{log.read_text()}") from None
        messages = sorted(row["message"] for row in browser.activity())
        assert messages[0] == "Audit: Ada placed order #1"
        assert messages[1].startswith("Mailed the confirmation of order #1 to Ada (durable event")
        assert messages[2] == "Order #1 created: 2 x Lamp for Ada (placed)"
        # The Orders list, as the page fetches it again when an order changes.
        assert "Order #1: 2 x Lamp for Ada" in browser.get("/orders/list/")

        # The admin's styling, served under uvicorn.
        with httpx.stream("GET", f"http://{address}/static/admin/css/base.css") as css:
            assert css.status_code == 200
            assert css.headers["content-type"].startswith("text/css")

        with httpx.stream("GET", f"http://{address}/activity/stream/", timeout=30) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "id: pgpubsub"
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C, with a stream open
            # uvicorn ends the stream (no error), and need not be killed.
            assert all(line in ("", ": keepalive") for line in lines)
        assert process.wait(timeout=30) == 0
        assert "timeout graceful shutdown exceeded" not in log.read_text()
        assert not page_is_up()

        def no_session_left() -> bool:
            # A backend leaves pg_stat_activity shortly after its client hung
            # up, not at once: wait for it (a session kept open stays).
            sessions = run_sql(
                example_database_url,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()",
            )
            return sessions == [(0,)]

        wait_until(no_session_left, 10, "the example's database sessions to end")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

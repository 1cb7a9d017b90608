"""Headless Chromium (Debian's, driven by Playwright) against uvicorn; real PostgreSQL.

Playwright cannot download its own browsers here: it drives /usr/bin/chromium
(``.ci/run`` installs Debian's ``chromium`` when it is missing). A missing
browser fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

from scripts.pgtemp import free_port
from tests.helpers import database_url, run_sql, wait_until
from tests.project.test_example_project import EXAMPLE, example_database_url, example_env
from tests.uvicorn_server import Uvicorn

__all__ = ["example_database_url"]  # a fixture, used by name

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser(transactional_db: None) -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread: it is set up
    # after the test database, and gone before Django flushes it.
    with sync_playwright() as playwright:
        # As root, Chromium refuses to start with its sandbox.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def server(transactional_db: None) -> Iterator[Uvicorn]:
    process = Uvicorn(database_url(connection.settings_dict))
    yield process
    process.stop()


def hub_pid(url: str) -> int:
    [(pid,)] = run_sql(
        url,
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'django_pgpubsub hub'",
    )
    return int(pid)


def received(page: Page) -> list[str]:
    return page.locator("#received li").all_inner_texts()


def test_an_event_source_gets_events_within_2_s_also_after_the_hub_reconnects(
    browser: Browser, server: Uvicorn
) -> None:
    url = database_url(connection.settings_dict)
    page = browser.new_page()
    page.goto(server.base + "/stream-page/")
    page.wait_for_selector("body[data-open=yes]", state="attached", timeout=10_000)

    run_sql(url, "SELECT pg_notify('sse.a', 'first')")
    committed = time.monotonic()
    page.wait_for_function("document.querySelectorAll('#received li').length >= 1", timeout=2_000)
    assert time.monotonic() - committed < 2
    assert received(page) == ["sse.a first"]

    run_sql(url, "SELECT pg_terminate_backend(%s)", (hub_pid(url),))
    page.wait_for_function("document.querySelectorAll('#received li').length >= 2", timeout=10_000)
    assert received(page)[1] == 'pgpubsub.resync {"reason":"reconnected"}'

    run_sql(url, "SELECT pg_notify('sse.a', 'second')")
    committed = time.monotonic()
    page.wait_for_function("document.querySelectorAll('#received li').length >= 3", timeout=2_000)
    assert time.monotonic() - committed < 2
    assert received(page)[2] == "sse.a second"
    page.close()


def test_a_hostile_channel_runs_no_script_and_is_answered_as_plain_text(
    browser: Browser, server: Uvicorn
) -> None:
    page = browser.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    hostile = '<img src=x onerror="window.pwned=1;alert(document.domain)">'
    response = page.goto(server.base + "/events/?channel=" + urllib.parse.quote(hostile))
    # goto() returns after the load event, which waits for the image (and its error).
    assert response is not None
    assert page.evaluate("window.pwned") is None
    assert dialogs == []
    assert page.evaluate("document.querySelector('img')") is None
    assert response.status == 403
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert page.inner_text("body") == "A requested channel is not available."
    page.close()


def test_the_example_page_updates_live_when_an_order_is_placed(
    browser: Browser, example_database_url: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"
    base = f"http://{address}"
    log = tmp_path / "run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "run.py")],
            env=example_env(DATABASE_URL=example_database_url, EXAMPLE_ADDRESS=address),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "Listening on" in log.read_text(), 60, "listen_events")
        watcher = browser.new_page()

        def opened() -> bool:
            try:
                watcher.goto(base + "/")
                watcher.wait_for_selector("body[data-stream=open]", state="attached", timeout=5_000)
            except Exception:  # the server is still starting
                return False
            return True

        wait_until(opened, 60, "the example page and its event stream")
        # Set on this page load only: a reload would lose it.
        watcher.evaluate("window.notReloaded = true")

        # Another tab places the order; the watcher never reloads.
        buyer = browser.new_page()
        buyer.goto(base + "/")
        buyer.fill("input[name=customer]", "Grace")
        buyer.fill("input[name=item]", "Kettle")
        buyer.click("#checkout button")
        buyer.wait_for_load_state()

        watcher.wait_for_function(
            "document.querySelectorAll('#activity li .channel').length >= 3", timeout=20_000
        )
        texts = watcher.locator("#activity li").all_inner_texts()
        assert any("Audit: Grace placed order #1" in text for text in texts), texts
        assert any("Order #1 created: 1 x Kettle for Grace" in text for text in texts), texts
        # The Orders list too, rendered again by the server.
        watcher.wait_for_function(
            "document.querySelector('#orders').textContent.includes('Order #1: 1 x Kettle')",
            timeout=20_000,
        )
        assert watcher.evaluate("window.notReloaded") is True

        # The admin is styled: its stylesheet was served, under uvicorn.
        admin = browser.new_page()
        admin.goto(base + "/admin/login/")
        assert admin.evaluate(
            "[...document.styleSheets].some(s => (s.href || '').endsWith('admin/css/base.css')"
            " && s.cssRules.length > 0)"
        )
        screenshot = tmp_path / "example.png"
        watcher.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.read_bytes().startswith(b"\x89PNG")
        assert watcher.locator("#activity").screenshot() != b""
    except BaseException:
        print(log.read_text())
        raise
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    left: Any = run_sql(
        example_database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()",
    )
    assert left == [(0,)]

"""The example's live order status in Chromium: a websocket per order page,
fed through the PostgreSQL channel layer at the commit of each status change.

Playwright drives Debian's /usr/bin/chromium (see tests/project/test_browser.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.helpers import run_sql, wait_until
from tests.project.test_example_project import example_database_url, manage, running_example

__all__ = ["example_database_url"]  # a fixture, used by name

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"

# Run by `manage.py shell -c` in the example: a status saved in a rolled-back
# transaction, then one saved in a committed transaction which, between the
# save and the commit, also sends "arriving" at once (a layer with
# immediate=True), so the page shows "arriving" before "delivered" only if
# "delivered" waited for the commit.
ROLLBACK_THEN_COMMIT = """
from asgiref.sync import async_to_sync
from django.db import transaction
from django_pgpubsub.layers import PubSubChannelLayer
from orders.models import Order

order = Order.objects.get(pk=1)
with transaction.atomic():
    order.status = "lost"
    order.save()
    transaction.set_rollback(True)
at_once = PubSubChannelLayer(immediate=True)
with transaction.atomic():
    order.status = "delivered"
    order.save()
    async_to_sync(at_once.group_send)(
        Order.group_name(1), {"type": "order.status", "status": "arriving"}
    )
"""


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # As root, Chromium refuses to start with its sandbox.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shell(url: str, code: str) -> None:
    result = manage("shell", "-c", code, url=url)
    assert result.returncode == 0, result.stderr


def changes(page: Page) -> list[str]:
    return page.locator("#changes li").all_inner_texts()


def wait_for_status(page: Page, status: str) -> None:
    page.wait_for_function(
        "s => document.getElementById('status').textContent === s", arg=status, timeout=20_000
    )


def hub_pids(url: str) -> list[int]:
    rows = run_sql(
        url,
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'django_pgpubsub hub'",
    )
    return [int(pid) for (pid,) in rows]


def test_the_order_page_shows_committed_statuses_live_and_never_a_rolled_back_one(
    chromium: Browser, example_database_url: str, tmp_path: Path
) -> None:
    url = example_database_url
    with running_example(url, tmp_path / "run.log") as base:
        shell(url, "from orders.models import Order; Order.objects.create(customer='Ada')")
        watcher = chromium.new_page()
        watcher.goto(base + "/")
        watcher.click("#orders a:has-text('Order #1')")  # the order's own page
        watcher.wait_for_url(base + "/orders/1/", timeout=20_000)
        # Open once the consumer has joined the order's group (it accepts after).
        watcher.wait_for_selector("body[data-socket=open]", state="attached", timeout=20_000)
        assert watcher.inner_text("#status") == "placed"
        watcher.evaluate("window.notReloaded = true")  # gone if the page reloads

        # The shop's page in another tab: its Ship button (the view saves the
        # status in a transaction).
        shop = chromium.new_page()
        shop.goto(base + "/")
        shop.click("#orders li:has-text('Order #1') form[action$='/ship/'] button")
        shop.wait_for_load_state()
        wait_for_status(watcher, "shipped")
        assert changes(watcher) == ["shipped"]

        # The admin's list, status edited in place (saved in its transaction).
        admin = chromium.new_page()
        admin.goto(base + "/admin/orders/order/")
        admin.fill("input[name=username]", "admin")
        admin.fill("input[name=password]", "admin")
        admin.click("input[type=submit]")
        admin.fill("input[name=form-0-status]", "in transit")
        admin.click("input[name=_save]")
        admin.wait_for_load_state()
        wait_for_status(watcher, "in transit")

        # Another process: the rolled-back "lost" never shows; "delivered"
        # arrives at its commit, after "arriving", sent at once before it.
        shell(url, ROLLBACK_THEN_COMMIT)
        watcher.wait_for_function(
            "document.querySelectorAll('#changes li').length >= 4", timeout=20_000
        )
        assert changes(watcher) == ["shipped", "in transit", "arriving", "delivered"]
        assert watcher.inner_text("#status") == "delivered"

        # The server's one LISTEN connection (SSE of the shop's tab and the
        # websocket's layer together) is cut: once it is back, the consumer
        # is told that messages may have been missed and sends the status
        # afresh, here one written without any save() (so never announced).
        run_sql(url, "UPDATE orders_order SET status = 'returned' WHERE id = 1")
        wait_until(lambda: len(hub_pids(url)) == 1, 20, "one hub connection: the server's")
        (pid,) = hub_pids(url)
        run_sql(url, "SELECT pg_terminate_backend(%s)", (pid,))
        wait_for_status(watcher, "returned")
        assert changes(watcher)[-1] == "returned"

        # All of it without a reload, and on the page's first websocket.
        assert watcher.evaluate("window.notReloaded") is True
        assert watcher.evaluate("document.body.dataset.opened") == "1"

        # Refused: a page of another site (AllowedHostsOriginValidator), an
        # order that does not exist.
        ws = base.replace("http://", "ws://")
        for path, origin in (
            ("/ws/orders/1/", "http://elsewhere.example"),
            ("/ws/orders/2/", base),
        ):
            with pytest.raises(InvalidStatus) as refused:
                connect(ws + path, origin=Origin(origin), open_timeout=20).close()
            assert refused.value.response.status_code == 403
        with connect(ws + "/ws/orders/1/", origin=Origin(base), open_timeout=20) as accepted:
            assert json.loads(accepted.recv(timeout=20)) == {"status": "returned"}

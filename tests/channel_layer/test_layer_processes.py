"""The Channels layer across processes: two uvicorn servers of a Channels
project (tests/channels_app), websocket clients on both, this test as the third
process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3

from django_pgpubsub.hub.hub import APPLICATION_NAME, get_hub
from django_pgpubsub.layers import PubSubChannelLayer
from tests.channel_layer.test_layer import receive
from tests.uvicorn_server import Uvicorn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not is_psycopg3, reason="the hub needs psycopg 3"),
]


@pytest.fixture
def servers(test_database_url: str) -> Iterator[list[Uvicorn]]:
    started = [Uvicorn(test_database_url, app="tests.channels_app.asgi:application")]
    try:
        started.append(Uvicorn(test_database_url, app="tests.channels_app.asgi:application"))
        yield started
    finally:
        for server in started:
            server.stop()
        asyncio.run(get_hub().close())


Client = websockets.ClientConnection


async def connect(server: Uvicorn) -> tuple[Client, dict[str, Any]]:
    client = await websockets.connect(f"ws://127.0.0.1:{server.port}/ws/")
    hello = json.loads(await asyncio.wait_for(client.recv(), 20))
    return client, hello


async def next_message(client: Client) -> Any:
    return json.loads(await asyncio.wait_for(client.recv(), 20))


async def nothing_before(client: Client, marker: str) -> None:
    """The client's next message is ``marker``: nothing came before it."""
    assert await next_message(client) == marker


def own_data(layer: PubSubChannelLayer, channel: str) -> Any:
    """The data of the next relay message of ``channel``, a channel of this process."""
    message = async_to_sync(receive)(layer, channel)
    assert message["type"] == "relay"
    return message["data"]


def hub_connections() -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name = %s",
            [APPLICATION_NAME],
        )
        return list(cursor.fetchall())


def test_groups_and_channels_reach_websockets_in_other_processes(servers: list[Uvicorn]) -> None:
    layer = PubSubChannelLayer()
    group_send = async_to_sync(layer.group_send)

    async def clients() -> list[tuple[Client, dict[str, Any]]]:
        return [await connect(servers[n % 2]) for n in range(4)]

    loop = asyncio.new_event_loop()
    try:
        connected = loop.run_until_complete(clients())
        ws = [client for client, _ in connected]
        names = [hello["channel_name"] for _, hello in connected]
        assert len({hello["pid"] for _, hello in connected}) == 2  # both servers

        # One group_send from this third process reaches every member once,
        # this process's own member too (handed over by the layer itself).
        own = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("everyone", own)
        group_send("everyone", {"type": "relay", "data": "to all"})
        group_send("everyone", {"type": "relay", "data": "marker"})
        for client in ws:
            assert loop.run_until_complete(next_message(client)) == "to all"
            loop.run_until_complete(nothing_before(client, "marker"))
        assert [own_data(layer, own) for _ in range(2)] == ["to all", "marker"]

        # A send to one consumer's channel reaches only it, in its own process.
        async_to_sync(layer.send)(names[1], {"type": "relay", "data": "only you"})
        big = {"text": "x" * 20_000, "n": list(range(100))}
        async_to_sync(layer.send)(names[1], {"type": "relay", "data": big})
        assert loop.run_until_complete(next_message(ws[1])) == "only you"
        assert loop.run_until_complete(next_message(ws[1])) == big  # 20 KB, intact
        group_send("everyone", {"type": "relay", "data": "marker"})
        for client in ws:
            loop.run_until_complete(nothing_before(client, "marker"))
        assert own_data(layer, own) == "marker"

        # Transactions: nothing on rollback; at commit, after what was sent meanwhile.
        immediate = PubSubChannelLayer(immediate=True)
        with transaction.atomic():
            group_send("everyone", {"type": "relay", "data": "rolled back"})
            transaction.set_rollback(True)
        with transaction.atomic():
            group_send("everyone", {"type": "relay", "data": "committed"})
            async_to_sync(immediate.group_send)("everyone", {"type": "relay", "data": "first"})
        for client in ws:
            assert loop.run_until_complete(next_message(client)) == "first"
            assert loop.run_until_complete(next_message(client)) == "committed"
        # Here "committed" came straight at the commit, "first" through PostgreSQL
        # from another layer: each once, in either order.
        assert sorted(own_data(layer, own) for _ in range(2)) == ["committed", "first"]
        group_send("everyone", {"type": "relay", "data": "marker"})
        assert own_data(layer, own) == "marker"

        # One listening connection per process: the two servers' (each shared
        # by its consumers, groups and EventStreamView) and this process's.
        server_pids = {hello["pid"] for _, hello in connected}
        backends = {pid for pid, _ in hub_connections()}
        servers_hubs = {httpx.get(s.base + "/hub/", timeout=10).json()["pid"] for s in servers}
        assert len(backends) == 3
        assert len(servers_hubs) == 2
        assert servers_hubs < backends
        for client in ws:
            loop.run_until_complete(client.close())
    finally:
        loop.close()
    assert len(server_pids) == 2

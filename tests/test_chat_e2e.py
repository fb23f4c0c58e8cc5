"""Chat in a whole box (app.py): webhooks, pings and shutdown."""

from __future__ import annotations

import aiohttp
import pytest

from realcast_box.api.chat_socket import CHAT_HUB
from tests.box import start_box
from tests.chat_clients import chat_path, join, receive_close
from tests.webhook_receiver import Receiver


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


async def test_chat_message_reaches_webhook(aiohttp_client, tmp_path, receiver):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    response = await box.client.post(
        "/api/webhooks",
        json={
            "app_id": stream["app_id"],
            "url": receiver.url,
            "events": ["chat.message.new"],
        },
        headers=box.auth,
    )
    assert response.status == 201, await response.text()
    receiver.secret = (await response.json())["secret"]

    streamer = await join(box.client, stream["id"], token=box.token)
    await streamer.send("hello webhooks")
    message = await streamer.next_message()
    requests = await receiver.wait_for_events("chat.message.new")
    assert requests[0].verified
    payload = requests[0].payload
    assert payload["stream_id"] == stream["id"]
    assert payload["app_id"] == stream["app_id"]
    assert payload["data"] == {"message": message}
    await streamer.ws.close()


async def test_chat_unanswered_pings_disconnect(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path, chat_heartbeat_seconds=1.0)
    stream = await box.create_stream()
    ws = await box.client.ws_connect(chat_path(stream["id"]), autoping=False)
    await ws.send_json({"type": "join", "token": box.token})
    # With autoping off the client never sends a pong, so the server closes
    # the connection once a ping goes unanswered.
    for _ in range(100):
        message = await ws.receive(timeout=20)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()


async def test_chat_shutdown_closes_sockets(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    stream = await box.create_stream()
    streamer = await join(box.client, stream["id"], token=box.token)
    await box.app[CHAT_HUB].close()
    code, frames = await receive_close(streamer.ws)
    assert code == aiohttp.WSCloseCode.GOING_AWAY
    assert frames[-1]["code"] == "shutdown"

"""Chat over real WebSocket clients on loopback: joining, sending, history, limits."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from realcast_box.api.chat_socket import CHAT_HUB
from realcast_box.chat import protocol
from realcast_box.events import CHAT_MESSAGE_NEW, Event, EventBus
from tests.chat_clients import (
    StalledClient,
    chat_path,
    join,
    join_rejected,
    receive_close,
    receive_frame,
    receive_until,
)
from tests.conftest import ApiUser, flush_audit, key_auth, make_config
from tests.openapi_check import OpenApiCheckingClient


async def make_stream(
    user: ApiUser,
    app_settings: dict | None = None,
    stream_settings: dict | None = None,
) -> dict:
    app = await user.create_app(settings=app_settings or {})
    return await user.create_stream(app["id"], settings=stream_settings or {})


async def playback_token(user: ApiUser, stream_id: str, viewer_id: str) -> str:
    response = await user.client.post(
        f"/api/streams/{stream_id}/playback-token",
        json={"viewer_id": viewer_id},
        headers=user.headers,
    )
    assert response.status == 200, await response.text()
    return (await response.json())["playback_token"]


async def join_viewer(user: ApiUser, stream_id: str, viewer_id: str, name: str):
    token = await playback_token(user, stream_id, viewer_id)
    return await join(user.client, stream_id, token=token, display_name=name)


# --- joining ------------------------------------------------------------------


async def test_chat_viewer_welcome(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    viewer = await join_viewer(owner, stream["id"], "viewer-1", "  Ann  ")
    assert viewer.welcome["viewer_id"] == "viewer-1"
    assert viewer.welcome["display_name"] == "Ann"
    assert viewer.welcome["role"] == "viewer"
    assert viewer.welcome["can_send"] is True
    assert viewer.welcome["max_text_length"] == protocol.MAX_TEXT_LENGTH
    assert viewer.welcome["rate_limit"] == {"messages": 5, "seconds": 10.0}
    assert viewer.history == []
    await viewer.ws.close()


async def test_chat_credentials_in_query(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    token = await playback_token(owner, stream["id"], "viewer-q")
    viewer = await join(
        owner.client,
        stream["id"],
        params={"token": token, "display_name": "Quinn"},
    )
    assert viewer.welcome["viewer_id"] == "viewer-q"
    assert viewer.welcome["display_name"] == "Quinn"
    await viewer.ws.close()


async def test_chat_streamer_and_bot_identities(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    streamer = await join(owner.client, stream["id"], token=owner.token)
    assert streamer.welcome["role"] == "streamer"
    assert streamer.welcome["viewer_id"] == owner.id
    assert streamer.welcome["display_name"] == "Test User"

    key = await owner.create_api_key(stream["app_id"], ["chat:write"])
    bot = await join(
        owner.client,
        stream["id"],
        api_key=key["api_key"],
        api_secret=key["api_secret"],
        display_name="ModBot",
    )
    assert bot.welcome["role"] == "bot"
    assert bot.welcome["viewer_id"] == key["id"]
    header_bot = await join(owner.client, stream["id"], headers=key_auth(key))
    assert header_bot.welcome["display_name"] == "Bot"
    for client in (streamer, bot, header_bot):
        await client.ws.close()


async def test_chat_join_rejections(make_user):
    owner = await make_user()
    other = await make_user()
    stream = await make_stream(owner)
    stream_id = stream["id"]
    token = await playback_token(owner, stream_id, "v")
    other_stream = await make_stream(owner)
    other_token = await playback_token(owner, other_stream["id"], "v")
    reader_key = await owner.create_api_key(stream["app_id"], ["chat:read"])
    cases = [
        ({}, protocol.CLOSE_UNAUTHORIZED, "unauthorized"),
        ({"token": "not-a-jwt"}, protocol.CLOSE_UNAUTHORIZED, "unauthorized"),
        ({"token": other_token, "display_name": "A"}, 4401, "unauthorized"),
        ({"token": token}, protocol.CLOSE_INVALID_JOIN, "invalid_join"),
        ({"token": token, "display_name": "\n\t"}, 4400, "invalid_join"),
        ({"token": token, "display_name": "x" * 33}, 4400, "invalid_join"),
        ({"token": other.token}, protocol.CLOSE_FORBIDDEN, "forbidden"),
        (
            {"api_key": reader_key["api_key"], "api_secret": reader_key["api_secret"]},
            protocol.CLOSE_FORBIDDEN,
            "forbidden",
        ),
        (
            {"api_key": reader_key["api_key"], "api_secret": "wrong"},
            protocol.CLOSE_UNAUTHORIZED,
            "unauthorized",
        ),
    ]
    for fields, expected_close, expected_code in cases:
        code, error = await join_rejected(owner.client, stream_id, **fields)
        assert code == expected_close, (fields, error)
        assert error["code"] == expected_code, (fields, error)
        assert error["message"], fields

    code, error = await join_rejected(owner.client, "stream_0000000000000000")
    assert code == protocol.CLOSE_STREAM_NOT_FOUND
    assert error["code"] == "stream_not_found"


async def test_chat_first_frame_must_be_join(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ws = await owner.client.ws_connect(chat_path(stream["id"]))
    await ws.send_json({"type": "send", "text": "hi"})
    code, frames = await receive_close(ws)
    assert code == protocol.CLOSE_INVALID_JOIN
    assert frames[0]["code"] == "invalid_join"


async def test_chat_join_timeout(make_user, database, hub, build_app, tmp_path):
    config = make_config(tmp_path, chat_join_timeout_seconds=0.2)
    client = OpenApiCheckingClient(TestServer(build_app(config, database, hub)))
    await client.start_server()
    try:
        owner = await make_user(client=client)
        stream = await make_stream(owner)
        ws = await client.ws_connect(chat_path(stream["id"]))
        code, frames = await receive_close(ws)
    finally:
        await client.close()
    assert code == protocol.CLOSE_JOIN_TIMEOUT
    assert frames[0]["code"] == "join_timeout"


async def test_chat_plain_get_rejected(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    response = await owner.client.get(chat_path(stream["id"]))
    assert response.status == 400
    body = await response.json()
    assert "WebSocket" in body["detail"]


async def test_chat_origin_checked(make_user, database, hub, build_app, tmp_path):
    config = make_config(tmp_path, hls_cors_origins="https://player.example")
    client = OpenApiCheckingClient(TestServer(build_app(config, database, hub)))
    await client.start_server()
    try:
        owner = await make_user(client=client)
        stream = await make_stream(owner)
        with pytest.raises(aiohttp.WSServerHandshakeError) as error:
            await client.ws_connect(
                chat_path(stream["id"]), headers={"Origin": "https://evil.example"}
            )
        assert error.value.status == 403
        allowed = await join(
            client,
            stream["id"],
            headers={"Origin": "https://player.example"},
            token=owner.token,
        )
        await allowed.ws.close()
        # The admin UI's page is served by the box itself, so its origin
        # passes without being listed.
        own_origin = str(client.make_url("/")).rstrip("/")
        same_origin = await join(
            client, stream["id"], headers={"Origin": own_origin}, token=owner.token
        )
        await same_origin.ws.close()
    finally:
        await client.close()


async def test_chat_signed_stream_needs_token(make_user):
    owner = await make_user()
    stream = await make_stream(
        owner,
        app_settings={"chat_allow_anonymous": True},
        stream_settings={"playback_policy": "signed"},
    )
    code, error = await join_rejected(owner.client, stream["id"])
    assert code == protocol.CLOSE_UNAUTHORIZED
    assert "signed" in error["message"]
    viewer = await join_viewer(owner, stream["id"], "paying-viewer", "Pat")
    assert viewer.welcome["can_send"] is True
    await viewer.ws.close()


async def test_chat_revoked_token_rejected(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    token = await playback_token(owner, stream["id"], "v")
    response = await owner.client.post(
        f"/api/streams/{stream['id']}/playback-token/revoke", headers=owner.headers
    )
    assert response.status == 200
    code, error = await join_rejected(
        owner.client, stream["id"], token=token, display_name="V"
    )
    assert code == protocol.CLOSE_UNAUTHORIZED
    assert "revoked" in error["message"]


async def test_chat_anonymous_read_only(make_user):
    owner = await make_user()
    stream = await make_stream(owner, app_settings={"chat_allow_anonymous": True})
    anonymous = await join(owner.client, stream["id"])
    assert anonymous.welcome["role"] == "anonymous"
    assert anonymous.welcome["can_send"] is False
    assert anonymous.welcome["viewer_id"].startswith("anon_")
    await anonymous.send("hello")
    error = await receive_frame(anonymous.ws)
    assert error["type"] == "error"
    assert error["code"] == "read_only"

    streamer = await join(owner.client, stream["id"], token=owner.token)
    await streamer.send("welcome all")
    message = await anonymous.next_message()
    assert message["text"] == "welcome all"
    for client in (anonymous, streamer):
        await client.ws.close()


# --- messages -----------------------------------------------------------------


async def test_chat_order_preserved(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    bob = await join_viewer(owner, stream["id"], "bob", "Bob")
    streamer = await join(owner.client, stream["id"], token=owner.token)
    texts = [f"message {index}" for index in range(5)]
    for text in texts:
        await ann.send(text)
    await bob.send("from bob")
    orders = []
    for client in (ann, bob, streamer):
        received = [(await client.next_message()) for _ in range(6)]
        orders.append([item["id"] for item in received])
        from_ann = [item["text"] for item in received if item["viewer_id"] == "ann"]
        assert from_ann == texts
        first = received[0] if received[0]["viewer_id"] == "ann" else received[1]
        assert first["viewer_id"] == "ann"
        assert first["display_name"] == "Ann"
        assert first["role"] == "viewer"
        assert first["stream_id"] == stream["id"]
        assert first["id"].startswith("msg_")
        assert first["created_at"].endswith("Z")
    # Every client sees the messages of all senders in one order.
    assert orders[0] == orders[1] == orders[2]
    for client in (ann, bob, streamer):
        await client.ws.close()


async def test_chat_history_after_reconnect(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    for index in range(3):
        await ann.send(f"line {index}")
        await ann.next_message()
    await ann.ws.close()

    again = await join_viewer(owner, stream["id"], "ann", "Ann")
    assert [item["text"] for item in again.history] == ["line 0", "line 1", "line 2"]
    await again.ws.close()


async def test_chat_html_round_trips_as_text(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "<b>Ann</b>")
    payload = '<script>alert("x")</script> <img src=x onerror=alert(1)> &amp; </p>'
    await ann.send(payload)
    message = await ann.next_message()
    assert message["text"] == payload
    assert message["display_name"] == "<b>Ann</b>"
    response = await owner.client.get(
        f"/api/streams/{stream['id']}/chat/messages", headers=owner.headers
    )
    stored = await response.json()
    assert stored[-1]["text"] == payload
    await ann.ws.close()


async def test_chat_text_cleaned_and_limited(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    await ann.send("  a\x00b\nc\u202ed\x7f  ")
    assert (await ann.next_message())["text"] == "abcd"
    for bad_text, problem in (("\x01\x02 ", "empty"), ("x" * 501, "at most 500")):
        await ann.send(bad_text)
        error = await receive_until(ann.ws, "error")
        assert error["code"] == "invalid_text"
        assert problem in error["message"]
    await ann.ws.send_json({"type": "send", "text": 42})
    assert (await receive_until(ann.ws, "error"))["code"] == "invalid_text"
    await ann.send("x" * 500)
    assert len((await ann.next_message())["text"]) == 500
    await ann.ws.close()


async def test_chat_invalid_frames_answered(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    await ann.ws.send_str("{not json")
    assert (await receive_frame(ann.ws))["code"] == "invalid_frame"
    await ann.ws.send_bytes(b"\x00")
    assert (await receive_frame(ann.ws))["code"] == "invalid_frame"
    await ann.ws.send_json({"type": "shout"})
    assert (await receive_frame(ann.ws))["code"] == "invalid_frame"
    await ann.ws.send_json({"type": "ping"})
    assert (await receive_frame(ann.ws)) == {"type": "pong"}
    await ann.ws.send_json({"type": "delete", "message_id": "msg_1"})
    assert (await receive_frame(ann.ws))["code"] == "forbidden"
    await ann.ws.close()


async def test_chat_oversized_frame_closes(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    await ann.ws.send_str("x" * (protocol.MAX_FRAME_BYTES + 1))
    code, _ = await receive_close(ann.ws)
    assert code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


# --- limits -------------------------------------------------------------------


async def test_chat_rate_limit(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    for index in range(5):
        await ann.send(f"m{index}")
        await ann.next_message()
    await ann.send("one too many")
    error = await receive_frame(ann.ws)
    assert error["code"] == "rate_limited"
    assert error["retry_after"] >= 1
    assert "5 messages per 10 s" in error["message"]
    # A second connection of the same viewer shares the limit.
    again = await join_viewer(owner, stream["id"], "ann", "Ann")
    await again.send("still too many")
    assert (await receive_until(again.ws, "error"))["code"] == "rate_limited"
    for client in (ann, again):
        await client.ws.close()


async def test_chat_slow_mode(make_user):
    owner = await make_user()
    stream = await make_stream(owner, stream_settings={"chat_slow_mode_seconds": 60})
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    assert ann.welcome["slow_mode_seconds"] == 60
    await ann.send("first")
    await ann.next_message()
    await ann.send("second")
    error = await receive_frame(ann.ws)
    assert error["code"] == "slow_mode"
    assert 1 <= error["retry_after"] <= 60
    streamer = await join(owner.client, stream["id"], token=owner.token)
    for text in ("exempt 1", "exempt 2"):
        await streamer.send(text)
        assert (await streamer.next_message())["text"] == text
    for client in (ann, streamer):
        await client.ws.close()


async def test_chat_settings_validated(make_user):
    owner = await make_user()
    cases = [
        {"chat_enabled": "yes"},
        {"chat_allow_anonymous": 1},
        {"chat_slow_mode_seconds": -1},
        {"chat_slow_mode_seconds": 3601},
        {"chat_slow_mode_seconds": 1.5},
    ]
    for settings in cases:
        response = await owner.client.post(
            "/api/apps",
            json={"name": "A", "settings": settings},
            headers=owner.headers,
        )
        assert response.status == 400, settings
        body = await response.json()
        assert body["detail"].startswith(f"settings.{next(iter(settings))}:")


# --- moderation ---------------------------------------------------------------


async def test_chat_delete_seen_by_all(make_user, api_app):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    bob = await join_viewer(owner, stream["id"], "bob", "Bob")
    streamer = await join(owner.client, stream["id"], token=owner.token)
    await ann.send("first")
    await ann.send("second")
    first = await streamer.next_message()
    second = await streamer.next_message()

    await streamer.ws.send_json({"type": "delete", "message_id": first["id"]})
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}/chat/messages/{second['id']}",
        headers=owner.headers,
    )
    assert response.status == 204
    for client in (ann, bob, streamer):
        deleted = [(await receive_until(client.ws, "deleted")) for _ in range(2)]
        assert [frame["message_id"] for frame in deleted] == [
            first["id"],
            second["id"],
        ]
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}/chat/messages/{second['id']}",
        headers=owner.headers,
    )
    assert response.status == 404

    again = await join_viewer(owner, stream["id"], "carl", "Carl")
    assert again.history == []
    await flush_audit(api_app)
    response = await owner.client.get("/api/audit-logs", headers=owner.headers)
    deletions = [
        entry["status"]
        for entry in await response.json()
        if entry["action"] == "delete_chat_message"
    ]
    assert sorted(deletions) == ["failure", "success", "success"]
    for client in (ann, bob, streamer, again):
        await client.ws.close()


async def test_chat_ban_disconnects_and_refuses(make_user, api_app):
    owner = await make_user()
    stream = await make_stream(owner)
    bans_path = f"/api/streams/{stream['id']}/chat/bans"
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    bob = await join_viewer(owner, stream["id"], "bob", "Bob")

    response = await owner.client.post(
        bans_path,
        json={"viewer_id": "ann", "reason": "spam"},
        headers=owner.headers,
    )
    assert response.status == 201, await response.text()
    ban = await response.json()
    assert ban["expires_at"] is None
    assert ban["id"].startswith("ban_")
    code, frames = await receive_close(ann.ws)
    assert code == protocol.CLOSE_BANNED
    assert frames[-1]["code"] == "banned"
    notice = await receive_until(bob.ws, "notice")
    assert notice["viewer_id"] == "ann"

    token = await playback_token(owner, stream["id"], "ann")
    code, error = await join_rejected(
        owner.client, stream["id"], token=token, display_name="Ann"
    )
    assert code == protocol.CLOSE_BANNED
    assert "permanently" in error["message"]

    response = await owner.client.get(bans_path, headers=owner.headers)
    assert [item["viewer_id"] for item in await response.json()] == ["ann"]
    response = await owner.client.delete(
        f"{bans_path}/{ban['id']}", headers=owner.headers
    )
    assert response.status == 204
    response = await owner.client.delete(
        f"{bans_path}/{ban['id']}", headers=owner.headers
    )
    assert response.status == 404
    back = await join(owner.client, stream["id"], token=token, display_name="Ann")
    assert back.welcome["viewer_id"] == "ann"

    await flush_audit(api_app)
    response = await owner.client.get("/api/audit-logs", headers=owner.headers)
    actions = {entry["action"] for entry in await response.json()}
    assert {"ban_chat_viewer", "unban_chat_viewer"} <= actions
    for client in (bob, back):
        await client.ws.close()


async def test_chat_timeout_ban(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    response = await owner.client.post(
        f"/api/streams/{stream['id']}/chat/bans",
        json={"viewer_id": "bob", "duration_minutes": 10},
        headers=owner.headers,
    )
    assert response.status == 201
    ban = await response.json()
    assert ban["expires_at"] > ban["created_at"]
    token = await playback_token(owner, stream["id"], "bob")
    code, error = await join_rejected(
        owner.client, stream["id"], token=token, display_name="Bob"
    )
    assert code == protocol.CLOSE_BANNED
    assert ban["expires_at"] in error["message"]
    for body in (
        {"viewer_id": "bob", "duration_minutes": 0},
        {"viewer_id": "bob", "duration_minutes": "5"},
        {"viewer_id": ""},
        {"duration_minutes": 5},
    ):
        response = await owner.client.post(
            f"/api/streams/{stream['id']}/chat/bans", json=body, headers=owner.headers
        )
        assert response.status == 400, body


async def test_chat_disabled_closes_room(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    response = await owner.client.put(
        f"/api/apps/{stream['app_id']}",
        json={"settings": {"chat_enabled": False}},
        headers=owner.headers,
    )
    assert response.status == 200
    code, frames = await receive_close(ann.ws)
    assert code == protocol.CLOSE_CHAT_DISABLED
    assert frames[-1]["code"] == "chat_disabled"
    code, error = await join_rejected(owner.client, stream["id"], token=owner.token)
    assert code == protocol.CLOSE_CHAT_DISABLED
    assert "chat_enabled" in error["message"]
    response = await owner.client.post(
        f"/api/streams/{stream['id']}/chat/messages",
        json={"text": "hello?"},
        headers=owner.headers,
    )
    assert response.status == 409


async def test_chat_stream_deleted_closes_room(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    response = await owner.client.delete(
        f"/api/streams/{stream['id']}", headers=owner.headers
    )
    assert response.status == 204
    code, _ = await receive_close(ann.ws)
    assert code == protocol.CLOSE_STREAM_NOT_FOUND


# --- REST ---------------------------------------------------------------------


async def test_chat_rest_bot_and_paging(make_user):
    owner = await make_user()
    stream = await make_stream(owner)
    path = f"/api/streams/{stream['id']}/chat/messages"
    key = await owner.create_api_key(stream["app_id"], ["chat:write", "chat:read"])
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    for index in range(7):
        response = await owner.client.post(
            path,
            json={"text": f"bot {index}", "display_name": "Helper"},
            headers=key_auth(key),
        )
        assert response.status == 201, await response.text()
    message = await ann.next_message()
    assert message["role"] == "bot"
    assert message["display_name"] == "Helper"
    assert message["viewer_id"] == key["id"]

    response = await owner.client.get(f"{path}?limit=3", headers=key_auth(key))
    page = await response.json()
    assert [item["text"] for item in page] == ["bot 4", "bot 5", "bot 6"]
    response = await owner.client.get(
        f"{path}?limit=3&before={page[0]['id']}", headers=key_auth(key)
    )
    assert [item["text"] for item in await response.json()] == [
        "bot 1",
        "bot 2",
        "bot 3",
    ]
    response = await owner.client.get(f"{path}?before=msg_nope", headers=owner.headers)
    assert response.status == 400
    response = await owner.client.post(path, json={"text": ""}, headers=owner.headers)
    assert response.status == 400
    await ann.ws.close()


async def test_chat_rest_scopes_and_owner(make_user):
    owner = await make_user()
    other = await make_user()
    stream = await make_stream(owner)
    path = f"/api/streams/{stream['id']}/chat/messages"
    reader = await owner.create_api_key(stream["app_id"], ["chat:read"])
    response = await owner.client.post(
        path, json={"text": "hi"}, headers=key_auth(reader)
    )
    assert response.status == 403
    response = await owner.client.get(path, headers=other.headers)
    assert response.status == 404
    response = await owner.client.get(path)
    assert response.status == 401


async def test_chat_message_event_published(make_user, api_app):
    events: list[Event] = []

    async def collect(event: Event) -> None:
        events.append(event)

    bus = EventBus()
    bus.subscribe(collect, types=[CHAT_MESSAGE_NEW])
    api_app[CHAT_HUB].events = bus
    owner = await make_user()
    stream = await make_stream(owner)
    ann = await join_viewer(owner, stream["id"], "ann", "Ann")
    await ann.send("for the webhooks")
    message = await ann.next_message()
    assert len(events) == 1
    event = events[0]
    assert event.type == CHAT_MESSAGE_NEW
    assert event.app_id == stream["app_id"]
    assert event.stream_id == stream["id"]
    assert event.data == {"message": message}
    await ann.ws.close()


# --- fan-out ------------------------------------------------------------------


async def test_chat_many_clients_receive_broadcast(make_user, api_client):
    owner = await make_user()
    stream = await make_stream(owner, app_settings={"chat_allow_anonymous": True})
    base = str(api_client.make_url(""))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=base, connector=connector) as session:
        clients = []
        for _ in range(10):
            batch = await asyncio.gather(
                *(join(session, stream["id"]) for _ in range(50))
            )
            clients.extend(batch)
        assert api_client.app[CHAT_HUB].connection_count(stream["id"]) == 500
        streamer = await join(session, stream["id"], token=owner.token)
        await streamer.send("hello, all 500")
        received = await asyncio.gather(*(c.next_message() for c in clients))
        assert {item["text"] for item in received} == {"hello, all 500"}
        await asyncio.gather(*(c.ws.close() for c in [*clients, streamer]))


async def test_chat_stalled_client_dropped(
    make_user, database, hub, build_app, tmp_path
):
    config = make_config(
        tmp_path, chat_send_queue_size=8, chat_rate_limit_messages=100_000
    )
    app = build_app(config, database, hub)
    client = OpenApiCheckingClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    stalled = StalledClient()
    try:
        owner = await make_user(client=client)
        stream = await make_stream(owner)
        fast = await join(client, stream["id"], token=owner.token)
        token = await playback_token(owner, stream["id"], "stalled")
        await stalled.open(
            "127.0.0.1",
            client.port,
            chat_path(stream["id"]),
            {"type": "join", "token": token, "display_name": "Stalled"},
        )
        chat_hub = app[CHAT_HUB]
        for _ in range(100):
            if chat_hub.connection_count(stream["id"]) == 2:
                break
            await asyncio.sleep(0.05)
        assert chat_hub.connection_count(stream["id"]) == 2

        text = "y" * 480
        sent = 0
        # Bounded: the stalled client's buffers hold a few hundred frames.
        while chat_hub.connection_count(stream["id"]) == 2 and sent < 3000:
            await fast.send(f"{sent} {text}")
            message = await fast.next_message()
            assert message["text"].startswith(f"{sent} ")
            sent += 1
        assert chat_hub.connection_count(stream["id"]) == 1
        # The room keeps working for the client that reads.
        await fast.send("after the drop")
        assert (await fast.next_message())["text"] == "after the drop"
        await fast.ws.close()
    finally:
        stalled.close()
        await client.close()

"""The admin UI's management pages in a real headless Chromium.

Stream settings, chat bans, API key regeneration, webhooks, recordings,
transcoding profiles, the audit log and the system page, each driven as a
person would and checked against the REST API. Helpers and the Chromium
launch come from test_ui_browser.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from playwright.async_api import Page

from realcast_box import __version__
from tests.box import start_box, start_publisher
from tests.chat_clients import join, join_rejected, receive_close
from tests.conftest import basic_auth
from tests.test_hls_browser import require_chromium, stop_publisher
from tests.test_ui_browser import (
    confirm_in_page,
    create_app_in_page,
    create_key_in_page,
    create_stream_in_page,
    log_in_over_api,
    open_browser,
    sign_up,
)
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.timeout(180)


# Controls a screen reader would announce without a name: no label with
# text, no aria-label, and for buttons and links no text of their own.
# Text is read with textContent, so controls in a closed <details> count.
UNNAMED_CONTROLS = """() => [...document.querySelectorAll(
    "input, select, textarea, button, a[href], video, summary")]
  .filter(e => !(
    (e.labels && [...e.labels].some(l => l.textContent.trim()))
    || e.getAttribute("aria-label") || e.getAttribute("aria-labelledby")
    || (["BUTTON", "A", "SUMMARY"].includes(e.tagName) && e.textContent.trim())))
  .map(e => e.outerHTML.slice(0, 120))"""


def page_errors(console: list[str]) -> list[str]:
    return [line for line in console if line.startswith("pageerror")]


async def test_ui_admin_healthz_disk_space(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    response = await box.client.get("/healthz")
    assert response.status == 200
    health = await response.json()
    assert health["version"] == __version__
    assert health["data_disk_free_bytes"] > 0
    assert health["data_disk_total_bytes"] >= health["data_disk_free_bytes"]


async def test_ui_admin_healthz_unreadable_disk(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    moved = tmp_path / "moved-data"
    box.data_dir.rename(moved)
    try:
        response = await box.client.get("/healthz")
        health = await response.json()
    finally:
        moved.rename(box.data_dir)
    assert response.status == 200
    assert health["data_disk_free_bytes"] is None
    assert health["data_disk_total_bytes"] is None


async def test_ui_admin_stream_edit(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        app_url = page.url

        # A profile made in the editor, after the box rejected a ladder
        # with two qualities of one name.
        await page.get_by_role("link", name="Transcoding profiles").click()
        await page.get_by_label("Profile name", exact=True).fill("Ladder")
        await page.get_by_label("Name of quality 1", exact=True).fill("360p")
        await page.get_by_label("Width of quality 1", exact=True).fill("640")
        await page.get_by_label("Height of quality 1", exact=True).fill("360")
        await page.get_by_role("button", name="Add quality").click()
        await page.get_by_label("Name of quality 2", exact=True).fill("360p")
        await page.get_by_role("button", name="Create profile").click()
        name_error = page.get_by_role("alert").filter(has_text="duplicate name")
        await name_error.wait_for(timeout=5_000)
        name_error_text = await name_error.text_content()
        await page.get_by_role("button", name="Remove quality 2").click()
        await page.get_by_role("button", name="Create profile").click()
        saved_profile = page.get_by_role("region", name="Profile Ladder")
        await saved_profile.wait_for(timeout=5_000)
        await page.screenshot(path=tmp_path / "profiles.png", full_page=True)
        unnamed = await page.evaluate(UNNAMED_CONTROLS)

        await page.goto(app_url)
        stream_id = await create_stream_in_page(page, "Morning show")
        await page.get_by_label("Stream title").fill("Evening show")
        await page.get_by_label("Playback").select_option("signed")
        await page.get_by_label("Maximum bitrate (kbps, empty for none)").fill("2500")
        await page.get_by_label("Record each session").select_option("true")
        await page.get_by_label("Transcoding profile").select_option(
            label="Ladder (360p)"
        )
        await page.get_by_role("button", name="Save stream").click()
        heading = page.get_by_role("heading", name="Evening show", exact=True)
        await heading.wait_for(timeout=5_000)
        await page.get_by_text("Saved.").wait_for(timeout=5_000)
        await page.screenshot(path=tmp_path / "stream-settings.png", full_page=True)
        unnamed += await page.evaluate(UNNAMED_CONTROLS)

        auth = await log_in_over_api(box)
        response = await box.client.post(
            f"/api/streams/{stream_id}/playback-token",
            json={"viewer_id": "viewer-7"},
            headers=auth,
        )
        token = (await response.json())["playback_token"]
        await page.get_by_role("button", name="Revoke playback tokens").click()
        await confirm_in_page(page, "Revoke tokens")
        await page.get_by_text("is revoked").wait_for(timeout=5_000)
        revoked_code, _error = await join_rejected(
            box.client, stream_id, token=token, display_name="Vic"
        )

        response = await box.client.get(f"/api/streams/{stream_id}", headers=auth)
        stream = await response.json()
        response = await box.client.get("/api/transcoding-profiles", headers=auth)
        profiles = await response.json()

    assert unnamed == []
    assert name_error_text.startswith("The box rejected the input: qualities[1]")
    assert "names must be unique" in name_error_text
    assert stream["title"] == "Evening show"
    assert revoked_code == 4401
    assert [profile["name"] for profile in profiles] == ["Ladder"]
    assert profiles[0]["qualities"][0]["width"] == 640
    assert stream["settings"] == {
        "playback_policy": "signed",
        "max_bitrate_kbps": 2500,
        "recording": True,
        "transcoding_profile_id": profiles[0]["id"],
    }
    assert not page_errors(console), console


async def test_ui_admin_chat_ban_unban(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        stream_id = await create_stream_in_page(page, "Chat show")
        await (
            page.locator("#chat-state")
            .filter(has_text="Connected as")
            .wait_for(timeout=5_000)
        )
        auth = await log_in_over_api(box)
        response = await box.client.post(
            f"/api/streams/{stream_id}/playback-token",
            json={"viewer_id": "viewer-42", "expiry_minutes": 10},
            headers=auth,
        )
        assert response.status == 200, await response.text()
        token = (await response.json())["playback_token"]
        viewer = await join(
            box.client, stream_id, token=token, display_name="Spammy Sam"
        )
        await viewer.send("buy cheap followers")
        closing = asyncio.create_task(receive_close(viewer.ws))

        row = page.get_by_role("list", name="Chat messages").get_by_role("listitem")
        spam = row.filter(has_text="buy cheap followers")
        await spam.get_by_role("button", name="Ban Spammy Sam").click()
        await confirm_in_page(page, "Ban")
        bans = page.get_by_role("list", name="Banned viewers")
        banned = bans.get_by_role("listitem").filter(has_text="viewer-42")
        await banned.wait_for(timeout=5_000)
        banned_text = await banned.inner_text()
        close_code, frames = await closing
        response = await box.client.get(
            f"/api/streams/{stream_id}/chat/bans", headers=auth
        )
        api_bans = await response.json()
        await page.screenshot(path=tmp_path / "chat-bans.png", full_page=True)

        await banned.get_by_role("button", name="Unban viewer-42").click()
        nobody = bans.get_by_role("listitem").filter(has_text="Nobody is banned")
        await nobody.wait_for(timeout=5_000)
        response = await box.client.get(
            f"/api/streams/{stream_id}/chat/bans", headers=auth
        )
        bans_after = await response.json()
        rejoined = await join(box.client, stream_id, token=token, display_name="Sam")
        rejoined_role = rejoined.welcome["role"]
        await rejoined.ws.close()

        # A ban made through the API shows up, and its removal through the
        # API, which sends the chat no notice, disappears by the panel's
        # polling of the ban list.
        response = await box.client.post(
            f"/api/streams/{stream_id}/chat/bans",
            json={"viewer_id": "viewer-99", "reason": "spam elsewhere"},
            headers=auth,
        )
        assert response.status == 201, await response.text()
        api_ban = await response.json()
        polled = bans.get_by_role("listitem").filter(has_text="viewer-99")
        await polled.wait_for(timeout=20_000)
        polled_text = await polled.inner_text()
        response = await box.client.delete(
            f"/api/streams/{stream_id}/chat/bans/{api_ban['id']}", headers=auth
        )
        assert response.status == 204, await response.text()
        await polled.wait_for(state="detached", timeout=20_000)

    assert "banned permanently" in banned_text
    assert close_code == 4413, frames
    assert frames[-1]["code"] == "banned", frames
    assert [ban["viewer_id"] for ban in api_bans] == ["viewer-42"]
    assert bans_after == []
    assert rejoined_role == "viewer"
    assert "spam elsewhere" in polled_text
    assert not page_errors(console), console


async def test_ui_admin_key_regenerate(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        api_key, old_secret = await create_key_in_page(
            page, "Scoreboard", "streams:read"
        )
        await page.get_by_role("button", name="Done").click()

        # The confirmation dialog with the keyboard: Enter opens it with the
        # focus inside, Escape cancels and returns the focus to the button.
        regenerate = page.get_by_role("button", name="Regenerate secret of Scoreboard")
        await regenerate.focus()
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Are you sure?")
        await dialog.wait_for(timeout=5_000)
        dialog_text = await dialog.inner_text()
        await page.screenshot(path=tmp_path / "confirm-dialog.png", full_page=True)
        unnamed = await page.evaluate(UNNAMED_CONTROLS)
        focus_in_dialog = await page.evaluate(
            "document.activeElement.closest('dialog') !== null"
        )
        focused_in_dialog = await page.evaluate("document.activeElement.textContent")
        await page.keyboard.press("Escape")
        await dialog.wait_for(state="detached", timeout=5_000)
        focus_after_escape = await page.evaluate(
            "document.activeElement.getAttribute('aria-label')"
        )
        secrets_after_escape = await page.get_by_label("API secret").count()
        # Tab from Cancel to the confirm button, and Enter regenerates.
        await page.keyboard.press("Enter")
        await dialog.wait_for(timeout=5_000)
        await page.keyboard.press("Tab")
        await page.keyboard.press("Enter")
        secret_input = page.get_by_label("API secret")
        await secret_input.wait_for(timeout=5_000)
        new_secret = await secret_input.input_value()
        await page.screenshot(path=tmp_path / "api-key-regenerated.png", full_page=True)
        # The focus is on the secret, and Escape closes its panel.
        await page.keyboard.press("Escape")
        secrets_after_done = await page.get_by_label("API secret").count()
        focused_id = await page.evaluate("document.activeElement.id")
        old_status = (
            await box.client.get(
                "/api/streams", headers=basic_auth(api_key, old_secret)
            )
        ).status
        new_status = (
            await box.client.get(
                "/api/streams", headers=basic_auth(api_key, new_secret)
            )
        ).status

        await page.get_by_role("button", name="Delete key Scoreboard").click()
        await confirm_in_page(page, "Delete key")
        no_keys = page.get_by_role("listitem").filter(has_text="No API keys yet")
        await no_keys.wait_for(timeout=5_000)
        focus_after_delete = await page.evaluate("document.activeElement.id")
        deleted_status = (
            await box.client.get(
                "/api/streams", headers=basic_auth(api_key, new_secret)
            )
        ).status

    assert unnamed == []
    assert "Regenerate the secret of Scoreboard?" in dialog_text
    assert focus_in_dialog
    assert focused_in_dialog == "Cancel"
    assert focus_after_escape == "Regenerate secret of Scoreboard"
    assert secrets_after_escape == 0
    assert new_secret.startswith("rcs_"), new_secret
    assert new_secret != old_secret
    assert secrets_after_done == 0
    assert focused_id == "main"
    assert old_status == 401
    assert new_status == 200
    assert deleted_status == 401
    assert focus_after_delete == "main"
    assert not page_errors(console), console


async def test_ui_admin_webhook_created(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    receiver = Receiver()
    receiver_url = await receiver.start()
    try:
        async with open_browser(tmp_path) as (page, console):
            await sign_up(page, str(box.client.make_url("/")))
            await create_app_in_page(page, "Studio")
            await page.get_by_role("link", name="Webhooks").click()
            await page.get_by_label("Receiver URL").fill(receiver_url)
            await page.get_by_label("stream.offline", exact=False).uncheck()
            await page.get_by_label("webhook.test", exact=False).check()
            await page.get_by_role("button", name="Create webhook").click()
            secret_input = page.get_by_label("Webhook secret")
            await secret_input.wait_for(timeout=5_000)
            receiver.secret = await secret_input.input_value()
            await page.get_by_role("button", name="Done").click()

            auth = await log_in_over_api(box)
            response = await box.client.get("/api/webhooks", headers=auth)
            api_webhooks = await response.json()

            webhook = page.get_by_role("region", name=f"Webhook to {receiver_url}")
            await webhook.get_by_text("Edit URL and events").click()
            await webhook.get_by_label(
                f"chat.message.new for the webhook to {receiver_url}"
            ).check()
            await webhook.get_by_role("button", name="Save webhook").click()
            await webhook.get_by_text("chat.message.new").first.wait_for(timeout=5_000)
            response = await box.client.get("/api/webhooks", headers=auth)
            edited_webhooks = await response.json()
            await webhook.get_by_role("button", name="Send test event").click()
            await receiver.wait_for_events("webhook.test", 1)
            log = webhook.get_by_role("table", name=f"Deliveries to {receiver_url}")
            for _ in range(50):
                await webhook.get_by_role("button", name="Show delivery log").click()
                await log.wait_for(timeout=5_000)
                if "delivered" in await log.inner_text():
                    break
                await asyncio.sleep(0.2)
            first_log = await log.inner_text()
            await log.get_by_role("button", name="Redeliver webhook.test").click()
            await receiver.wait_for_events("webhook.test", 2)
            await log.get_by_role("row").nth(2).wait_for(timeout=5_000)
            await log.locator("details summary").first.click()
            attempt = log.locator("li[data-attempt]").first
            await attempt.wait_for(timeout=5_000)
            attempt_text = await attempt.inner_text()

            await webhook.get_by_role("button", name="Rotate secret of webhook").click()
            await confirm_in_page(page, "Rotate secret")
            await secret_input.wait_for(timeout=5_000)
            old_secret = receiver.secret
            receiver.secret = await secret_input.input_value()
            await page.get_by_role("button", name="Done").click()
            await webhook.get_by_role("button", name="Send test event").click()
            await receiver.wait_for_events("webhook.test", 3)
            await page.screenshot(path=tmp_path / "webhooks.png", full_page=True)
            unnamed = await page.evaluate(UNNAMED_CONTROLS)

            await webhook.get_by_role("button", name="Delete webhook").click()
            await confirm_in_page(page, "Delete webhook")
            await webhook.wait_for(state="detached", timeout=5_000)
            response = await box.client.get("/api/webhooks", headers=auth)
            webhooks_after = await response.json()
    finally:
        await receiver.close()

    assert unnamed == []
    assert [item["url"] for item in api_webhooks] == [receiver_url]
    assert api_webhooks[0]["events"] == ["stream.live", "webhook.test"]
    assert edited_webhooks[0]["events"] == [
        "stream.live",
        "chat.message.new",
        "webhook.test",
    ]
    assert "delivered" in first_log
    assert "Attempt 1 at" in attempt_text
    assert "HTTP 200" in attempt_text
    assert "Response body: answered 200" in attempt_text
    assert receiver.secret.startswith("whsec_")
    assert receiver.secret != old_secret
    assert all(request.verified for request in receiver.requests)
    assert webhooks_after == []
    assert not page_errors(console), console


async def chart_sample_count(page: Page) -> int:
    points = await page.evaluate(
        """() => document.querySelector(".chart polyline.viewers")
                   ?.getAttribute("points") || ''"""
    )
    return len(points.split())


async def test_ui_admin_recording_and_chart(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path, reconnect_window_seconds=0)
    publisher = None
    async with open_browser(tmp_path) as (page, console):
        try:
            await sign_up(page, str(box.client.make_url("/")))
            await create_app_in_page(page, "Studio")
            app_url = page.url
            await create_stream_in_page(page, "Recorded show")
            stream_key = await page.get_by_label("Stream key").input_value()

            publisher = await start_publisher(
                box.rtmp_url(stream_key), "--seconds", "14", "--realtime"
            )
            start = page.get_by_role("button", name="Start recording")
            await page.wait_for_function(
                "button => !button.disabled",
                arg=await start.element_handle(),
                timeout=30_000,
            )
            await start.click()
            stop = page.get_by_role("button", name="Stop recording")
            await page.wait_for_function(
                "button => !button.disabled",
                arg=await stop.element_handle(),
                timeout=10_000,
            )
            started_samples = await chart_sample_count(page)

            # The page polls every 3 s, and two samples of a live status draw
            # a line. Two more samples after the start, 3 s or more, give the
            # recording at least one 2 s segment.
            await page.wait_for_function(
                f"""() => {{
                  const line = document.querySelector(".chart polyline.viewers");
                  return line && line.getAttribute("points").split(" ").length
                    >= Math.max(2, {started_samples} + 2);
                }}""",
                timeout=30_000,
            )
            points = await page.locator(".chart polyline.viewers").get_attribute(
                "points"
            )
            summary = await page.locator("#chart-summary").text_content()
            await page.screenshot(path=tmp_path / "stream-chart.png", full_page=True)
            await stop.click()
            note = page.locator("#recording-note")
            await note.filter(has_text="Saved the recording").wait_for(timeout=30_000)
            note_text = await note.text_content()
            code = await asyncio.wait_for(publisher.wait(), 60)
            publisher = None
        finally:
            if publisher is not None:
                await stop_publisher(publisher)

        await page.goto(app_url)
        await page.get_by_role("link", name="Recordings").click()
        item = page.locator('[data-recording-id][data-status="completed"]')
        await item.wait_for(timeout=30_000)
        thumbnail = item.get_by_role("img", name="Poster frame of Recorded show")
        await page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0",
            arg=await thumbnail.element_handle(),
            timeout=10_000,
        )
        await item.get_by_role("button", name="Play Recorded show").click()
        await page.wait_for_function(
            'document.querySelector("#recording-player").currentTime > 0.5',
            timeout=15_000,
        )
        video_width = await page.evaluate(
            'document.querySelector("#recording-player").videoWidth'
        )
        await page.screenshot(path=tmp_path / "recordings.png", full_page=True)
        unnamed = await page.evaluate(UNNAMED_CONTROLS)

        await item.get_by_label("Edit title and description of Recorded show").click()
        title = item.get_by_label("Title of the recording Recorded show")
        await title.fill("Final cut")
        await item.get_by_label("Description of the recording Recorded show").fill(
            "The whole show, edited"
        )
        await item.get_by_role("button", name="Save recording").click()
        saved = page.locator("#recordings-note").filter(has_text="Final cut")
        await saved.wait_for(timeout=5_000)
        await item.get_by_text("The whole show, edited").wait_for(timeout=5_000)
        edited_text = await item.inner_text()
        await page.screenshot(path=tmp_path / "recording-edited.png", full_page=True)
        auth = await log_in_over_api(box)
        response = await box.client.get("/api/recordings", headers=auth)
        edited = await response.json()

        await item.get_by_role("button", name="Delete recording Final cut").click()
        await confirm_in_page(page, "Delete recording")
        empty = page.get_by_role("listitem").filter(has_text="No recordings yet")
        await empty.wait_for(timeout=5_000)
        response = await box.client.get("/api/recordings", headers=auth)
        recordings = await response.json()

    assert code == 0
    assert "(completed" in note_text, note_text
    assert unnamed == []
    assert len(points.split()) >= 2, points
    assert "samples" in summary, summary
    assert video_width == 320
    assert "Final cut" in edited_text
    assert edited[0]["title"] == "Final cut"
    assert edited[0]["description"] == "The whole show, edited"
    assert recordings == []
    assert not page_errors(console), json.dumps(console)


async def test_ui_admin_audit_and_system(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        response = await box.client.post(
            "/api/auth/login",
            json={"email": "owner@example.com", "password": "not the password"},
        )
        assert response.status == 401

        await page.get_by_role("link", name="Audit log").click()
        entries = page.get_by_role("table", name="Audit entries")
        await entries.filter(has_text="create_app").wait_for(timeout=5_000)
        all_text = await entries.inner_text()
        await page.get_by_label("Show").select_option("security")
        await page.get_by_role("button", name="Apply filters").click()
        await entries.filter(has_text="login_failed").wait_for(timeout=5_000)
        await entries.filter(has_text="create_app").wait_for(
            state="detached", timeout=5_000
        )
        await page.screenshot(path=tmp_path / "audit.png", full_page=True)
        unnamed = await page.evaluate(UNNAMED_CONTROLS)
        await page.get_by_label("Show").select_option("all")
        await page.get_by_label("Action starts with").fill("regis")
        await page.get_by_role("button", name="Apply filters").click()
        await entries.filter(has_text="login_failed").wait_for(
            state="detached", timeout=5_000
        )
        register_text = await entries.inner_text()
        await page.get_by_label("Action starts with").fill("log in")
        await page.get_by_role("button", name="Apply filters").click()
        invalid_action = page.get_by_role("alert").filter(has_text="action")
        await invalid_action.wait_for(timeout=5_000)
        invalid_action_text = await invalid_action.text_content()

        await page.get_by_role("link", name="System").click()
        version = page.locator("#box-version")
        await version.wait_for(timeout=5_000)
        version_text = await version.text_content()
        disk_text = await page.locator("#disk-free").text_content()
        encoders = page.get_by_role("table", name="Encoders")
        libx264 = encoders.get_by_role("row").filter(has_text="libx264")
        await libx264.wait_for(timeout=30_000)
        libx264_text = await libx264.inner_text()
        await page.screenshot(path=tmp_path / "system.png", full_page=True)

        # At a phone's width both pages fit without sideways scrolling.
        await page.set_viewport_size({"width": 390, "height": 844})
        system_width = await page.evaluate("document.documentElement.scrollWidth")
        await page.get_by_role("link", name="Audit log").click()
        await entries.wait_for(timeout=5_000)
        audit_width = await page.evaluate("document.documentElement.scrollWidth")
        await page.screenshot(path=tmp_path / "audit-phone.png", full_page=True)

    assert unnamed == []
    assert "register" in all_text
    assert "register" in register_text
    assert "create_app" not in register_text
    assert invalid_action_text.startswith("The box rejected the input: action:")
    assert version_text == __version__
    assert "iB" in disk_text
    assert "works" in libx264_text
    assert system_width <= 390
    assert audit_width <= 390
    assert not page_errors(console), console


async def test_ui_admin_keyboard_only(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await page.get_by_role("button", name="Log out").click()
        await page.get_by_role("heading", name="Log in", exact=True).wait_for(
            timeout=5_000
        )

        # Log in, create an app and open its webhooks page with Tab and Enter.
        focused: list[str] = []

        async def tab_to(name: str, limit: int = 30) -> None:
            for _ in range(limit):
                await page.keyboard.press("Tab")
                label = await page.evaluate(
                    """() => {
                      const e = document.activeElement;
                      return (e.labels && e.labels[0] ? e.labels[0].innerText
                              : e.getAttribute("aria-label") || e.innerText || "")
                             .trim();
                    }"""
                )
                focused.append(label)
                if label.startswith(name):
                    return
            raise AssertionError(f"Tab never reached {name!r}: {focused}")

        await tab_to("Email")
        await page.keyboard.type("owner@example.com")
        await tab_to("Password")
        await page.keyboard.type("a long enough password")
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Apps", exact=True).wait_for(
            timeout=5_000
        )
        await tab_to("Name")
        await page.keyboard.type("Keyboard studio")
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Keyboard studio", exact=True).wait_for(
            timeout=5_000
        )
        await tab_to("Webhooks")
        outline = await page.evaluate(
            "getComputedStyle(document.activeElement).outlineStyle"
        )
        await page.screenshot(path=tmp_path / "keyboard-focus.png", full_page=True)
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Webhooks of Keyboard studio").wait_for(
            timeout=5_000
        )

    assert outline != "none", focused
    assert not page_errors(console), console

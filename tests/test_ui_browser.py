"""The admin UI at / driven in a real headless Chromium, as a person uses it.

Chromium is Debian's package, launched by Playwright for Python through its
executable_path (as in test_hls_browser.py). The box serves the page, the
API and the HLS output from one origin on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from playwright.async_api import Page, async_playwright
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from realcast_box.api.errors import error_middleware
from realcast_box.appkeys import CONFIG
from realcast_box.ui import find_ui_dir, setup_ui
from tests.box import start_box, start_publisher
from tests.conftest import basic_auth
from tests.test_hls_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    require_chromium,
    stop_publisher,
)

EMAIL = "owner@example.com"
PASSWORD = "a long enough password"

VIDEO_STATE = """() => {
  const v = document.querySelector("#preview");
  return {currentTime: v.currentTime, videoWidth: v.videoWidth,
          readyState: v.readyState, paused: v.paused,
          note: v.parentElement.querySelector("p").textContent};
}"""


@asynccontextmanager
async def open_browser(
    tmp_path: Path, *, ignore_https_errors: bool = False
) -> AsyncIterator[tuple[Page, list[str]]]:
    """Open a page in headless Chromium and collect its console errors in a list.

    ``ignore_https_errors`` lets the page load from a box with a self-signed
    certificate.
    """
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_https_errors=ignore_https_errors,
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            console: list[str] = []
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.on(
                "console",
                lambda message: (
                    console.append(message.text) if message.type == "error" else None
                ),
            )
            yield page, console
        finally:
            await context.close()


async def sign_up(page: Page, box_url: str) -> None:
    await page.goto(box_url, timeout=10_000)
    await page.get_by_role("heading", name="Log in", exact=True).wait_for(timeout=5_000)
    await page.get_by_role("link", name="Sign up").click()
    await page.get_by_label("Full name").fill("Olive Owner")
    await page.get_by_label("Email").fill(EMAIL)
    await page.get_by_label("Password (8 characters or more)").fill(PASSWORD)
    await page.get_by_role("button", name="Sign up").click()
    await page.get_by_role("heading", name="Apps", exact=True).wait_for(timeout=5_000)


async def wait_for_video(page: Page, condition: str, timeout: float) -> dict:
    """Wait until ``condition`` (JS, of the preview ``v``) is true; return the state."""
    expression = f'(v => {condition})(document.querySelector("#preview"))'
    try:
        await page.wait_for_function(expression, timeout=timeout * 1000, polling=200)
    except PlaywrightTimeoutError:
        state = await page.evaluate(VIDEO_STATE)
        raise AssertionError(
            f"preview timed out after {timeout} s waiting for {condition}: "
            f"{json.dumps(state)}"
        ) from None
    return await page.evaluate(VIDEO_STATE)


async def test_ui_browser_login_errors(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, _console):
        await page.goto(str(box.client.make_url("/")), timeout=10_000)
        await page.get_by_label("Email").fill("nobody@example.com")
        await page.get_by_label("Password").fill("wrong password")
        await page.get_by_role("button", name="Log in").click()
        alert = page.get_by_role("alert")
        await alert.filter(has_text="email or password").wait_for(timeout=5_000)
        text = await alert.text_content()
        await page.screenshot(path=tmp_path / "login-error.png", full_page=True)

    assert "Not signed in, or the email or password is wrong" in text


async def test_ui_browser_unknown_api_path(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    response = await box.client.get("/api/no-such-thing")
    assert response.status == 404
    assert await response.json() == {
        "detail": "not found: /api/no-such-thing",
        "status_code": 404,
    }
    response = await box.client.get("/ui/no-such-file.js")
    assert response.status == 404
    assert (await response.json())["status_code"] == 404
    response = await box.client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    response = await box.client.get("/ui/vendor/hls.min.js")
    assert response.status == 200


async def test_ui_browser_stream_preview(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path, hls_window=3)
    box_url = str(box.client.make_url("/"))
    publisher = None
    async with open_browser(tmp_path) as (page, console):
        try:
            await sign_up(page, box_url)
            await page.screenshot(path=tmp_path / "apps.png", full_page=True)

            await page.get_by_label("Name", exact=True).fill("Studio")
            await page.get_by_role("button", name="Create app").click()
            await page.get_by_role("heading", name="Studio", exact=True).wait_for(
                timeout=5_000
            )
            await page.get_by_label("Title").fill("Morning show")
            await page.get_by_role("button", name="Create stream").click()
            await page.get_by_role("heading", name="Morning show", exact=True).wait_for(
                timeout=5_000
            )

            server = await page.get_by_label("Server").input_value()
            key_input = page.get_by_label("Stream key")
            assert await key_input.get_attribute("type") == "password"
            await page.get_by_role("button", name="Reveal").click()
            assert await key_input.get_attribute("type") == "text"
            stream_key = await key_input.input_value()
            await page.screenshot(path=tmp_path / "stream-offline.png", full_page=True)

            publisher = await start_publisher(
                box.rtmp_url(stream_key), "--seconds", "25", "--realtime"
            )
            live_badge = page.locator('#main [data-status="live"]')
            await live_badge.wait_for(timeout=15_000)
            first = await wait_for_video(
                page, "v.currentTime > 0 && v.videoWidth > 0", timeout=25
            )
            later = await wait_for_video(
                page, f"v.currentTime > {first['currentTime']} + 2", timeout=15
            )
            badge_text = await live_badge.text_content()
            await page.screenshot(path=tmp_path / "stream-live.png", full_page=True)

            await page.get_by_role("link", name="Back to the app").click()
            stream_row = page.get_by_role("listitem").filter(has_text="Morning show")
            await stream_row.locator('[data-status="live"]').wait_for(timeout=5_000)
            await page.screenshot(path=tmp_path / "app-streams.png", full_page=True)
        finally:
            if publisher is not None:
                await stop_publisher(publisher)

    report = json.dumps({"first": first, "later": later, "console": console})
    # The box stores the ephemeral port it bound in its config.
    assert server == f"rtmp://127.0.0.1:{box.rtmp_port}/live"
    assert box.app[CONFIG].rtmp_port == box.rtmp_port
    assert stream_key.startswith("app_"), stream_key
    assert badge_text == "Live"
    assert first["videoWidth"] > 0, report
    assert later["currentTime"] > first["currentTime"], report
    assert not [line for line in console if line.startswith("pageerror")], report


async def test_ui_browser_path_outside_folder(aiohttp_client, tmp_path):
    box = await start_box(aiohttp_client, tmp_path)
    for path in ("/ui/../pyproject.toml", "/ui/%2e%2e/pyproject.toml"):
        response = await box.client.get(path)
        assert response.status == 404, path
        assert (await response.json())["status_code"] == 404, path


async def create_app_in_page(page: Page, name: str) -> None:
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_role("button", name="Create app").click()
    heading = page.get_by_role("heading", name=name, exact=True)
    await heading.wait_for(timeout=5_000)


async def create_key_in_page(page: Page, name: str, scope: str) -> tuple[str, str]:
    """Create an API key on the API keys page; return its id and shown secret.

    The secret panel is left open, for the caller to look at and close.
    """
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Key name").fill(name)
    await page.get_by_label(scope).check()
    await page.get_by_role("button", name="Create key").click()
    secret_input = page.get_by_label("API secret")
    await secret_input.wait_for(timeout=5_000)
    secret = await secret_input.input_value()
    key_row = page.get_by_role("listitem").filter(has_text=name)
    await key_row.wait_for(timeout=5_000)
    api_key = await key_row.locator("code").text_content()
    return api_key or "", secret


async def test_ui_browser_api_key_secret(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        api_key, secret = await create_key_in_page(page, "Scoreboard", "streams:read")
        key_row = page.get_by_role("listitem").filter(has_text="Scoreboard")
        await page.screenshot(path=tmp_path / "api-key-created.png", full_page=True)

        await page.get_by_role("button", name="Done").click()
        await page.reload()
        await key_row.wait_for(timeout=5_000)
        page_text = await page.locator("body").inner_text()
        secret_inputs = await page.get_by_label("API secret").count()
        await page.screenshot(path=tmp_path / "api-keys.png", full_page=True)

    assert secret.startswith("rcs_"), secret
    assert api_key.startswith("rck_"), api_key
    assert "streams:read" in page_text
    # Shown once: after a reload the page lists the key but not its secret.
    assert secret not in page_text
    assert secret_inputs == 0
    assert not [line for line in console if line.startswith("pageerror")], console
    response = await box.client.get("/api/streams", headers=basic_auth(api_key, secret))
    assert response.status == 200, await response.text()


def test_ui_browser_finds_installed_folder(tmp_path):
    checkout = tmp_path / "checkout"
    installed = tmp_path / "installed"
    installed.mkdir()
    (installed / "index.html").write_text("<!doctype html>")
    assert find_ui_dir([checkout, installed]) == installed
    assert find_ui_dir([checkout]) is None


async def test_ui_browser_missing_folder(aiohttp_client, tmp_path):
    app = web.Application(middlewares=[error_middleware])
    setup_ui(app, tmp_path / "no-ui")
    client = await aiohttp_client(app)
    response = await client.get("/")
    assert response.status == 404
    assert (await response.json())["status_code"] == 404


async def create_stream_in_page(page: Page, title: str) -> str:
    """Create a stream on the open app page and return its id from the URL."""
    await page.get_by_label("Title").fill(title)
    await page.get_by_role("button", name="Create stream").click()
    heading = page.get_by_role("heading", name=title, exact=True)
    await heading.wait_for(timeout=5_000)
    return page.url.rsplit("/", 1)[1]


async def log_in_over_api(box) -> dict[str, str]:
    response = await box.client.post(
        "/api/auth/login", json={"email": EMAIL, "password": PASSWORD}
    )
    assert response.status == 200, await response.text()
    return {"Authorization": f"Bearer {(await response.json())['access_token']}"}


async def wait_for_api_messages(box, stream_id: str, auth: dict, text: str) -> list:
    """Poll the chat history until a message has ``text``; return the texts."""
    texts: list[str] = []
    for _ in range(50):
        response = await box.client.get(
            f"/api/streams/{stream_id}/chat/messages", headers=auth
        )
        assert response.status == 200, await response.text()
        texts = [message["text"] for message in await response.json()]
        if text in texts:
            return texts
        await asyncio.sleep(0.1)
    return texts


async def test_ui_browser_chat_both_ways(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        stream_id = await create_stream_in_page(page, "Chat show")
        auth = await log_in_over_api(box)
        chat_state = page.locator("#chat-state")
        await chat_state.filter(has_text="Connected as").wait_for(timeout=5_000)

        # Markup in a message is shown as typed, never parsed.
        message_input = page.get_by_label("Message", exact=True)
        await message_input.fill("<b>hello from the page</b>")
        await page.get_by_role("button", name="Send").click()
        api_texts = await wait_for_api_messages(
            box, stream_id, auth, "<b>hello from the page</b>"
        )

        response = await box.client.post(
            f"/api/streams/{stream_id}/chat/messages",
            json={"text": "hello from the API"},
            headers=auth,
        )
        assert response.status == 201, await response.text()
        api_message = await response.json()
        chat_list = page.get_by_role("list", name="Chat messages")
        from_api = chat_list.get_by_role("listitem").filter(
            has_text="hello from the API"
        )
        await from_api.wait_for(timeout=5_000)
        bold_count = await chat_list.locator("b").count()
        await page.screenshot(path=tmp_path / "chat.png", full_page=True)

        await from_api.get_by_role("button", name="Delete message").click()
        await from_api.wait_for(state="detached", timeout=5_000)
        response = await box.client.get(
            f"/api/streams/{stream_id}/chat/messages", headers=auth
        )
        remaining = [message["id"] for message in await response.json()]

        # At a phone's width the stream page fits without sideways scrolling.
        await page.set_viewport_size({"width": 390, "height": 844})
        page_width = await page.evaluate("document.documentElement.scrollWidth")
        await page.screenshot(path=tmp_path / "stream-phone.png", full_page=True)

    assert "<b>hello from the page</b>" in api_texts, api_texts
    assert bold_count == 0
    assert api_message["id"] not in remaining
    assert page_width <= 390
    assert not [line for line in console if line.startswith("pageerror")], console


async def confirm_in_page(page: Page, button: str) -> None:
    """Press ``button`` in the page's confirmation dialog and wait until it closes."""
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("button", name=button, exact=True).click()
    await dialog.wait_for(state="detached", timeout=5_000)


async def test_ui_browser_edit_and_delete(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    async with open_browser(tmp_path) as (page, console):
        await sign_up(page, str(box.client.make_url("/")))
        await create_app_in_page(page, "Studio")
        await create_stream_in_page(page, "Short-lived")
        await page.get_by_role("button", name="Delete stream").click()
        await confirm_in_page(page, "Delete stream")
        no_streams = page.get_by_role("listitem").filter(has_text="No streams yet")
        await no_streams.wait_for(timeout=5_000)

        await page.get_by_label("App name").fill("Studio B")
        await page.get_by_role("button", name="Save app").click()
        renamed = page.get_by_role("heading", name="Studio B", exact=True)
        await renamed.wait_for(timeout=5_000)
        await page.screenshot(path=tmp_path / "app-settings.png", full_page=True)

        await page.get_by_role("button", name="Delete app").click()
        await confirm_in_page(page, "Delete app")
        empty = page.get_by_role("listitem").filter(has_text="No apps yet")
        await empty.wait_for(timeout=5_000)
        auth = await log_in_over_api(box)
        response = await box.client.get("/api/apps", headers=auth)
        apps = await response.json()

    assert apps == []
    assert not [line for line in console if line.startswith("pageerror")], console


async def test_ui_browser_signed_stream_preview(aiohttp_client, tmp_path):
    require_chromium()
    box = await start_box(aiohttp_client, tmp_path)
    publisher = None
    async with open_browser(tmp_path) as (page, console):
        hls_requests: list[str] = []
        page.on(
            "request",
            lambda request: (
                hls_requests.append(request.url) if "/hls/" in request.url else None
            ),
        )
        try:
            await sign_up(page, str(box.client.make_url("/")))
            await create_app_in_page(page, "Members")
            app_id = page.url.rsplit("/", 1)[1]
            auth = await log_in_over_api(box)
            response = await box.client.put(
                f"/api/apps/{app_id}",
                json={"settings": {"playback_policy": "signed"}},
                headers=auth,
            )
            assert response.status == 200, await response.text()
            await create_stream_in_page(page, "Members only")
            stream_key = await page.get_by_label("Stream key").input_value()

            publisher = await start_publisher(
                box.rtmp_url(stream_key), "--seconds", "20", "--realtime"
            )
            first = await wait_for_video(
                page, "v.currentTime > 0 && v.videoWidth > 0", timeout=25
            )
            later = await wait_for_video(
                page, f"v.currentTime > {first['currentTime']} + 1", timeout=15
            )
            await page.screenshot(path=tmp_path / "signed-live.png", full_page=True)
        finally:
            if publisher is not None:
                await stop_publisher(publisher)

    report = json.dumps({"first": first, "later": later, "hls": hls_requests})
    assert first["videoWidth"] > 0, report
    assert later["currentTime"] > first["currentTime"], report
    assert hls_requests, report
    # The master playlist carries the playback token, and the box's own
    # links in it carry the session it grants.
    assert "?token=" in hls_requests[0], report
    for url in hls_requests[1:]:
        assert "?token=" in url or "?session=" in url, report
    assert not [line for line in console if line.startswith("pageerror")], report

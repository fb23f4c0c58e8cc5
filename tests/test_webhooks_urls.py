"""Webhook URL checks and the deny list, at save time and at connect time."""

from __future__ import annotations

import re

import pytest

from realcast_box.app import dispatch_settings
from realcast_box.config import DEFAULT_WEBHOOK_DENY_LIST
from realcast_box.errors import StartupError
from realcast_box.webhooks.urls import (
    DeniedAddressError,
    DenyList,
    DenyListResolver,
    check_resolved_host,
    check_url,
)
from tests.conftest import make_config

DEFAULT = DenyList.parse(DEFAULT_WEBHOOK_DENY_LIST)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hooks",
        "http://localhost/hooks",
        "https://192.168.1.20/realcast?token=abc",
        "http://10.0.0.5:9000/",
        "http://[::1]:8080/hooks",
        "https://hooks.example.com/realcast",
        "http://169.253.255.255/just-outside-link-local",
    ],
)
def test_urls_allowed(url):
    assert str(check_url(url, DEFAULT)) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hooks", "scheme must be http or https"),
        ("/relative/path", "scheme must be http or https"),
        ("http:///no-host", "a host is required"),
        ("http://user:pass@example.com/", "must not contain credentials"),
        ("http://example.com/#section", "remove the #fragment"),
        ("http://example.com:0/", "port 0"),
        ("http://example.com/a b", "spaces or control characters"),
        ("http://example.com/" + "a" * 2100, "at most 2048 characters"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is denied"),
        ("http://169.254.10.1/", "169.254.10.1 is denied"),
        ("http://[fe80::1]/", "fe80::1 is denied"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is denied"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:a9fe:a9fe is denied"),
        ("http://100.100.100.200/", "100.100.100.200 is denied"),
        ("http://metadata.google.internal/", "metadata.google.internal is denied"),
        ("http://METADATA.google.internal./", "is denied"),
    ],
)
def test_urls_rejected(url, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_url(url, DEFAULT)


def test_urls_custom_deny_list():
    deny_list = DenyList.parse("127.0.0.0/8, ::1, internal.example")

    with pytest.raises(ValueError, match=re.escape("127.0.0.1 is denied")):
        check_url("http://127.0.0.1/", deny_list)
    with pytest.raises(ValueError, match="::1 is denied"):
        check_url("http://[::1]/", deny_list)
    with pytest.raises(ValueError, match=re.escape("internal.example is denied")):
        check_url("http://Internal.Example/", deny_list)
    check_url("http://169.254.169.254/", deny_list)


def test_urls_empty_deny_list_allows_all():
    assert DenyList.parse("") == DenyList()
    check_url("http://169.254.169.254/", DenyList.parse(" , "))


def test_urls_deny_list_invalid_entry():
    with pytest.raises(ValueError, match="'bad entry!'"):
        DenyList.parse("169.254.0.0/16, bad entry!")


def test_urls_invalid_setting_stops_start(tmp_path):
    config = make_config(tmp_path, webhook_deny_list="169.254.0.0/16, not valid")

    with pytest.raises(StartupError, match="invalid webhook_deny_list setting"):
        dispatch_settings(config)


async def test_urls_resolved_name_denied():
    deny_list = DenyList.parse("127.0.0.0/8, ::1")

    with pytest.raises(ValueError, match="localhost resolves to the denied address"):
        await check_resolved_host("localhost", deny_list)
    await check_resolved_host("localhost", DEFAULT)


async def test_urls_unresolvable_name_passes():
    await check_resolved_host("no-such-host.invalid", DEFAULT)


async def test_urls_resolver_drops_denied_addresses():
    resolver = DenyListResolver(DenyList.parse("127.0.0.0/8, ::1"))
    allowing = DenyListResolver(DEFAULT)
    try:
        with pytest.raises(DeniedAddressError, match="localhost"):
            await resolver.resolve("localhost", 80)
        results = await allowing.resolve("localhost", 80)
    finally:
        await resolver.close()
        await allowing.close()

    assert results
    assert all(result["port"] == 80 for result in results)

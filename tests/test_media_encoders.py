"""Tests for the H.264 encoder probe and the choice of encoder.

The probe runs the real PyAV encoders of this machine, which has libx264
and no GPU, so the "hardware present" cases use hand-made statuses.
"""

from __future__ import annotations

import logging
import time

import pytest

from realcast_box.media import encoders
from realcast_box.media.encoders import (
    EncoderStatus,
    choose_encoder,
    format_table,
    probe_encoder,
    probe_encoders,
    probe_encoders_async,
)


@pytest.fixture(scope="module")
def statuses() -> dict[str, EncoderStatus]:
    return {status.name: status for status in probe_encoders()}


def test_probe_lists_every_candidate(statuses):
    assert list(statuses) == list(encoders.CANDIDATES)


def test_probe_libx264_available(statuses):
    assert statuses["libx264"].available is True


def test_probe_libx264_software(statuses):
    assert statuses["libx264"].hardware is False


def test_probe_libx264_detail_names_size(statuses):
    assert "256x144" in statuses["libx264"].detail


@pytest.mark.parametrize("name", encoders.HARDWARE_ENCODERS)
def test_probe_hardware_unavailable_here(statuses, name):
    assert statuses[name].available is False


@pytest.mark.parametrize("name", encoders.HARDWARE_ENCODERS)
def test_probe_hardware_marked_hardware(statuses, name):
    assert statuses[name].hardware is True


@pytest.mark.parametrize("name", encoders.HARDWARE_ENCODERS)
def test_probe_hardware_has_detail(statuses, name):
    assert statuses[name].detail


def test_probe_unknown_encoder_not_in_build():
    status = probe_encoder("h264_no_such_encoder")
    assert status.available is False
    assert status.detail == "not in this FFmpeg build"


def test_probe_open_failure_reported(monkeypatch):
    def fail(name: str) -> int:
        raise RuntimeError("driver crashed")

    monkeypatch.setattr(encoders, "_encode_test_frame", fail)
    status = probe_encoder("libx264")
    assert status.available is False
    expected = "failed to encode a test frame: RuntimeError: driver crashed"
    assert status.detail == expected


def test_probe_no_output_reported(monkeypatch):
    monkeypatch.setattr(encoders, "_encode_test_frame", lambda name: 0)
    status = probe_encoder("libx264")
    assert status.available is False
    assert status.detail == "encoded no data from a test frame"


async def test_probe_async_returns_statuses():
    result = await probe_encoders_async()
    names = [status.name for status in result if status.available]
    assert "libx264" in names


async def test_probe_async_timeout_reports_unavailable(monkeypatch):
    monkeypatch.setattr(encoders, "probe_encoders", lambda: time.sleep(0.5) or [])
    result = await probe_encoders_async(timeout=0.01)
    assert [status.available for status in result] == [False] * len(encoders.CANDIDATES)
    assert result[0].detail == "probe timed out after 0.01 s"


def mock_statuses(*working: str) -> list[EncoderStatus]:
    return [
        EncoderStatus(name, name in working, name != encoders.SOFTWARE_ENCODER, "mock")
        for name in encoders.CANDIDATES
    ]


def test_choose_encoder_prefers_nvenc():
    chosen = choose_encoder(mock_statuses("h264_qsv", "h264_nvenc", "libx264"), True)
    assert chosen == "h264_nvenc"


def test_choose_encoder_qsv_before_vaapi():
    chosen = choose_encoder(mock_statuses("h264_vaapi", "h264_qsv", "libx264"), True)
    assert chosen == "h264_qsv"


def test_choose_encoder_vaapi_last_hardware():
    chosen = choose_encoder(mock_statuses("h264_vaapi", "libx264"), True)
    assert chosen == "h264_vaapi"


def test_choose_encoder_gpu_disabled_uses_libx264():
    chosen = choose_encoder(mock_statuses("h264_nvenc", "libx264"), False)
    assert chosen == "libx264"


def test_choose_encoder_falls_back_to_libx264(caplog):
    with caplog.at_level(logging.WARNING, logger="realcast_box.media.encoders"):
        chosen = choose_encoder(mock_statuses("libx264"), True)
    assert chosen == "libx264"
    assert "falling back to libx264" in caplog.text


def test_choose_encoder_real_probe_falls_back(statuses):
    assert choose_encoder(list(statuses.values()), True) == "libx264"


def test_choose_encoder_disabled_logs_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger="realcast_box.media.encoders"):
        choose_encoder(mock_statuses("libx264"), False)
    assert caplog.text == ""


def test_format_table_one_line_per_encoder(statuses):
    lines = format_table(list(statuses.values())).splitlines()
    assert len(lines) == 1 + len(encoders.CANDIDATES)
    assert lines[-1].split()[:3] == ["libx264", "software", "available"]

"""Tests for ``realcast-box doctor``: encoders, FFmpeg, ports, data directory, clock."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from click.testing import CliRunner, Result

from realcast_box import cli, doctor, tls
from realcast_box.config import Config, load_config
from realcast_box.datalock import DataDirLock
from realcast_box.media.encoders import CANDIDATES, EncoderStatus


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port that a listening socket of this test holds."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def run_doctor(data_dir: Path, *extra: str, **ports: int) -> Result:
    http_port = ports.get("http_port", free_port())
    rtmp_port = ports.get("rtmp_port", free_port())
    arguments = [
        "doctor",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http_port),
        "--rtmp-port",
        str(rtmp_port),
        *extra,
    ]
    # Settings come from the options alone, not from REALCAST_* variables.
    environment = {name: None for name in os.environ if name.startswith("REALCAST_")}
    return CliRunner().invoke(cli.main, arguments, env=environment)


def test_doctor_usable_exits_zero(tmp_path):
    result = run_doctor(tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert "The box can run here." in result.output


def test_doctor_prints_encoder_table(tmp_path):
    result = run_doctor(tmp_path / "data")
    lines = result.output.splitlines()
    assert lines[0].split() == ["ENCODER", "TYPE", "STATUS", "DETAIL"]
    for name in CANDIDATES:
        assert any(line.startswith(name) for line in lines), name


def test_doctor_libx264_available(tmp_path):
    result = run_doctor(tmp_path / "data")
    row = next(line for line in result.output.splitlines() if "libx264" in line)
    assert row.split()[:3] == ["libx264", "software", "available"]


def test_doctor_creates_data_dir(tmp_path):
    run_doctor(tmp_path / "data")
    assert (tmp_path / "data").is_dir()


def test_doctor_new_data_dir_private(tmp_path):
    # serve keeps the mode of a data directory that exists, so one that
    # doctor creates before the first start must already be private.
    run_doctor(tmp_path / "data")
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_doctor_leaves_no_probe_file(tmp_path):
    run_doctor(tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_doctor_http_port_in_use(tmp_path, listening_port):
    result = run_doctor(tmp_path / "data", http_port=listening_port)
    assert result.exit_code == 1
    assert f"http_port: cannot listen on 127.0.0.1:{listening_port}" in result.output


def test_doctor_rtmp_port_in_use(tmp_path, listening_port):
    result = run_doctor(tmp_path / "data", rtmp_port=listening_port)
    assert result.exit_code == 1
    assert f"rtmp_port: cannot listen on 127.0.0.1:{listening_port}" in result.output


def test_doctor_port_in_use_marks_fail(tmp_path, listening_port):
    result = run_doctor(tmp_path / "data", rtmp_port=listening_port)
    assert f"FAIL  RTMP port 127.0.0.1:{listening_port}" in result.output


def test_doctor_same_port_twice(tmp_path):
    port = free_port()
    result = run_doctor(tmp_path / "data", http_port=port, rtmp_port=port)
    assert result.exit_code == 1
    assert f"rtmp_port: {port} is also the http_port" in result.output


def test_doctor_port_zero_passes(tmp_path):
    result = run_doctor(tmp_path / "data", http_port=0, rtmp_port=0)
    assert result.exit_code == 0, result.output


def test_doctor_data_dir_not_writable(tmp_path):
    # A path below a regular file cannot be created, even by root.
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_doctor(blocker / "data")
    assert result.exit_code == 1
    assert f"data directory {blocker / 'data'} is not writable" in result.output


def test_doctor_data_dir_is_file(tmp_path):
    data_file = tmp_path / "data"
    data_file.write_text("a file where the data directory belongs")
    result = run_doctor(data_file)
    assert result.exit_code == 1
    assert f"data directory {data_file} is not a directory" in result.output
    assert "File exists" not in result.output


def test_doctor_not_enough_free_space(tmp_path):
    result = run_doctor(tmp_path / "data", "--min-free-mb", str(10**12))
    assert result.exit_code == 1
    assert f"less than the {10**12} MiB required" in result.output


def test_doctor_no_encoder_fails(tmp_path, monkeypatch):
    broken = [EncoderStatus(name, False, True, "mock") for name in CANDIDATES]
    monkeypatch.setattr(cli, "probe_encoders", lambda: broken)
    result = run_doctor(tmp_path / "data")
    assert result.exit_code == 1
    assert "no H.264 encoder works here" in result.output


def test_doctor_bad_config_fails(tmp_path):
    result = run_doctor(tmp_path / "data", http_port=70000)
    assert result.exit_code == 1
    assert "http_port" in result.output


def test_doctor_subprocess_port_in_use(tmp_path, listening_port):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "realcast_box",
            "doctor",
            "--data-dir",
            str(tmp_path / "data"),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(listening_port),
            "--rtmp-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            name: value
            for name, value in os.environ.items()
            if not name.startswith("REALCAST_")
        },
    )
    lines = completed.stdout.splitlines()
    fail = lines.index(f"FAIL  HTTP port 127.0.0.1:{listening_port}")
    assert completed.returncode == 1
    assert lines[fail + 1].startswith(
        f"      problem: http_port: cannot listen on 127.0.0.1:{listening_port}"
    )
    assert "1 check(s) failed" in completed.stderr


def test_doctor_prints_ffmpeg_version(tmp_path):
    result = run_doctor(tmp_path / "data")
    line = next(line for line in result.output.splitlines() if "PyAV" in line)
    assert line.startswith(f"ok    FFmpeg {av.ffmpeg_version_info}")
    assert f"PyAV {av.__version__}" in line
    assert "libavcodec" in line


def test_doctor_prints_clock(tmp_path):
    result = run_doctor(tmp_path / "data")
    lines = result.output.splitlines()
    assert any(line[6:].startswith("clock ") for line in lines), result.output


def test_doctor_running_box_fails(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with DataDirLock(data_dir):
        result = run_doctor(data_dir)
    assert result.exit_code == 1
    assert f"data directory {data_dir} is in use by a running box" in result.output


def test_doctor_ntp_warning_exits_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "ntp_synchronized_state", lambda: False)
    result = run_doctor(tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert "WARN  clock" in result.output
    assert "warning: the clock is not synchronized with NTP" in result.output


def test_doctor_clock_unset_fails():
    result = doctor.check_clock(now=lambda: 0.0, ntp_synchronized=lambda: None)
    assert result.status == "FAIL"
    assert "the system clock reads 1970-01-01 00:00:00 UTC" in result.problems[0]


def test_doctor_clock_step_warns():
    wall = iter([1_800_000_000.0, 1_800_000_030.0])
    steady = iter([100.0, 100.0])
    result = doctor.check_clock(
        now=lambda: next(wall),
        monotonic=lambda: next(steady),
        ntp_synchronized=lambda: True,
    )
    assert result.problems == []
    assert result.status == "WARN"
    assert "the wall clock moved +30.0 s" in result.warnings[0]
    assert "NTP synchronized" in result.label


def tls_config(tmp_path: Path, **ports: int) -> Config:
    """A config with a fresh self-signed certificate, so TLS is on."""
    cert_file, key_file = tls.write_pair(
        tls.make_self_signed(["localhost"], 1), tmp_path / "tls", force=False
    )
    return load_config(
        None,
        environ={},
        overrides={
            "data_dir": str(tmp_path),
            "host": "127.0.0.1",
            "http_port": free_port(),
            "rtmp_port": free_port(),
            "tls_cert_file": str(cert_file),
            "tls_key_file": str(key_file),
            **ports,
        },
    )


def test_doctor_tls_ports_skipped_without_certificate(tmp_path):
    config = load_config(
        None,
        environ={},
        overrides={"data_dir": str(tmp_path), "rtmps_port": 1, "https_port": 2},
    )
    labels = [result.label for result in doctor.check_ports(config)]
    assert [label.split()[0] for label in labels] == ["HTTP", "RTMP"]
    assert doctor.check_tls(config) is None


def test_doctor_tls_certificate_checked(tmp_path):
    config = tls_config(tmp_path, rtmps_port=free_port(), https_port=free_port())
    assert doctor.check_tls(config).status == "ok"
    Path(config.tls_key_file).write_text("not a key")
    result = doctor.check_tls(config)
    assert result.status == "FAIL"
    assert "tls_key_file" in result.problems[0]


def test_doctor_rtmps_port_in_use(tmp_path, listening_port):
    config = tls_config(tmp_path, rtmps_port=listening_port, https_port=free_port())
    results = doctor.check_ports(config)
    labels = [result.label for result in results]
    assert labels[2:] == [
        f"RTMPS port 127.0.0.1:{listening_port}",
        f"HTTPS port 127.0.0.1:{config.https_port}",
    ]
    assert results[2].status == "FAIL"
    assert (
        results[2]
        .problems[0]
        .startswith(f"rtmps_port: cannot listen on 127.0.0.1:{listening_port}")
    )
    assert results[3].status == "ok"


def test_doctor_https_port_shared(tmp_path):
    config = tls_config(tmp_path, rtmps_port=free_port(), https_port=free_port())
    config = dataclasses.replace(config, https_port=config.http_port)
    results = doctor.check_ports(config)
    assert len(results) == 4
    assert (
        f"https_port: {config.http_port} is also the http_port"
        in (results[3].problems)[0]
    )


def test_doctor_stopped_box_passes(tmp_path):
    # A box that stopped leaves its lock file behind, unlocked.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with DataDirLock(data_dir):
        pass
    assert (data_dir / "realcast.lock").exists()
    result = run_doctor(data_dir)
    assert result.exit_code == 0, result.output

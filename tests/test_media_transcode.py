"""Unit tests of the transcoder threads on real H.264 and AAC input."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from realcast_box.media import transcode
from realcast_box.media.codecs import (
    InvalidCodecConfig,
    annexb_to_length_prefixed,
    avc_config_from_annexb,
    parse_aac_config,
    split_annexb,
)
from realcast_box.media.ladder import Cut, Quality

pytestmark = pytest.mark.timeout(120)


class Sink:
    def __init__(self):
        self.lock = threading.Lock()
        self.videos: dict[str, list[transcode.EncodedVideo]] = {}
        self.audios: list[transcode.EncodedAudio] = []
        self.plans = None
        self.dropped = None
        self.failures: list[tuple[str, str]] = []
        self.ends: list[str] = []

    def planned(self, renditions, dropped, source_fps):
        self.plans, self.dropped, self.source_fps = renditions, dropped, source_fps

    def video(self, packet):
        with self.lock:
            self.videos.setdefault(packet.rendition, []).append(packet)

    def audio(self, packet):
        self.audios.append(packet)

    def encoder_failed(self, rendition, encoder, error):
        self.failures.append((rendition, encoder))

    def rendition_stopped(self, rendition, reason):
        self.failures.append((rendition, "stopped"))

    def segment_end(self, rendition):
        self.ends.append(rendition)


def encode_source(width, height, frames, *, fps=25, gop=25, first_pts=0):
    """Encode gray-ramp frames with libx264; return (config, [(pts, data, key)])."""
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, 90000)
    context.framerate = Fraction(fps)
    context.gop_size = gop
    context.max_b_frames = 0
    context.flags |= av.codec.context.Flags.global_header
    context.options = {"preset": "ultrafast", "scenecut": "0"}
    context.open()
    step = 90000 // fps
    packets = []
    for index in range(frames):
        level = (index * 7) % 255
        picture = np.full((height, width, 3), level, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = first_pts + index * step
        packets += context.encode(frame)
    packets += context.encode(None)
    config = avc_config_from_annexb(bytes(context.extradata))
    return config, [
        (p.pts, annexb_to_length_prefixed(bytes(p)), p.is_keyframe) for p in packets
    ]


def feed(transcoder, config, packets, sequence):
    """Feed packets with a cut on each keyframe; return the next sequence."""
    for pts, data, keyframe in packets:
        cut = Cut(sequence, False) if keyframe else None
        sequence += keyframe
        transcoder.video(transcode.VideoInput(config, pts, pts, data, keyframe, cut))
    return sequence


def make_transcoder(sink, qualities, **options):
    options.setdefault("source_fps", 25)
    return transcode.Transcoder(
        qualities,
        audio_bitrate_kbps=64,
        segment_duration=1.0,
        sink=sink,
        realtime=False,
        **options,
    )


def test_split_annexb_handles_three_and_four_byte_start_codes():
    data = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x01\x65\x04"
    assert split_annexb(data) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04"]


def test_annexb_to_length_prefixed_leaves_out_parameter_sets():
    data = b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x01\x00\x00\x01\x65\x88"
    assert annexb_to_length_prefixed(data) == b"\x00\x00\x00\x02\x65\x88"


def test_avc_config_from_annexb_without_pps_is_rejected():
    with pytest.raises(InvalidCodecConfig, match="0 PPS"):
        avc_config_from_annexb(b"\x00\x00\x00\x01\x67\x64\x00\x1f\xac")


def test_transcoder_forces_keyframes_at_cuts_in_every_rendition():
    config, packets = encode_source(320, 240, 75, gop=25)
    sink = Sink()
    transcoder = make_transcoder(
        sink, [Quality("full", 320, 240, 300, 25), Quality("half", 160, 120, 100, 12.5)]
    )
    feed(transcoder, config, packets, 10)
    transcoder.finish()
    assert transcoder.join(60)
    source_keys = [pts for pts, _, key in packets if key]
    for name in ("full", "half"):
        output = sink.videos[name]
        cuts = [(p.cut.sequence, p.pts) for p in output if p.cut is not None]
        assert cuts == [(10 + i, pts) for i, pts in enumerate(source_keys)]
        assert all(p.keyframe for p in output if p.cut is not None)
    assert len(sink.videos["full"]) == 75
    # 12.5 fps from 25 fps: every other frame.
    assert 36 <= len(sink.videos["half"]) <= 39
    assert (
        sink.videos["half"][0].config.width,
        sink.videos["half"][0].config.height,
    ) == (
        160,
        120,
    )


def test_transcoder_refits_after_resolution_change():
    first_config, first = encode_source(320, 240, 25)
    second_config, second = encode_source(480, 240, 25, first_pts=90000)
    sink = Sink()
    transcoder = make_transcoder(sink, [Quality("small", 160, 160, 100, 25)])
    sequence = feed(transcoder, first_config, first, 0)
    feed(transcoder, second_config, second, sequence)
    transcoder.finish()
    assert transcoder.join(60)
    sizes = sorted({(p.config.width, p.config.height) for p in sink.videos["small"]})
    # 4:3 fits as 160x120, then 2:1 as 160x80: the aspect ratio is kept.
    assert sizes == [(160, 80), (160, 120)]


def test_transcoder_drops_upscaling_quality_and_reports_it():
    config, packets = encode_source(320, 240, 25)
    sink = Sink()
    transcoder = make_transcoder(
        sink, [Quality("big", 640, 480, 800, 25), Quality("small", 160, 120, 100, 25)]
    )
    feed(transcoder, config, packets, 0)
    transcoder.finish()
    assert transcoder.join(60)
    assert [plan.name for plan in sink.plans] == ["small"]
    assert [item.name for item in sink.dropped] == ["big"]
    assert set(sink.videos) == {"small"}


def test_transcoder_measures_frame_rate_without_a_hint():
    config, packets = encode_source(320, 240, 30, fps=30)
    sink = Sink()
    transcoder = make_transcoder(
        sink, [Quality("fast", 160, 120, 100, 60)], source_fps=None
    )
    feed(transcoder, config, packets, 0)
    transcoder.finish()
    assert transcoder.join(60)
    assert sink.source_fps == 30
    assert sink.plans == []  # 60 fps is above the measured 30


def test_transcoder_falls_back_when_hardware_encoder_cannot_open():
    config, packets = encode_source(320, 240, 25)
    sink = Sink()
    transcoder = make_transcoder(
        sink, [Quality("sd", 160, 120, 100, 25)], hardware_encoder="h264_nvenc"
    )
    feed(transcoder, config, packets, 0)
    transcoder.finish()
    assert transcoder.join(60)
    assert transcoder.worker("sd").encoder_name == "libx264"
    assert len(sink.videos["sd"]) == 25
    assert sink.failures == []  # nothing was written yet, so no restart


def test_transcoder_flush_ends_segments_and_goes_on():
    config, packets = encode_source(320, 240, 50)
    sink = Sink()
    transcoder = make_transcoder(sink, [Quality("sd", 160, 120, 100, 25)])
    feed(transcoder, config, packets[:25], 0)
    transcoder.flush()
    feed(transcoder, config, packets[25:], 1)
    transcoder.finish()
    assert transcoder.join(60)
    assert sink.ends == ["sd"]
    assert len(sink.videos["sd"]) == 50


def test_transcoder_encodes_audio_once_at_profile_rate():
    encoder = av.CodecContext.create("aac", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48000, "stereo", "fltp"
    encoder.bit_rate = 128000
    encoder.time_base = Fraction(1, 48000)
    encoder.flags |= av.codec.context.Flags.global_header
    encoder.open()
    packets = []
    for index in range(50):
        samples = np.full((2, 1024), 0.1 * (index % 2), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, index * 1024
        packets += encoder.encode(frame)
    config = parse_aac_config(bytes(encoder.extradata))
    sink = Sink()
    transcoder = make_transcoder(sink, [Quality("sd", 160, 120, 100, 25)])
    for packet in packets:
        if packet.pts >= 0:
            transcoder.audio(transcode.AudioInput(config, packet.pts, bytes(packet)))
    transcoder.finish()
    assert transcoder.join(60)
    assert len(sink.audios) >= 45
    dts = [packet.dts for packet in sink.audios]
    assert dts == sorted(dts)
    assert dts[0] >= 0
    assert sink.audios[0].config.sample_rate == 48000


def test_transcoder_rejects_input_when_realtime_queue_is_full(monkeypatch):
    monkeypatch.setattr(transcode, "INPUT_QUEUE_ITEMS", 2)
    config, packets = encode_source(320, 240, 25)
    sink = Sink()
    transcoder = transcode.Transcoder(
        [Quality("sd", 160, 120, 100, 25)],
        audio_bitrate_kbps=64,
        segment_duration=1.0,
        sink=sink,
        source_fps=25,
    )
    accepted = [
        transcoder.video(transcode.VideoInput(config, pts, pts, data, key, None))
        for pts, data, key in packets
    ]
    transcoder.abort()
    assert transcoder.join(30)
    assert not all(accepted)
    assert transcoder.rejected_inputs == accepted.count(False)


def test_transcoder_finish_keeps_queued_input(monkeypatch):
    monkeypatch.setattr(transcode, "INPUT_QUEUE_ITEMS", 4)
    config, packets = encode_source(320, 240, 75)
    sink = Sink()
    transcoder = make_transcoder(sink, [Quality("sd", 160, 120, 100, 25)])
    feed(transcoder, config, packets, 0)
    transcoder.finish()
    assert transcoder.join(60)
    assert len(sink.videos["sd"]) == 75


def test_transcoder_flush_and_finish_never_wait_for_room(monkeypatch):
    """With the input full and the decoder stuck on a slow rendition, the
    markers still go in at once (a wait here would stall the event loop)."""
    monkeypatch.setattr(transcode, "INPUT_QUEUE_ITEMS", 3)
    release = threading.Event()
    real_open = transcode.open_encoder

    class Stuck:
        def __init__(self, context):
            self._context = context
            self.extradata = context.extradata

        def encode(self, frame):
            release.wait(30)
            return self._context.encode(frame)

    config, packets = encode_source(320, 240, 40)
    sink = Sink()
    transcoder = transcode.Transcoder(
        [Quality("sd", 160, 120, 100, 25)],
        audio_bitrate_kbps=64,
        segment_duration=1.0,
        sink=sink,
        source_fps=25,
        encoder_opener=lambda settings: Stuck(real_open(settings)),
    )
    accepted = [
        transcoder.video(transcode.VideoInput(config, pts, pts, data, key, None))
        for pts, data, key in packets
    ]
    assert not all(accepted)
    transcoder.flush()
    transcoder.finish()
    release.set()
    assert transcoder.join(60)
    assert sink.ends == ["sd"]

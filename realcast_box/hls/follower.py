"""Packager of one transcoded rendition, cutting where the source cut.

The transcoder hands over encoded H.264 with a ``Cut`` on each frame that
starts a source segment, and the shared AAC. This packager closes a segment
at each cut and numbers it as the source did, so segment N of every
rendition starts at the same presentation time. Sequence numbers it has no
media for (its encoder was restarting, or it started late) are listed as
EXT-X-GAP entries with the source's durations.

Audio comes out of the transcoder ahead of the video, which waits in the
encoders. It is held until the video reaches its time, so each segment gets
the audio of its own time span.

Runs on the event loop, like the source segmenter.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from realcast_box.hls import fmp4
from realcast_box.hls.output import (
    Multivariant,
    RenditionFiles,
    VariantSource,
    is_gap,
    widened_part_target,
)
from realcast_box.hls.segmenter import AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID
from realcast_box.hls.timeline import PendingSample, TrackBuffer
from realcast_box.media.codecs import AacConfig, AvcConfig
from realcast_box.media.ladder import Cut
from realcast_box.media.transcode import EncodedAudio, EncodedVideo

logger = logging.getLogger(__name__)

# AAC frames held for video that has not caught up, at most (about 10 s at
# 48 kHz). Older frames are dropped from this rendition.
AUDIO_HOLD_FRAMES = 500
AAC_FRAME_SAMPLES = 1024


class FollowerPackager:
    """HLS output of one rendition whose segment boundaries follow the source.

    ``source_segment(sequence)`` returns the source's duration of a segment
    and whether it has EXT-X-DISCONTINUITY, for gap entries;
    ``wall_time(seconds)`` maps the output timeline to wall-clock time.
    """

    def __init__(
        self,
        directory: Path,
        rendition: str,
        *,
        target_duration: float,
        window: int,
        multivariant: Multivariant,
        bitrate: int,
        frame_rate: float,
        source_segment: Callable[[int], tuple[float, bool]],
        wall_time: Callable[[float], datetime],
        log_name: str,
        part_duration: float | None = None,
    ) -> None:
        if part_duration is not None and frame_rate > 0:
            # The encoder's frame rate is known, so a low one widens the part
            # target from the start, as the source's first frames widen its own.
            part_duration = widened_part_target(
                part_duration, 1 / frame_rate, target_duration
            )
        self._files = RenditionFiles(
            directory,
            rendition,
            target_duration=target_duration,
            window=window,
            first_sequence=0,
            log_name=log_name,
            multivariant=multivariant,
            part_duration=part_duration,
        )
        self._bitrate = bitrate
        self.frame_rate = frame_rate
        self._source_segment = source_segment
        self._wall_time = wall_time
        self._log_name = log_name
        self._video: TrackBuffer | None = None
        self._audio: TrackBuffer | None = None
        self._video_config: AvcConfig | None = None
        self._audio_config: AacConfig | None = None
        self._held_audio: deque[EncodedAudio] = deque(maxlen=AUDIO_HOLD_FRAMES)
        # Sequence number and discontinuity of the segment being filled;
        # None before the first cut and after an encoder failure.
        self._open: Cut | None = None
        self._finished = False

    @property
    def files(self) -> RenditionFiles:
        return self._files

    @property
    def rendition(self) -> str:
        return self._files.rendition

    @property
    def ready(self) -> bool:
        return self._files.ready

    @property
    def video_config(self) -> AvcConfig | None:
        return self._video_config

    def add_audio(self, packet: EncodedAudio) -> None:
        if not self._finished:
            self._held_audio.append(packet)

    def add_video(self, packet: EncodedVideo) -> None:
        if self._finished:
            return
        if packet.cut is not None:
            self._start_segment(packet)
        if self._open is None or self._video is None:
            return  # no segment to put it in until the next cut
        self._release_audio(packet.pts, inclusive=True)
        self._write_part_if_due(next_dts=packet.pts)
        self._video.push(PendingSample(packet.pts, packet.data, packet.keyframe, 0))
        self._write_part_if_due()

    def end_segment(self) -> None:
        """Write the open segment now: the source's media ended here."""
        if self._open is None or self._video is None:
            return
        self._video.flush_pending()
        self._release_audio(None, inclusive=True)
        if self._audio is not None:
            self._audio.flush_pending()
        self._write_open_segment()

    def drop_open_segment(self) -> None:
        """Forget the segment being filled (its encoder failed part way).

        Parts of it that players may already have stay: the segment is
        written short, with those parts only.
        """
        if self._open is None:
            return
        logger.info(
            "%s: segment %d dropped after an encoder failure",
            self._log_name,
            self._open.sequence,
        )
        for buffer in self._buffers():
            buffer.pending = None
            buffer.take_fragment()
        if self._files.open_part_count:
            self._write_open_segment()
        else:
            self._open = Cut(self._open.sequence, self._open.discontinuity)
        self._video_config = None  # the restarted encoder gets a new init

    def finish(self, *, flush: bool = True) -> None:
        """Write the open segment (with ``flush``) and end the media playlist."""
        if self._finished:
            return
        self._finished = True
        if flush and self._open is not None and self._video is not None:
            self._video.flush_pending()
            self._release_audio(None, inclusive=True)
            if self._audio is not None:
                self._audio.flush_pending()
            if self._write_open_segment(ended=True):
                return
        if self._files.init_count:
            self._files.end()

    # Segments.

    def _start_segment(self, packet: EncodedVideo) -> None:
        cut = packet.cut
        assert cut is not None
        sample = PendingSample(packet.pts, packet.data, packet.keyframe, 0)
        if self._open is not None and self._video is not None:
            # The cut frame gives the last frame of the open segment its length.
            self._release_audio(packet.pts, inclusive=False)
            self._write_part_if_due(next_dts=packet.pts)
            pending = self._video.pending
            if pending is not None and self._gap_before(cut, pending, packet):
                # The source ended its segment before a gap in the video, and
                # the frame before the gap gets the duration the source gave
                # its own, as far as this rendition's part and segment allow.
                self._video.flush_pending(self._gap_frame_ticks(cut, packet))
            elif pending is not None:
                self._video.push(sample)
                self._video.pending = None
            if self._audio is not None:
                self._audio.flush_pending()
            self._write_open_segment()
        else:
            self._drop_audio_before(packet.pts)
        self._fill_gaps(cut.sequence)

        discontinuity = cut.discontinuity
        if packet.config != self._video_config or self._audio_changed():
            discontinuity = self._open_init(packet.config) or discontinuity
        self._open = Cut(cut.sequence, discontinuity)

    def _gap_before(
        self, cut: Cut, pending: PendingSample, packet: EncodedVideo
    ) -> bool:
        """Return whether the source ended its segment at ``cut`` before a gap."""
        seconds = (packet.pts - pending.dts) / VIDEO_TIMESCALE
        return cut.discontinuity and is_gap(seconds, self._files.part_duration)

    def _gap_frame_ticks(self, cut: Cut, packet: EncodedVideo) -> int:
        """Return the duration the source gave its frame before the gap, capped to fit.

        Without one in ``cut``, the frame keeps the duration of the one before.
        """
        video = self._video
        assert video is not None and video.pending is not None
        if cut.gap_frame_ticks is None:
            return video.last_duration
        files = self._files
        assert files.part_duration is not None
        fits = video.gap_frame_ticks(
            packet.pts - video.pending.dts, files.part_duration, files.target_duration
        )
        return min(cut.gap_frame_ticks, fits)

    def _audio_changed(self) -> bool:
        upcoming = self._held_audio[0].config if self._held_audio else None
        return upcoming is not None and upcoming != self._audio_config

    def _fill_gaps(self, sequence: int) -> None:
        """List the segments before ``sequence`` that this rendition lacks."""
        files = self._files
        if not files.segment_count:
            if sequence > files.next_sequence or files.next_sequence == 0:
                files.skip_to(sequence)
            return
        while files.next_sequence < sequence:
            duration, discontinuity = self._source_segment(files.next_sequence)
            files.write_gap(duration, discontinuity=discontinuity)
        if files.next_sequence > sequence:
            logger.warning(
                "%s: cut at segment %d, but segment %d is next; renumbering",
                self._log_name,
                sequence,
                files.next_sequence,
            )

    def _open_init(self, video: AvcConfig) -> bool:
        """Start a new init segment; True when it follows an earlier one."""
        audio = self._held_audio[0].config if self._held_audio else self._audio_config
        tracks = [fmp4.Track(VIDEO_TRACK_ID, VIDEO_TIMESCALE, video)]
        if audio is not None:
            tracks.append(fmp4.Track(AUDIO_TRACK_ID, audio.sample_rate, audio))
        name = self._files.write_init(tracks)
        frame_duration = max(1, round(VIDEO_TIMESCALE / self.frame_rate))
        if self._video is None:
            self._video = TrackBuffer(tracks[0], frame_duration)
        else:
            self._video.track = tracks[0]
        if audio is not None:
            if self._audio is None or self._audio.track.timescale != audio.sample_rate:
                self._audio = TrackBuffer(tracks[1], AAC_FRAME_SAMPLES)
            else:
                self._audio.track = tracks[1]
        else:
            self._audio = None
        self._video_config = video
        self._audio_config = audio
        logger.info(
            "%s: init %s: video %s %dx%d%s",
            self._log_name,
            name,
            video.codec_string,
            video.width,
            video.height,
            f", audio {audio.codec_string}" if audio is not None else "",
        )
        return self._files.init_count > 1

    def _write_part_if_due(self, next_dts: int | None = None) -> None:
        """Write the open part of a low-latency rendition once it is full."""
        open_cut = self._open
        if open_cut is None or self._video is None:
            return
        if not self._files.part_due(self._video, next_dts):
            return
        fragments = [f for b in self._buffers() if (f := b.take_part())]
        if not self._files.open_part_count:
            self._number_segment(open_cut.sequence)
        self._files.write_part(
            fragments,
            discontinuity=open_cut.discontinuity,
            program_date_time=self._wall_time(
                fragments[0].base_decode_time / VIDEO_TIMESCALE
            ),
            variant=self._variant_source(),
        )

    def _write_open_segment(self, *, ended: bool = False) -> bool:
        open_cut = self._open
        assert open_cut is not None
        fragments = [f for b in self._buffers() if (f := b.take_fragment())]
        self._open = None
        has_parts = self._files.open_part_count > 0
        if not has_parts and (
            not fragments or fragments[0].track.track_id != VIDEO_TRACK_ID
        ):
            return False
        if not has_parts:
            self._number_segment(open_cut.sequence)
        # With parts written, RenditionFiles keeps the date of the first part.
        start = fragments[0].base_decode_time / VIDEO_TIMESCALE if fragments else 0.0
        self._files.write_segment(
            fragments,
            discontinuity=open_cut.discontinuity,
            program_date_time=self._wall_time(start),
            variant=self._variant_source(),
            ended=ended,
        )
        return True

    def _number_segment(self, sequence: int) -> None:
        """Make ``sequence`` the number of the next segment written."""
        if self._files.next_sequence != sequence:
            if self._files.segment_count:
                self._fill_gaps(sequence)
            else:
                self._files.skip_to(sequence)

    def _variant_source(self) -> VariantSource:
        return VariantSource(
            self._video_config, self._audio_config, self._bitrate, self.frame_rate
        )

    def _release_audio(self, pts: int | None, *, inclusive: bool) -> None:
        """Move held audio up to video time ``pts`` (None: all) into the segment."""
        held = self._held_audio
        while held:
            packet = held[0]
            if pts is not None:
                seconds = packet.dts / packet.config.sample_rate
                limit = pts / VIDEO_TIMESCALE
                if seconds > limit or (seconds == limit and not inclusive):
                    return
            held.popleft()
            audio = self._audio
            if audio is None or packet.config != self._audio_config:
                continue  # before the first init, or of a config not yet in it
            if audio.last_dts is not None and packet.dts <= audio.last_dts:
                continue
            audio.push(PendingSample(packet.dts, packet.data, True, 0))

    def _drop_audio_before(self, pts: int) -> None:
        """Forget held audio from before a segment that starts at ``pts``."""
        held = self._held_audio
        while held and held[0].dts / held[0].config.sample_rate < pts / VIDEO_TIMESCALE:
            held.popleft()

    def _buffers(self) -> list[TrackBuffer]:
        return [b for b in (self._video, self._audio) if b is not None]

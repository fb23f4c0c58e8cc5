"""The recorder of one live session: appends the source's fMP4 output to a file.

The passthrough packager already writes CMAF: an init segment, then media
segments (a moof and its mdat) of at most about two target durations. The
recorder taps the segmenter and, after each media segment is written,
appends that segment's bytes to the recording file, behind the init segment
it started with. The file is therefore a valid fragmented MP4 at every
segment boundary, and a crash loses at most the segment being written.

Everything runs on the event loop, inside the segmenter's call: one read of
a segment file that was just written (so it is in the page cache) and one
append. The file is flushed to the kernel after each segment but not
fsynced, so a killed process loses nothing written, and a power cut loses
what the kernel had not yet written back.

The recorder stops itself and calls ``on_stop`` in three cases: the disk's
free space falls below ``min_free_bytes`` (reason ``disk_full``), a write
fails, or the session's codec config changes. A new init segment cannot
continue the same MP4, so for the last case ``on_stop`` gets
``CODEC_CHANGED`` and the segment that was not recorded, and the caller
starts the next recording with it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from realcast_box.hls.segmenter import Segmenter
from realcast_box.hls.timeline import PendingSample
from realcast_box.media.codecs import AacConfig, AvcConfig
from realcast_box.media.ladder import Cut

logger = logging.getLogger(__name__)

DISK_FULL = "disk_full"
CODEC_CHANGED = "codec_changed"

# Called once when the recorder stopped itself: (recorder, reason, sequence,
# duration), where sequence and duration are those of the media segment that
# was not recorded.
StopCallback = Callable[["LiveRecorder", str, int, float], None]


class LiveRecorder:
    """Writes the segments of one session's source rendition to ``path``."""

    def __init__(
        self,
        recording_id: str,
        path: Path,
        segmenter: Segmenter,
        *,
        min_free_bytes: int,
        on_stop: StopCallback,
    ) -> None:
        self.recording_id = recording_id
        self.path = path
        self._segmenter = segmenter
        self._min_free_bytes = min_free_bytes
        self._on_stop = on_stop
        self._file: BinaryIO | None = None
        self._init_name: str | None = None
        self._attached = False
        self.segments = 0
        self.duration = 0.0

    def attach(self) -> None:
        """Record from the next media segment on."""
        self._segmenter.add_tap(self)
        self._attached = True

    def detach(self) -> None:
        """Stop recording and close the file; safe to call twice."""
        if self._attached:
            self._segmenter.remove_tap(self)
            self._attached = False
        if self._file is not None:
            self._file.close()
            self._file = None

    # SegmenterTap.

    def video_sample(
        self, config: AvcConfig, sample: PendingSample, cut: Cut | None
    ) -> None:
        pass

    def audio_sample(self, config: AacConfig, sample: PendingSample) -> None:
        pass

    def media_ended(self) -> None:
        pass

    def segment_written(
        self, sequence: int, duration: float, discontinuity: bool
    ) -> None:
        if not self._attached:
            return
        files = self._segmenter.files
        if self._init_name is not None and files.current_init != self._init_name:
            self._stop(CODEC_CHANGED, sequence, duration)
            return
        if shutil.disk_usage(self.path.parent).free < self._min_free_bytes:
            self._stop(DISK_FULL, sequence, duration)
            return
        try:
            self._append(files.rendition_directory, files.current_init, sequence)
        except OSError as exc:
            logger.error(
                "recording %s: failed to write %s: %s",
                self.recording_id,
                self.path,
                exc,
            )
            self._stop(f"write_failed: {exc.strerror or exc}", sequence, duration)
            return
        self.segments += 1
        self.duration += duration

    def _append(self, directory: Path, init_name: str, sequence: int) -> None:
        data = (directory / f"seg-{sequence}.m4s").read_bytes()
        if self._file is None:
            init = (directory / init_name).read_bytes()
            self._file = self.path.open("ab")
            self._file.write(init)
            self._init_name = init_name
        self._file.write(data)
        self._file.flush()

    def _stop(self, reason: str, sequence: int, duration: float) -> None:
        self.detach()
        logger.info(
            "recording %s: stopped before segment %d: %s",
            self.recording_id,
            sequence,
            reason,
        )
        self._on_stop(self, reason, sequence, duration)

"""Reading and writing videos with PyAV (FFmpeg bundled in the `av` wheel; no ffmpeg binary needed).

- `probe_video(path)`: size (after rotation), frame rate, frame count, rotation, codec, duration.
- `iter_frames(path)`: upright RGB frames with their timestamps, decoded in a background thread.
- `VideoWriter(path, fps)`: RGB frames to an mp4 (H.264 when available), written atomically.

Rotation. Phones store portrait videos as landscape frames plus a display matrix that says how to turn them.
PyAV 18 (FFmpeg 8) does not expose it on the input stream (there is no `rotate` tag any more and no stream side
data getter); the decoder attaches it to every decoded frame as DISPLAYMATRIX side data, which
`VideoFrame.rotation` reads: the angle in degrees by which the display transformation turns the stored frame
counter-clockwise (ffprobe's "displaymatrix: rotation of -90.00 degrees" for a phone's portrait video). So
`probe_video` decodes the first frame to learn it, and `iter_frames` turns each frame by it (multiples of 90
degrees; mirroring in the matrix is ignored). An old-style `rotate` tag (clockwise degrees) is used as a fallback.

Damaged files. A file FFmpeg cannot open (not a video, an image, text, a truncated mp4 whose index is missing)
raises `VideoError` with one line. A file that opens but breaks off part-way (e.g. a truncated "faststart" mp4,
whose index promises more frames than the data holds): if no frame decodes, `VideoError`; otherwise the frames
that decode are yielded and one `UserWarning` says where decoding stopped (pass `strict=True` to get a
`VideoError` instead). A user with a cut-off recording usually wants the part that is there.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import DiffMeshError

FIX_HINT = "check that it is a complete video file (mp4, mov, mkv, avi, webm) that plays in a video player"


class VideoError(DiffMeshError):
    """A video file is missing, unreadable, empty or damaged, or an output video cannot be written."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` finds.

    width, height: of the upright frames `iter_frames` yields (after rotation). fps: the stream's average
    frame rate (`rate` is the same as an exact fraction, e.g. 30000/1001). num_frames: exact when the container
    records it (`num_frames_exact`), else duration x fps rounded. rotation: degrees counter-clockwise that the
    display matrix turns the stored frames by (0, 90, 180 or -90; a phone's portrait video reads -90).
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    rotation: int
    codec: str
    duration_s: float
    num_frames_exact: bool = False
    rate: Fraction | None = None


@dataclass
class Frame:
    """One decoded frame: `index` counts from 0 in presentation order; `time_s` is the frame's presentation
    time (pts x time base) in seconds since the stream's start, so variable frame rates are kept; `rgb` is
    (H, W, 3) uint8, upright."""

    index: int
    time_s: float
    rgb: np.ndarray


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _describe(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return _one_line(f"{type(exc).__name__}: {msg}")


def _open(path: str | os.PathLike):
    """Open a video for reading, with one-line `VideoError`s for the usual mistakes."""
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video not found: {p}")
    if p.is_dir():
        raise VideoError(f"{p} is a directory; pass a video file")
    try:
        container = av.open(str(p), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise VideoError(f"cannot read {p} as a video ({_describe(e)}): {FIX_HINT}; if it does, "
                         f"re-encode it to H.264 mp4") from None
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):  # png_pipe, jpeg_pipe, webp_pipe, ...: one still picture
        container.close()
        raise VideoError(f"cannot read {p} as a video (it is a still image, format {fmt}): pass a video file")
    return container


def _video_stream(container, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(f"{path} has no video stream (streams: {', '.join(kinds)}); pass a video file")
    return container.streams.video[0]


def _rotation(frame: av.VideoFrame, stream) -> int:
    """Counter-clockwise degrees (a multiple of 90 in [-90, 180]) to turn the stored frame upright."""
    try:
        deg = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        deg = 0.0
    if deg != deg:  # NaN: a degenerate matrix
        deg = 0.0
    if deg == 0.0:
        tag = stream.metadata.get("rotate")  # older FFmpeg: clockwise degrees
        try:
            deg = -float(tag) if tag is not None else 0.0
        except ValueError:
            deg = 0.0
    k = int(round(deg / 90.0)) % 4
    return {0: 0, 1: 90, 2: 180, 3: -90}[k]


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    if rotation == 0:
        return rgb
    # np.rot90 with k=1 turns an image (row 0 at the top) counter-clockwise by 90 degrees.
    return np.ascontiguousarray(np.rot90(rgb, k=(rotation // 90) % 4))


def _no_frames(path) -> VideoError:
    return VideoError(f"{path} contains no decodable video frames: {FIX_HINT}")


def _truncated_message(path, n: int, reason: str) -> str:
    return f"{path} is damaged or truncated: decoding stopped after {n} frames ({reason})"


def _broken(path, n: int, reason: str, strict: bool) -> VideoError | None:
    """The error for a video that breaks off after `n` frames, or None to keep those frames (with a warning)."""
    if n == 0:
        return VideoError(f"cannot read {path} as a video ({reason}): {FIX_HINT}; if it does, "
                          f"re-encode it to H.264 mp4")
    if strict:
        return VideoError(_truncated_message(path, n, reason) + "; re-encode or re-download it")
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read a video's properties (decodes its first frame to learn the rotation). Raises `VideoError`."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        rate = Fraction(rate) if rate else None
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        exact = bool(stream.frames)
        num_frames = int(stream.frames) if exact else int(round(duration * fps))
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except (av.FFmpegError, OSError) as e:
            raise _broken(path, 0, _describe(e), True) from None
        if first is None:
            raise _no_frames(path)
        rotation = _rotation(first, stream)
        width, height = first.width or width, first.height or height
        if rotation in (90, -90):
            width, height = height, width
        return VideoInfo(str(path), int(width), int(height), fps, num_frames, rotation, codec, duration,
                         exact, rate)
    finally:
        container.close()


_END, _FRAME, _BROKEN, _ERROR = range(4)


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _decode_worker(path, q: queue.Queue, stop: threading.Event, max_frames: int | None, first: int = 0) -> None:
    n = 0
    try:
        container = _open(path)
        with container:
            stream = _video_stream(container, path)
            stream.thread_type = "AUTO"  # FFmpeg's own frame/slice threads
            tb = stream.time_base
            start = stream.start_time
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
            broken = None

            def emit(frames) -> bool:
                """Queue decoded frames; False when done (max_frames reached or the consumer left)."""
                nonlocal n, start
                for frame in frames:
                    if max_frames is not None and n >= max_frames:
                        return False
                    if frame.pts is not None and (frame.time_base or tb) is not None:
                        if start is None:
                            start = frame.pts
                        time_s = float((frame.pts - start) * (frame.time_base or tb))
                    else:  # no timestamps (rare raw streams): assume a constant rate
                        time_s = n / fps if fps else float(n)
                    if n < first:                 # decoded to keep the count exact, but not converted
                        n += 1
                        continue
                    rgb = _upright(frame.to_ndarray(format="rgb24"), _rotation(frame, stream))
                    if not _put(q, (_FRAME, Frame(n, time_s, rgb)), stop):
                        return False
                    n += 1
                return True

            try:
                for packet in container.demux(stream):
                    if packet.is_corrupt:  # the demuxer's short read: the file ends part-way
                        broken = "the file ends part-way"
                        emit(stream.decode(None))  # what the decoder still holds
                        break
                    if not emit(stream.decode(packet)):
                        break
            except (av.FFmpegError, OSError) as e:
                broken = _describe(e)
            if broken is not None:
                _put(q, (_BROKEN, (n, broken)), stop)
                return
        _put(q, (_END, n), stop)  # a no-op when the consumer has gone
    except BaseException as e:  # handed to the consumer, raised there
        _put(q, (_ERROR, e), stop)


def iter_frames(path: str | os.PathLike, max_frames: int | None = None, prefetch: int = 4,
                strict: bool = False, first: int = 0) -> Iterator[Frame]:
    """Yield the video's frames, upright, in presentation order.

    Decoding (FFmpeg threads plus the RGB conversion and rotation) runs in a background thread that stays up
    to `prefetch` frames ahead, so it overlaps with the caller's work. Raises `VideoError` for a missing,
    unreadable or empty video; a video that breaks off part-way yields what decodes and warns once (or raises
    `VideoError` with `strict=True`). Stopping early (break) stops the thread. `first` skips the frames before
    it (they are decoded, so indices stay exact, but not converted or yielded; `max_frames` counts from frame
    0); a video with no frame at or after `first` yields nothing.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    worker = threading.Thread(target=_decode_worker, args=(path, q, stop, max_frames, first),
                              name="diffmesh-decode", daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, item = q.get(timeout=1.0)
            except queue.Empty:
                if worker.is_alive() or not q.empty():
                    continue
                raise RuntimeError(f"the decoding thread for {path} ended without a result") from None
            if kind == _FRAME:
                yield item
            elif kind == _END:
                if item == 0 and max_frames != 0 and first == 0:
                    raise _no_frames(path)
                return
            elif kind == _BROKEN:
                n, reason = item
                err = _broken(path, n, reason, strict)
                if err is not None:
                    raise err
                warnings.warn(_truncated_message(path, n, reason) + "; using those frames", UserWarning,
                              stacklevel=2)
                return
            else:
                raise item
    finally:
        stop.set()
        while True:  # unblock a worker waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                break
        worker.join(timeout=5)


def _pick_codec(codec: str | None) -> str:
    names = [codec] if codec else ["libx264", "mpeg4"]
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError, KeyError):
            continue
    raise VideoError(f"no usable video encoder among {names} in PyAV's FFmpeg; reinstall PyAV (pip install av)")


def _frame_rate(fps) -> Fraction:
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001 * 1000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


class VideoWriter:
    """Write RGB frames to a video (mp4: H.264 via libx264, yuv420p, CRF `crf`; `mpeg4` if libx264 is missing).

    The frame rate is kept exactly (29.97 becomes 30000/1001). Odd widths/heights are padded by one row/column
    (repeating the edge), since yuv420p needs even sizes. Frames go to a hidden temporary file in the target
    folder, which replaces `path` only when `close()` succeeds; an exception inside the `with` block (or
    `abort()`) removes it, so no half-written file ever appears under `path`.

        with VideoWriter("out.mp4", info.fps) as w:
            for rgb in frames:
                w.write(rgb)
    """

    def __init__(self, path: str | os.PathLike, fps, width: int | None = None, height: int | None = None,
                 codec: str | None = None, crf: int = 20, preset: str = "veryfast"):
        self.path = Path(path)
        self.rate = _frame_rate(fps)
        self.size = (width, height) if width is not None and height is not None else None
        self.codec = _pick_codec(codec)
        self.crf = crf
        self.preset = preset
        self.frames_written = 0
        if not self.path.parent.is_dir():
            raise VideoError(f"cannot write {self.path}: folder {self.path.parent} does not exist")
        self._tmp = self.path.parent / f".{self.path.stem}.{secrets.token_hex(4)}.partial{self.path.suffix}"
        self._container = None
        self._stream = None
        self._closed = False

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, width: int, height: int) -> None:
        try:
            fmt_options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
            self._container = av.open(str(self._tmp), mode="w", options=fmt_options)
        except (av.FFmpegError, OSError, ValueError) as e:
            self._remove_tmp()
            raise VideoError(f"cannot write {self.path} ({_describe(e)}): use a writable folder and a .mp4 "
                             f"name") from None
        try:
            stream = self._container.add_stream(self.codec, rate=self.rate)
        except (av.FFmpegError, ValueError) as e:
            self.abort()
            raise VideoError(f"cannot write {self.path} with the {self.codec} encoder ({_describe(e)}): "
                             f"use a .mp4 name") from None
        stream.width, stream.height = width + width % 2, height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = 1 / self.rate
        if self.codec in ("libx264", "h264"):
            stream.options = {"crf": str(self.crf), "preset": self.preset}
        else:  # mpeg4: no CRF; a generous bit rate (~0.2 bit per pixel)
            stream.bit_rate = int(0.2 * stream.width * stream.height * float(self.rate))
        self._stream = stream

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame must have the same size."""
        if self._closed:
            raise ValueError("VideoWriter is closed")
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {rgb.shape}")
        if rgb.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame, got {rgb.dtype}")
        h, w = rgb.shape[:2]
        if self.size is None:
            self.size = (w, h)
        if (w, h) != tuple(self.size):
            raise ValueError(f"frame {self.frames_written} is {w}x{h}, expected {self.size[0]}x{self.size[1]}")
        if self._container is None:
            self._start(w, h)
        if w % 2 or h % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames_written
        frame.time_base = 1 / self.rate
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush, close and move the finished file to `path`. Raises `VideoError` if no frame was written."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            raise VideoError(f"no frames were written to {self.path}")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard everything written; `path` is left as it was."""
        self._closed = True
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self._tmp.unlink()
        except FileNotFoundError:
            pass

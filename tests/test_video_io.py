"""Video reading and writing (diffmesh.video.decode) on the real sample videos and on files made here."""

import struct
import threading
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from diffmesh.errors import DiffMeshError
from diffmesh.video.decode import VideoError, VideoWriter, iter_frames, probe_video
from diffmesh.paths import VIDEOS_DIR as VIDEOS

SQUATS = VIDEOS / "pexels_4838220_woman_squats_5fps.mp4"       # 720x1280 portrait, 5 fps, 65 frames
WALK = VIDEOS / "sports2d_demo_walk_jumpingjacks_flip.mp4"     # 1280x720, 30 fps, 230 frames, faststart


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"sample video {path.name} not found in {VIDEOS} (it ships in diffmesh/assets/videos/)")
    return path


def assert_one_line(err: BaseException, path) -> None:
    msg = str(err)
    assert isinstance(err, DiffMeshError)
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert str(path) in msg, msg
    assert len(msg) < 400, msg


def pattern(h: int, w: int, i: int) -> np.ndarray:
    """A smooth gradient with a bright square that moves with i (easy for a lossy codec)."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 60)], -1).astype(np.uint8)
    img[4:16, 4 + 2 * i:16 + 2 * i] = (250, 250, 250)
    return img


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "diffmesh-decode"]


# ---------------------------------------------------------------- the real samples

def test_probe_and_iterate_portrait_sample():
    path = need(SQUATS)
    info = probe_video(path)
    assert (info.width, info.height) == (720, 1280)
    assert info.fps == pytest.approx(5.0) and info.rate == Fraction(5)
    assert info.num_frames == 65 and info.num_frames_exact
    assert info.rotation == 0 and info.codec == "h264"
    assert info.duration_s == pytest.approx(13.0, abs=0.01)

    frames = list(iter_frames(path))
    assert len(frames) == 65
    assert [f.index for f in frames] == list(range(65))
    assert all(f.rgb.shape == (1280, 720, 3) and f.rgb.dtype == np.uint8 for f in frames)
    times = np.array([f.time_s for f in frames])
    np.testing.assert_allclose(times, np.arange(65) / 5.0, atol=1e-3)
    # the pixels are FFmpeg's own decode, unchanged (not black, not shuffled)
    with av.open(str(path)) as c:
        direct = next(c.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(frames[0].rgb, direct)
    assert frames[0].rgb.std() > 20
    assert not decoder_threads()


def test_iterate_first_frames_of_landscape_sample():
    path = need(WALK)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.rotation) == (1280, 720, 230, 0)
    assert info.fps == pytest.approx(30.0)
    frames = list(iter_frames(path, max_frames=12))
    assert len(frames) == 12
    assert all(f.rgb.shape == (720, 1280, 3) for f in frames)
    times = np.array([f.time_s for f in frames])
    np.testing.assert_allclose(np.diff(times), 1 / 30, atol=1e-4)
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert not np.array_equal(frames[0].rgb, frames[11].rgb)  # the video moves


def test_breaking_out_early_stops_the_decoder_thread():
    path = need(WALK)
    for frame in iter_frames(path, prefetch=2):
        if frame.index == 3:
            break
    # the generator is closed when the loop's reference goes away; its cleanup joins the thread
    import gc

    gc.collect()
    assert not decoder_threads()


# ---------------------------------------------------------------- writing

def test_writer_round_trip_keeps_rate_size_and_pixels(tmp_path):
    out = tmp_path / "out.mp4"
    frames = [pattern(48, 64, i) for i in range(12)]
    with VideoWriter(out, 30000 / 1001) as w:
        for f in frames:
            w.write(f)
    assert w.codec in ("libx264", "mpeg4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temporary left behind

    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (64, 48, 12)
    assert info.rate == Fraction(30000, 1001) and info.fps == pytest.approx(29.97, abs=1e-3)
    back = list(iter_frames(out))
    assert len(back) == 12
    np.testing.assert_allclose([f.time_s for f in back], np.arange(12) * 1001 / 30000, atol=1e-4)
    for a, b in zip(frames, back):
        assert np.abs(a.astype(int) - b.rgb.astype(int)).mean() < 4
    # the moving square is where it was written, in every frame
    assert back[5].rgb[10, 4 + 10 + 6].min() > 200 and back[0].rgb[10, 4 + 10 + 6].max() < 200


def test_writer_pads_odd_sizes_and_checks_frames(tmp_path):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 12.5) as w:
        for i in range(4):
            w.write(pattern(31, 45, i))
        with pytest.raises(ValueError, match="45x31"):
            w.write(pattern(32, 46, 0))
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (46, 32, 4) and info.fps == pytest.approx(12.5)
    first = next(iter(iter_frames(out))).rgb
    np.testing.assert_allclose(first[:, 45].astype(int), first[:, 44].astype(int), atol=12)  # edge repeated


def test_writer_is_atomic(tmp_path):
    out = tmp_path / "overlay.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 25) as w:
            for i in range(5):
                w.write(pattern(48, 64, i))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary file

    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25) as w:
            w.write(pattern(48, 64, 0))
            raise RuntimeError("interrupted")
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.mp4"]


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    """Frames at irregular times (as phones record): time_s follows each frame's pts, not index / fps."""
    path = tmp_path / "vfr.mp4"
    times_ms = [0, 40, 100, 120, 200, 330, 340]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(pattern(48, 64, i), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames = list(iter_frames(path))
    assert len(frames) == len(times_ms)
    np.testing.assert_allclose([f.time_s for f in frames], np.array(times_ms) / 1000, atol=1e-3)


# ---------------------------------------------------------------- rotation

def _set_tkhd_matrix(path: Path, a: int, b: int, c: int, d: int) -> None:
    """Write the track header's display matrix (16.16 fixed point a, b, c, d as in the mp4 'tkhd' box),
    the way phones mark portrait recordings, without going through PyAV's rotation helpers."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert i > 0 and data.find(b"tkhd", i + 4) == -1
    version = data[i + 4]
    off = i + 8 + (20 if version == 0 else 32) + 8 + 8  # times/ids/duration, reserved, layer..volume
    assert struct.unpack(">9i", data[off:off + 36]) == (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)  # identity
    struct.pack_into(">9i", data, off, a * 65536, b * 65536, 0, c * 65536, d * 65536, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("matrix,stored_k,rotation", [
    ((0, 1, -1, 0), 1, -90),   # a phone held upright: shown turned 90 degrees clockwise
    ((0, -1, 1, 0), -1, 90),   # shown turned 90 degrees counter-clockwise
    ((-1, 0, 0, -1), 2, 180),  # upside down
])
def test_rotated_video_comes_out_upright(tmp_path, matrix, stored_k, rotation):
    h, w = 64, 48  # the upright (portrait) picture: red top-left, blue bottom-left, green top-right
    upright = np.zeros((h, w, 3), np.uint8)
    upright[:16, :16] = (255, 0, 0)
    upright[-16:, :16] = (0, 0, 255)
    upright[:16, -16:] = (0, 255, 0)
    stored = np.ascontiguousarray(np.rot90(upright, stored_k))  # what the camera records
    path = tmp_path / "rotated.mp4"
    with VideoWriter(path, 10) as wr:
        for _ in range(3):
            wr.write(stored)
    _set_tkhd_matrix(path, *matrix)

    info = probe_video(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == (w, h)
    frames = list(iter_frames(path))
    assert len(frames) == 3
    for f in frames:
        assert f.rgb.shape == (h, w, 3)
        assert np.abs(f.rgb.astype(int) - upright.astype(int)).mean() < 4
        assert f.rgb[8, 8, 0] > 200 and f.rgb[-8, 8, 2] > 200 and f.rgb[8, -8, 1] > 200


def test_pyav_display_rotation_round_trip(tmp_path):
    """The same through PyAV's own writer helper (a counter-clockwise angle, as `VideoFrame.rotation` reads)."""
    path = tmp_path / "rot.mp4"
    upright = pattern(40, 24, 0)
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # 24 x 40
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 40, 24, "yuv420p"
        s.set_display_rotation(-90)
        for i in range(2):
            for p in s.encode(av.VideoFrame.from_ndarray(stored, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (-90, 24, 40)
    rgb = next(iter(iter_frames(path))).rgb
    assert rgb.shape == (40, 24, 3)
    assert np.abs(rgb.astype(int) - upright.astype(int)).mean() < 6


# ---------------------------------------------------------------- bad input

def test_missing_file(tmp_path):
    path = tmp_path / "nope.mp4"
    for call in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError, match="video not found") as e:
            call(path)
        assert_one_line(e.value, path)


def test_png_image_is_not_a_video(tmp_path):
    import matplotlib.image

    path = tmp_path / "photo.png"
    matplotlib.image.imsave(path, pattern(20, 30, 0))
    for call in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError, match="still image") as e:
            call(path)
        assert_one_line(e.value, path)


def test_text_file_is_not_a_video(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are my notes, not a video\n" * 20)
    for call in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError, match="cannot read .* as a video") as e:
            call(path)
        assert_one_line(e.value, path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with pytest.raises(VideoError, match="no video stream") as e:
        probe_video(path)
    assert_one_line(e.value, path)


def first_part(src: Path, dst: Path, fraction: float) -> Path:
    """A truncated copy: the first `fraction` of src's bytes."""
    data = src.read_bytes()
    dst.write_bytes(data[:int(fraction * len(data))])
    return dst


def test_truncated_mp4_without_index(tmp_path):
    """The squats sample keeps its index (moov) at the end: cut at 30% it cannot be opened at all."""
    path = first_part(need(SQUATS), tmp_path / "cut.mp4", 0.3)
    for call in (probe_video, lambda p: list(iter_frames(p))):
        with pytest.raises(VideoError, match="cannot read .* as a video") as e:
            call(path)
        assert_one_line(e.value, path)


def test_truncated_faststart_mp4_yields_what_decodes_and_warns(tmp_path):
    """The walk sample has its index first: cut at 30% it opens, promises 230 frames and breaks off."""
    path = first_part(need(WALK), tmp_path / "cut.mp4", 0.3)
    assert probe_video(path).num_frames == 230  # what the index claims

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = list(iter_frames(path))
    assert 10 < len(frames) < 230
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "truncated" in messages[0] and f"after {len(frames)} frames" in messages[0]
    full = list(iter_frames(WALK, max_frames=len(frames)))
    np.testing.assert_array_equal(frames[-1].rgb, full[-1].rgb)  # the frames it gives are the real ones

    with pytest.raises(VideoError, match="truncated") as e:
        list(iter_frames(path, strict=True))
    assert_one_line(e.value, path)

    # cut inside the very first frame: nothing decodes -> an error, not an empty video
    data = WALK.read_bytes()
    path.write_bytes(data[:data.find(b"mdat") + 2000])
    with pytest.raises(VideoError, match="cannot read") as e:
        list(iter_frames(path))
    assert_one_line(e.value, path)
    assert not decoder_threads()

"""Several people per frame: MediaPipe's Tasks `PoseLandmarker` (`num_poses` > 1), offline.

mediapipe 0.10.21 ships the two networks the landmarker needs (`modules/pose_detection/pose_detection.tflite`,
`modules/pose_landmark/pose_landmark_full.tflite`, the same full model `diffmesh run` uses) but no `.task` bundle,
and a download is not possible offline. `pose_bundle` builds the bundle from the installed wheel once, into the
data cache: each network gets the input-normalisation metadata the Tasks graph reads (written with mediapipe's own
`metadata_writers`: the detector's input is (x - 127.5) / 127.5, the landmarker's x / 255, as the legacy graphs
normalise them), and both go into one aligned zip with mediapipe's `create_model_asset_bundle` under the names the
Tasks graph looks for. The wheel's files are hash-checked first, so another mediapipe build is refused with one
line instead of giving different poses.
"""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..keypoints import NUM_MP_LANDMARKS
from ..paths import cache_root
from ..quiet import native_stderr_silenced

BUNDLE_VERSION = 1
# sha256 of the networks in mediapipe 0.10.21's wheel.
WHEEL_MODELS = {
    "pose_detector.tflite": ("modules/pose_detection/pose_detection.tflite",
                             "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", 127.5, 127.5, 2),
    "pose_landmarks_detector.tflite": ("modules/pose_landmark/pose_landmark_full.tflite",
                                       "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 0.0, 255.0,
                                       5),
}


def _with_metadata(model: bytes, mean: float, std: float, outputs: int) -> bytes:
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model)).add_image_input([mean], [std])
    for _ in range(outputs):
        writer.add_feature_output()
    return bytes(writer.populate()[0])


def pose_bundle(cache: str | Path | None = None) -> Path:
    """The PoseLandmarker bundle built from the installed mediapipe wheel (once; then read from the cache)."""
    import mediapipe

    folder = Path(cache) if cache else cache_root() / "mediapipe"
    path = folder / f"pose_landmarker_full_v{BUNDLE_VERSION}_{mediapipe.__version__}.task"
    if path.is_file():
        return path
    root = Path(mediapipe.__file__).parent
    models = {}
    for name, (relative, sha256, mean, std, outputs) in WHEEL_MODELS.items():
        data = (root / relative).read_bytes() if (root / relative).is_file() else b""
        if hashlib.sha256(data).hexdigest() != sha256:
            raise DataError(f"{root / relative} is not the network mediapipe 0.10.21 ships; reinstall it with "
                            f"`pip install --force-reinstall mediapipe==0.10.21`")
        models[name] = _with_metadata(data, mean, std, outputs)
    from mediapipe.tasks.python.metadata.metadata_writers.model_asset_bundle_utils import create_model_asset_bundle

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        create_model_asset_bundle(models, str(tmp))
        os.replace(tmp, path)                          # the bundle appears whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class People:
    """The people found in one frame, P of them: landmarks (P, 33, 2) pixels, visibility (P, 33), world (P, 33, 3)
    MediaPipe's metric landmarks (hip-centred, y down)."""

    landmarks: np.ndarray
    visibility: np.ndarray
    world: np.ndarray

    def __len__(self) -> int:
        return len(self.landmarks)


class MultiPoseEstimator:
    """PoseLandmarker in VIDEO mode: `process(rgb, time_s)` on consecutive frames returns the frame's `People`.

    With `tiles`, the landmarker also runs on overlapping squares of the frame (`tile_boxes`), each its own VIDEO
    stream: MediaPipe's detector sees the whole frame at 224 px, so on a 1920 px frame people beyond the nearest
    one are often too small for it; in a square crop they are twice as large. A person found in several crops is
    kept once (`merge_people`)."""

    def __init__(self, num_poses: int = 4, min_detection_confidence: float = 0.5, cache: str | Path | None = None,
                 tiles: bool = False):
        os.environ.setdefault("GLOG_minloglevel", "2")
        self._options = (pose_bundle(cache), num_poses, min_detection_confidence)
        self._tiles = tiles
        self._landmarkers: dict[tuple, object] = {}
        self._last_ms = -1

    def _landmarker(self, box: tuple):
        if box not in self._landmarkers:
            bundle, num_poses, min_detection_confidence = self._options
            with native_stderr_silenced():
                from mediapipe.tasks.python import BaseOptions
                from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

                options = PoseLandmarkerOptions(
                    base_options=BaseOptions(model_asset_path=str(bundle)), running_mode=RunningMode.VIDEO,
                    num_poses=num_poses, min_pose_detection_confidence=min_detection_confidence,
                    min_pose_presence_confidence=0.5, min_tracking_confidence=0.5)
                self._landmarkers[box] = PoseLandmarker.create_from_options(options)
        return self._landmarkers[box]

    def _detect(self, rgb: np.ndarray, box: tuple, ms: int) -> People:
        import mediapipe as mp

        x0, y0, w, h = box
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb[y0:y0 + h, x0:x0 + w]))
        result = self._landmarker(box).detect_for_video(image, ms)
        P = len(result.pose_landmarks)
        lm = np.array([[(p.x * w + x0, p.y * h + y0) for p in pose] for pose in result.pose_landmarks], np.float32)
        vis = np.array([[p.visibility for p in pose] for pose in result.pose_landmarks], np.float32)
        world = np.array([[(p.x, p.y, p.z) for p in pose] for pose in result.pose_world_landmarks], np.float32)
        return People(lm.reshape(P, NUM_MP_LANDMARKS, 2), vis.reshape(P, NUM_MP_LANDMARKS),
                      world.reshape(P, NUM_MP_LANDMARKS, 3))

    def process(self, rgb: np.ndarray, time_s: float) -> People:
        h, w = rgb.shape[:2]
        ms = max(int(round(time_s * 1000)), self._last_ms + 1)      # VIDEO mode needs increasing timestamps
        self._last_ms = ms
        boxes = [(0, 0, w, h)] + (tile_boxes(w, h) if self._tiles else [])
        found = [(self._detect(rgb, box, ms), box) for box in boxes]
        return merge_people(found, (w, h)) if self._tiles else found[0][0]

    def close(self) -> None:
        for landmarker in self._landmarkers.values():
            landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def tile_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Squares (x0, y0, w, h) of the frame's short side along its long side, each overlapping the next by half
    (so a person narrower than half the short side lies whole in one of them); none for a square frame."""
    short, long = min(width, height), max(width, height)
    if long < 1.25 * short:
        return []
    n = int(np.ceil(2 * long / short - 1))
    offsets = np.linspace(0, long - short, n).round().astype(int)
    return [(int(o), 0, short, short) if width > height else (0, int(o), short, short) for o in offsets]


CUT_MARGIN = 0.02        # a crop's detection this close to an edge the crop shares with the rest of the frame: cut


def _inner_margin(landmarks: np.ndarray, visibility: np.ndarray, box: tuple, frame: tuple[int, int]) -> float:
    """How far inside its crop a detection lies, as a fraction of the crop: the smallest distance of its
    confident landmarks to a crop edge that is not the frame's own border (there a person is cut by the frame,
    not by the crop). Negative where MediaPipe placed landmarks beyond the crop; inf for the whole frame."""
    x0, y0, w, h = box
    width, height = frame
    sure = visibility >= 0.5
    pts = landmarks[sure] if sure.any() else landmarks
    gaps = [((pts[:, 0] - x0).min() / w, x0 > 0), ((x0 + w - pts[:, 0]).min() / w, x0 + w < width),
            ((pts[:, 1] - y0).min() / h, y0 > 0), ((y0 + h - pts[:, 1]).min() / h, y0 + h < height)]
    return float(min([g for g, inner in gaps if inner], default=np.inf))


def _box(landmarks: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    sure = visibility >= 0.5
    pts = landmarks[sure] if sure.sum() >= 3 else landmarks
    return np.concatenate([pts.min(0), pts.max(0)])


def same_person(a: np.ndarray, b: np.ndarray, vis_a: np.ndarray, vis_b: np.ndarray) -> bool:
    """Two detections (33, 2) of one frame are one person: at least a fifth of the landmarks both see lie within
    a tenth of the person's height of each other. Not all of them, nor their boxes: a crop that sees a person
    partly, or another crop's landmarker, places some limbs elsewhere but the face and torso where they are,
    while two people, even overlapping in the image, share almost no landmark positions (0-14 % on the Pose2Sim
    demo, against 46-100 % for two detections of one person)."""
    sure = (vis_a >= 0.5) & (vis_b >= 0.5)
    sure = sure if sure.sum() >= 3 else np.ones_like(sure)
    height = max(np.ptp(a[sure, 1]), np.ptp(b[sure, 1]), 1.0)
    close = np.linalg.norm(a[sure] - b[sure], axis=-1) < 0.1 * height
    return bool(close.mean() >= 0.2)


def merge_people(found: list[tuple[People, tuple]], frame: tuple[int, int]) -> People:
    """The people of one frame (width, height) from the detections of several crops: those a crop cut off
    dropped, then each person once, from the detection that spans the most of them (the tallest box of confident
    landmarks: a crop that sees a person partly returns a shorter pose, not always with landmarks at its edge)."""
    candidates = [(float(np.ptp(_box(p.landmarks[d], p.visibility[d])[1::2])), p, d)
                  for p, box in found for d in range(len(p))
                  if _inner_margin(p.landmarks[d], p.visibility[d], box, frame) >= CUT_MARGIN]
    candidates.sort(key=lambda c: -c[0])
    kept: list[tuple[People, int]] = []
    for _, p, d in candidates:
        if not any(same_person(p.landmarks[d], q.landmarks[e], p.visibility[d], q.visibility[e]) for q, e in kept):
            kept.append((p, d))
    if not kept:
        return found[0][0]
    return People(np.stack([p.landmarks[d] for p, d in kept]), np.stack([p.visibility[d] for p, d in kept]),
                  np.stack([p.world[d] for p, d in kept]))


def detect_frames(video: str | Path, num_poses: int = 4, cache: str | Path | None = None, tiles: bool = False,
                  total: int | None = None, progress: bool = False, probe=None) -> tuple[list[People], np.ndarray]:
    """PoseLandmarker on every frame of a video (and its tiles, see `MultiPoseEstimator`): one `People` per frame
    and the frames' timestamps (T,) in seconds; `probe` (a `camera_motion.MotionProbe`) sees the frames too."""
    from tqdm import tqdm

    from .decode import iter_frames

    frames, times = [], []
    with MultiPoseEstimator(num_poses, cache=cache, tiles=tiles) as estimator:
        for frame in tqdm(iter_frames(video), total=total, desc="people", unit="frame", disable=not progress,
                          leave=False):
            frames.append(estimator.process(frame.rgb, frame.time_s))
            times.append(frame.time_s)
            if probe is not None:
                probe.add(frame.index, frame.time_s, frame.rgb)
    return frames, np.asarray(times, np.float64)


def detect_people(video: str | Path, num_poses: int = 4, cache: str | Path | None = None,
                  tiles: bool = False) -> list[People]:
    """`detect_frames` without the timestamps."""
    return detect_frames(video, num_poses, cache, tiles)[0]

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
    """PoseLandmarker in VIDEO mode: `process(rgb, time_s)` on consecutive frames returns the frame's `People`."""

    def __init__(self, num_poses: int = 4, min_detection_confidence: float = 0.5, cache: str | Path | None = None):
        os.environ.setdefault("GLOG_minloglevel", "2")
        bundle = pose_bundle(cache)
        with native_stderr_silenced():
            import mediapipe as mp
            from mediapipe.tasks.python import BaseOptions
            from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions, RunningMode

            options = PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_path=str(bundle)), running_mode=RunningMode.VIDEO,
                num_poses=num_poses, min_pose_detection_confidence=min_detection_confidence,
                min_pose_presence_confidence=0.5, min_tracking_confidence=0.5)
            self._landmarker = PoseLandmarker.create_from_options(options)
        self._image = mp.Image
        self._format = mp.ImageFormat.SRGB
        self._last_ms = -1

    def process(self, rgb: np.ndarray, time_s: float) -> People:
        h, w = rgb.shape[:2]
        ms = max(int(round(time_s * 1000)), self._last_ms + 1)      # VIDEO mode needs increasing timestamps
        self._last_ms = ms
        result = self._landmarker.detect_for_video(self._image(image_format=self._format,
                                                               data=np.ascontiguousarray(rgb)), ms)
        P = len(result.pose_landmarks)
        lm = np.array([[(p.x * w, p.y * h) for p in pose] for pose in result.pose_landmarks], np.float32)
        vis = np.array([[p.visibility for p in pose] for pose in result.pose_landmarks], np.float32)
        world = np.array([[(p.x, p.y, p.z) for p in pose] for pose in result.pose_world_landmarks], np.float32)
        return People(lm.reshape(P, NUM_MP_LANDMARKS, 2), vis.reshape(P, NUM_MP_LANDMARKS),
                      world.reshape(P, NUM_MP_LANDMARKS, 3))

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def detect_people(video: str | Path, num_poses: int = 4, cache: str | Path | None = None) -> list[People]:
    """PoseLandmarker on every frame of a video: one `People` per frame."""
    from .decode import iter_frames

    with MultiPoseEstimator(num_poses, cache=cache) as estimator:
        return [estimator.process(frame.rgb, frame.time_s) for frame in iter_frames(video)]

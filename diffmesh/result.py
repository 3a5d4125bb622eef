"""`result.npz`, the numbers of one `diffmesh run`, as a typed dataclass: `Result.save(path)` writes it,
`Result.load(path)` reads it back (every key and its meaning: docs/outputs.md).

T frames, K bones, S shape values, V vertices. Frames where `valid` is False have no body: their 3D arrays are NaN.
The file holds plain arrays only (strings as numpy unicode, the reprojection report as a JSON string), so
`numpy.load` reads it without `allow_pickle`; `format_version` says which layout it has (files written before the
key existed are version 1).
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import DataError

FORMAT_VERSION = 1
_OPTIONAL = ("retarget_error_mm", "vertices", "faces")
_STRINGS = ("body_model", "body_version", "checkpoint", "method")
_SCALARS = ("fps", "focal", "retarget_error_mm")


@dataclass
class Result:
    valid: np.ndarray               # (T,) bool: a person is in the frame
    joints3d: np.ndarray            # (T, 17, 3) float32, camera frame, metres
    translation: np.ndarray         # (T, 3) float32, the pelvis joint in the camera frame
    pose_rotmats: np.ndarray        # (T, K, 3, 3) float32
    shape: np.ndarray               # (T, S) float32, one per clip
    shape_mean: np.ndarray          # (S,) float32, over valid frames (the exports' shape)
    keypoints2d: np.ndarray         # (T, 17, 3) float32, the model's input: pixels + confidence
    landmarks2d: np.ndarray         # (T, 33, 3) float32, MediaPipe's landmarks: pixels + visibility
    mediapipe_world: np.ndarray     # (T, 33, 3) float32, MediaPipe's metric 3D landmarks
    track_id: np.ndarray            # (T,) int64, -1 where not valid
    timestamps: np.ndarray          # (T,) float64 seconds
    fps: float
    image_size: np.ndarray          # (2,) width, height
    focal: float                    # pixels
    principal: np.ndarray           # (2,) pixels
    body_model: str                 # 'anny' | 'smpl'
    body_version: str
    bone_names: np.ndarray          # (K,) str
    bone_parents: np.ndarray        # (K,) int
    joint_names: np.ndarray         # (17,) str
    checkpoint: str                 # file name of the weights
    method: str
    reprojection: dict              # px, percent_of_height, median_px
    retarget_error_mm: float | None = None      # SMPL output from an Anny checkpoint only
    vertices: np.ndarray | None = None          # (T, V, 3) float16, with --save-vertices only
    faces: np.ndarray | None = None             # (F, 3) int32, with --save-vertices only

    @property
    def num_frames(self) -> int:
        return len(self.valid)

    def arrays(self) -> dict[str, np.ndarray]:
        """The file's keys and arrays (optional ones only when set), plus `format_version`."""
        out = {"format_version": np.int64(FORMAT_VERSION)}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name in _STRINGS:
                value = np.str_(value)
            elif f.name in _SCALARS:
                value = np.float64(value)
            elif f.name == "reprojection":
                value = np.str_(json.dumps(value))
            out[f.name] = value
        return out

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def load(cls, path: str | Path) -> "Result":
        """Read a result.npz written by `save` (or by an older diffmesh of the same format version)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is not a readable result.npz ({e}); run `diffmesh run` again") from None
        version = int(arrays.pop("format_version", 1))
        if version != FORMAT_VERSION:
            raise DataError(f"{path} has result format {version}; this diffmesh reads format {FORMAT_VERSION}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(arrays) - set(_OPTIONAL))
        if missing:
            raise DataError(f"{path} lacks key(s) {missing}; is it a diffmesh result.npz?")
        values = {k: v for k, v in arrays.items() if k in names}
        for k in _STRINGS:
            values[k] = str(values[k])
        for k in _SCALARS:
            if k in values:
                values[k] = float(values[k])
        values["reprojection"] = json.loads(str(values["reprojection"]))
        return cls(**values)

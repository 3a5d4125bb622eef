"""`result.npz`, the numbers of one `diffmesh run`, as a typed dataclass: `Result.save(path)` writes it,
`Result.load(path)` reads it back (every key and its meaning: docs/outputs.md).

T frames, K bones, S shape values, V vertices. Frames where `valid` is False have no body: their 3D arrays are NaN.
The file holds plain arrays only (strings as numpy unicode, the reprojection report as a JSON string), so
`numpy.load` reads it without `allow_pickle`; `format_version` says which layout it has (files written before the
key existed are version 1).

Version 2 holds several people (`diffmesh run --max-people`, `save_people`): every per-frame array with a leading
person axis (P, T, ...), `shape_mean` (P, S), `reprojection` a JSON list, `retarget_error_mm` (P,), `person_id` (P,)
the people's track numbers (0 the most prominent); the rest is shared. `Result.load` reads one person of it (the
first unless told), so code written for one person reads the main person of a multi-person file; `load_people`
reads them all.
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from .errors import DataError

FORMAT_VERSION = 1
PEOPLE_FORMAT_VERSION = 2
_PER_FRAME = ("valid", "joints3d", "translation", "pose_rotmats", "shape", "keypoints2d", "landmarks2d",
              "mediapipe_world", "track_id", "vertices", "joints3d_world", "foot_contacts")
_OPTIONAL = ("retarget_error_mm", "vertices", "faces", "world_from_camera", "joints3d_world", "camera_height_m",
             "foot_contacts", "camera_drift")
_STRINGS = ("body_model", "body_version", "checkpoint", "method")
_SCALARS = ("fps", "focal", "retarget_error_mm", "camera_height_m", "camera_drift")


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
    world_from_camera: np.ndarray | None = None  # (4, 4): camera points -> the z-up world, ground at z = 0
    joints3d_world: np.ndarray | None = None     # (T, 17, 3) float32, the joints in that world, feet settled
    camera_height_m: float | None = None        # the camera's height above the ground
    foot_contacts: np.ndarray | None = None      # (T, 2) bool, right and left ankle planted (with a world)
    camera_drift: float | None = None           # how far the view moved, share of the image width (camera_motion.py)

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
    def load(cls, path: str | Path, person: int = 0) -> "Result":
        """Read a result.npz written by `save` (or by an older diffmesh of the same format version); of a
        several-people file (version 2), the person at index `person`."""
        arrays, version = _read(path)
        if version == PEOPLE_FORMAT_VERSION:
            count = len(arrays["person_id"])
            if not 0 <= person < count:
                raise DataError(f"{path} holds {count} people; choose a person from 0 to {count - 1}")
            arrays = _one_person(arrays, person)
        elif version != FORMAT_VERSION:
            raise DataError(f"{path} has result format {version}; this diffmesh reads formats {FORMAT_VERSION} and "
                            f"{PEOPLE_FORMAT_VERSION}")
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


def _read(path: str | Path) -> tuple[dict[str, np.ndarray], int]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable result.npz ({e}); run `diffmesh run` again") from None
    return arrays, int(arrays.pop("format_version", 1))


def _one_person(arrays: dict[str, np.ndarray], p: int) -> dict[str, np.ndarray]:
    """A version-2 file's arrays cut to person p, in the version-1 layout."""
    out = {k: (v[p] if k in _PER_FRAME or k == "shape_mean" else v) for k, v in arrays.items() if k != "person_id"}
    out["reprojection"] = np.str_(json.dumps(json.loads(str(arrays["reprojection"]))[p]))
    if "retarget_error_mm" in arrays:
        error = float(arrays["retarget_error_mm"][p])
        out.pop("retarget_error_mm")
        if np.isfinite(error):
            out["retarget_error_mm"] = np.float64(error)
    return out


def save_people(path: str | Path, results: list[Result], person_ids) -> None:
    """Several people's results of one video (same frames) as one version-2 result.npz."""
    per = [r.arrays() for r in results]
    arrays = {}
    for key, value in per[0].items():
        if key in _PER_FRAME or key == "shape_mean":
            arrays[key] = np.stack([a[key] for a in per])
        elif key == "reprojection":
            arrays[key] = np.str_(json.dumps([r.reprojection for r in results]))
        elif key == "retarget_error_mm":
            arrays[key] = np.array([np.nan if r.retarget_error_mm is None else r.retarget_error_mm for r in results])
        else:
            arrays[key] = value
    arrays["format_version"] = np.int64(PEOPLE_FORMAT_VERSION)
    arrays["person_id"] = np.asarray(person_ids, np.int64)
    np.savez_compressed(path, **arrays)


def load_people(path: str | Path) -> list[Result]:
    """Every person of a result.npz: one for a version-1 file, all of a version-2 file."""
    arrays, version = _read(path)
    count = len(arrays["person_id"]) if version == PEOPLE_FORMAT_VERSION else 1
    return [Result.load(path, p) for p in range(count)]

"""Readers for the dataset files researchers already have, and the clip cutting each codebase uses.

VIBE/TCMR/MPS-Net/GLoT databases (`3dpw_test_db.pt`, `h36m_train_25fps_db.pt`, `mpii3d_val_scale12_db.pt`,
`insta_train_db.h5`, ...): one row per frame, a dict of arrays, written with joblib.dump (read here with the
restricted joblib reader, `safe_pickle.safe_load_joblib`) or h5py (InstaVariety, read lazily: its features are
~17 GB). MotionBERT mesh pickles (`mesh_det_pw3d.pkl`, `mesh_det_h36m.pkl`): {'train': ..., 'test': ...}, each a
dict of per-frame arrays (restricted unpickler). Every key and shape is checked on load; a problem is one line
that names the file, the key and what was expected.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingFileError
from ..safe_pickle import safe_load_joblib, safe_load_pickle

FEATURE_DIM = 2048                      # SPIN's ResNet-50 features, the databases' `features`
SPIN49_J14 = slice(25, 39)              # the 14 LSP ("common") joints inside SPIN's 49, in metrics.H36M_TO_J14 order
# SPIN-49 index of each Human3.6M-17 joint (J_regressor_h36m order) and of each MPI-INF-3DHP test joint
SPIN49_OF_H36M17 = np.array([39, 28, 29, 30, 27, 26, 25, 41, 37, 43, 38, 34, 35, 36, 33, 32, 31])
SPIN49_OF_MPII3D17 = np.array([38, 37, 33, 32, 31, 34, 35, 36, 27, 26, 25, 28, 29, 30, 39, 41, 43])
# ... and so the MPI-INF-3DHP test joints as Human3.6M-17 indices (every one of them is an H36M joint)
H36M17_TO_MPII3D17 = np.array([int(np.flatnonzero(SPIN49_OF_H36M17 == s)[0]) for s in SPIN49_OF_MPII3D17])
MPII3D17_PELVIS = 14
CROP_SCALE = 1.2                        # TCMR/VIBE normalise 2D keypoints by 1.2 x the box, whatever the crop

# key -> trailing shape (None = any size) for every key a database may hold
_DB_KEYS = {
    "vid_name": (), "frame_id": (), "img_name": (), "features": (FEATURE_DIM,), "pose": (72,), "shape": (10,),
    "joints3D": (None, 3), "joints2D": (None, 3), "bbox": (4,), "valid": (), "valid_i": (1,),
}
_MB_KEYS = {"joint_2d": (17, 2), "confidence": (17, None), "smpl_pose": (72,), "smpl_shape": (10,), "source": ()}


@dataclass
class FrameDatabase:
    """One VIBE-style database, N frames of many person-sequences.

    vid_name (N,) str: sequence id ('{seq}_{person}' for 3DPW), rows of one sequence are contiguous;
    frame_id (N,) int64 (MPI-INF-3DHP: str, the image's stem); features (N, D) float32 or None (an h5py dataset for .h5 files: index it, do not copy);
    pose (N, 72) axis-angle and shape (N, 10) betas, or None without SMPL ground truth;
    joints3d (N, J, 3) metres (J = 49 SPIN joints for training files, 14 for 3DPW val/test) or None;
    joints2d (N, J, 3) pixels + visibility, or None; bbox (N, 4) (cx, cy, w, h) pixels, or None;
    valid (N,) bool: frames to score and train on (`valid`, `valid_i`, or all frames).
    """

    path: Path
    vid_name: np.ndarray
    frame_id: np.ndarray
    features: object
    pose: np.ndarray | None
    shape: np.ndarray | None
    joints3d: np.ndarray | None
    joints2d: np.ndarray | None
    bbox: np.ndarray | None
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.vid_name)

    @property
    def name(self) -> str:
        return self.path.name

    def sequences(self) -> list[np.ndarray]:
        """Row indices of each sequence, in file order (VIBE's `split_into_chunks` grouping)."""
        return sequence_rows(self.vid_name)

    def joints3d_j14(self, rows) -> np.ndarray:
        """The 14 evaluation joints (metrics.H36M_TO_J14 order) of `rows`, metres: (n, 14, 3)."""
        j = self.joints3d[rows]
        if j.shape[1] == 49:
            return j[:, SPIN49_J14]
        if j.shape[1] == 14:
            return j
        raise DataError(f"{self.name}: joints3D has {j.shape[1]} joints; expected 49 (SPIN) or 14 (LSP)")

    def joints3d_h36m17(self, rows) -> np.ndarray | None:
        """Human3.6M-17 joints of `rows` from SPIN-49 joints (n, 17, 3), or None when the file holds only 14."""
        j = self.joints3d[rows]
        return j[:, SPIN49_OF_H36M17] if j.shape[1] == 49 else None

    def joints3d_mpii3d17(self, rows) -> np.ndarray:
        """MPI-INF-3DHP's 17 test joints of `rows` (n, 17, 3); pelvis at MPII3D17_PELVIS."""
        j = self.joints3d[rows]
        if j.shape[1] != 49:
            raise DataError(f"{self.name}: MPI-INF-3DHP evaluation needs 49 SPIN joints, the file has {j.shape[1]}")
        return j[:, SPIN49_OF_MPII3D17]

    def keypoints2d_j14(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """The 14 common joints in 2D, normalised to the person's box as TCMR does ((x - cx) / (1.2 w / 2); InstaVariety,
        which has no box, as 2x / 224 - 1), and their confidences: (n, 14, 2), (n, 14)."""
        j = self.joints2d[rows]
        j = j[:, SPIN49_J14] if j.shape[1] == 49 else j[:, :14]   # 14 common first in 3DPW's 14 and Insta's 25
        if self.bbox is None:
            uv = j[..., :2] * (2 / 224) - 1
        else:
            uv = normalize_crop(j[..., :2], self.bbox[rows])
        return uv.astype(np.float32), j[..., 2].astype(np.float32)


def _strings(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "S" or a.dtype == object:
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a.ravel()])
    return a.astype(str)


def _check(path: Path, key: str, arr, n: int | None, trailing: tuple) -> None:
    shape = tuple(arr.shape)
    ok = len(shape) == 1 + len(trailing) and all(t is None or s == t for s, t in zip(shape[1:], trailing))
    if not ok:
        want = "(N" + "".join(f", {'*' if t is None else t}" for t in trailing) + ")"
        hint = ""
        if key == "features" and len(shape) == 2:
            hint = (f": the features are {shape[1]}-d but diffmesh's feature models take {FEATURE_DIM}-d SPIN "
                    "ResNet-50 features; use the databases VIBE/TCMR released or re-extract with that backbone")
        raise DataError(f"{path.name}: '{key}' has shape {shape}, expected {want}{hint}")
    if n is not None and shape[0] != n:
        raise DataError(f"{path.name}: '{key}' has {shape[0]} rows but 'vid_name' has {n}; the file is damaged")


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path} (see docs/reproduce.md for where each file comes from)")
    return path


def read_database(path: str | Path, feature_dim: int = FEATURE_DIM) -> FrameDatabase:
    """Read a VIBE/TCMR/MPS-Net/GLoT database (.pt joblib dump, or .h5) and check every key's shape.

    Raises:
        MissingFileError: no such file. UnsafePickleError: the file would import anything but numpy/containers.
        DataError: truncated/corrupt file, a missing key, a wrong shape or feature size.
    """
    path = _require_file(path, "database")
    if path.suffix in (".h5", ".hdf5"):
        import h5py

        try:
            fh = h5py.File(path, "r")
        except OSError as e:
            raise DataError(f"{path} is not a readable HDF5 file ({str(e)[:80]}); copy or download it again") from None
        raw = {k: fh[k] for k in fh.keys()}
        raw = {k: (v if k == "features" else v[()]) for k, v in raw.items()}   # features stay on disk
    else:
        raw = safe_load_joblib(path)
        if not isinstance(raw, dict):
            raise DataError(f"{path.name}: expected a dict of per-frame arrays, got {type(raw).__name__}")
    if "vid_name" not in raw:
        raise DataError(f"{path.name}: missing key 'vid_name' (has {sorted(raw)}); is this a VIBE/TCMR database?")
    vid = _strings(raw["vid_name"])
    n = len(vid)
    if "features" not in raw and "joints2D" not in raw:
        raise DataError(f"{path.name}: has neither 'features' nor 'joints2D'; nothing to train or evaluate on")
    if "valid_i" in raw and np.ndim(raw["valid_i"]) == 1:
        raw["valid_i"] = np.asarray(raw["valid_i"])[:, None]                   # (N,) in some releases, (N, 1) in TCMR's
    trailing = dict(_DB_KEYS, features=(feature_dim,))
    for key, value in raw.items():
        if key in trailing:
            _check(path, key, value, n, trailing[key])
    # H36M test files carry all-zero 'pose'/'shape' ('nosmpl'): no SMPL ground truth there
    has_smpl = "pose" in raw and "shape" in raw and bool(np.any(np.asarray(raw["pose"][:1000])))
    if "valid" in raw:
        valid = np.asarray(raw["valid"]).astype(bool)
    elif "valid_i" in raw:
        valid = np.asarray(raw["valid_i"]).reshape(n).astype(bool)
    else:
        valid = np.ones(n, bool)
    f32 = lambda k: np.asarray(raw[k], dtype=np.float32) if k in raw else None  # noqa: E731
    return FrameDatabase(
        path=path, vid_name=vid,
        frame_id=np.asarray(raw["frame_id"]) if "frame_id" in raw else np.arange(n),
        features=raw.get("features"), pose=f32("pose") if has_smpl else None,
        shape=f32("shape") if has_smpl else None, joints3d=f32("joints3D"), joints2d=f32("joints2D"),
        bbox=f32("bbox"), valid=valid)


@dataclass
class MeshSplit:
    """One split of a MotionBERT mesh pickle, N frames: joint_2d (N, 17, 2) pixels (H36M order); confidence (N, 17);
    smpl_pose (N, 72) axis-angle; smpl_shape (N, 10); source (N,) str sequence id per frame."""

    joint_2d: np.ndarray
    confidence: np.ndarray
    smpl_pose: np.ndarray
    smpl_shape: np.ndarray
    source: np.ndarray
    camera_name: np.ndarray | None = None
    hybrik_pose: np.ndarray | None = None       # (N, 72) HybrIK's predicted SMPL pose ('pred_smpl_pose'), if present
    hybrik_shape: np.ndarray | None = None      # (N, 10) its betas ('pred_smpl_shape')

    def resolution(self, dataset: str) -> np.ndarray:
        """(N, 2) image (width, height) MotionBERT normalises each frame with: 3DPW 1920 x 1920 (its frames, portrait
        or landscape, are placed in a 1920 square), Human3.6M 1000 x 1002 for cameras 54138969 and 60457274 and
        1000 x 1000 for the others, COCO 640 x 640."""
        n = len(self)
        if dataset == "h36m":
            tall = np.isin(self.camera_name, ["54138969", "60457274"]) if self.camera_name is not None else np.zeros(n, bool)
            return np.stack([np.full(n, 1000.0), np.where(tall, 1002.0, 1000.0)], 1).astype(np.float32)
        side = {"pw3d": 1920.0, "coco": 640.0}.get(dataset)
        if side is None:
            raise DataError(f"unknown MotionBERT dataset '{dataset}'; expected pw3d, h36m or coco")
        return np.full((n, 2), side, np.float32)

    def __len__(self) -> int:
        return len(self.source)


def read_mesh_pickle(path: str | Path) -> dict[str, MeshSplit]:
    """Read a MotionBERT mesh pickle (`mesh_det_pw3d.pkl`, `mesh_det_h36m.pkl`, or the refinement's
    `mesh_det_*_w_hybrik_pred*.pkl` with HybrIK's 'pred_smpl_pose'/'pred_smpl_shape'): {'train': MeshSplit, ...}."""
    path = _require_file(path, "MotionBERT mesh pickle")
    raw = safe_load_pickle(path)
    if not isinstance(raw, dict) or not ({"train", "test"} & set(raw)):
        raise DataError(f"{path.name}: expected a dict with 'train' and/or 'test' splits; is this a MotionBERT "
                        "mesh pickle (mesh_det_*.pkl)?")
    out = {}
    for split in ("train", "test"):
        if split not in raw:
            continue
        d = raw[split]
        missing = [k for k in _MB_KEYS if k not in d]
        if missing:
            raise DataError(f"{path.name}: split '{split}' misses key(s) {missing}")
        source = _strings(d["source"])
        for key, trailing in _MB_KEYS.items():
            if key != "source":
                _check(path, f"{split}/{key}", np.asarray(d[key]), len(source), trailing)
        conf = np.asarray(d["confidence"], dtype=np.float32)
        if conf.ndim == 3:
            if conf.shape[2] != 1:
                raise DataError(f"{path.name}: '{split}/confidence' has shape {conf.shape}, expected (N, 17, 1)")
            conf = conf[..., 0]
        camera = _strings(d["camera_name"]) if "camera_name" in d else None
        hybrik = [None, None]
        if "pred_smpl_pose" in d or "pred_smpl_shape" in d:      # the *_w_hybrik_pred.pkl files of the refinement
            for i, (key, trailing) in enumerate((("pred_smpl_pose", (72,)), ("pred_smpl_shape", (10,)))):
                if key not in d:
                    raise DataError(f"{path.name}: split '{split}' has HybrIK predictions but no '{key}'")
                _check(path, f"{split}/{key}", np.asarray(d[key]), len(source), trailing)
                hybrik[i] = np.asarray(d[key], dtype=np.float32)
        out[split] = MeshSplit(np.asarray(d["joint_2d"], dtype=np.float32), np.clip(conf, 0, 1),
                               np.asarray(d["smpl_pose"], dtype=np.float32),
                               np.asarray(d["smpl_shape"], dtype=np.float32), source, camera, *hybrik)
    return out


# ---------------------------------------------------------------- clip cutting

def sequence_rows(names: np.ndarray) -> list[np.ndarray]:
    """Row indices of each run of equal names, in order. (N,) -> list of index arrays."""
    names = np.asarray(names)
    if len(names) == 0:
        return []
    cuts = np.flatnonzero(names[1:] != names[:-1]) + 1
    return np.split(np.arange(len(names)), cuts)


def chunk_starts(names: np.ndarray, seqlen: int, stride: int) -> np.ndarray:
    """VIBE/TCMR training chunks: windows of `seqlen` consecutive rows of one sequence every `stride` rows, sequences
    shorter than `seqlen` skipped. Returns (C,) first rows."""
    starts = [rows[0] + np.arange(0, len(rows) - seqlen + 1, stride) for rows in sequence_rows(names)
              if len(rows) >= seqlen]
    return np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)


def motionbert_clips(source: np.ndarray, n_frames: int, stride: int) -> np.ndarray:
    """MotionBERT's `split_clips`: clips of `n_frames` rows every `stride` rows inside each sequence (test: stride =
    n_frames, so the tail that does not fill a clip is dropped); a sequence too short for one clip is resampled to
    `n_frames` rows (here evenly, where MotionBERT jitters the picks at random). Returns (C, n_frames) row indices."""
    clips = []
    for rows in sequence_rows(source):
        if len(rows) >= n_frames:
            clips += [rows[s:s + n_frames] for s in range(0, len(rows) - n_frames + 1, stride)]
        else:
            clips.append(rows[np.linspace(0, len(rows), n_frames, endpoint=False).astype(np.int64)])
    return np.stack(clips) if clips else np.zeros((0, n_frames), np.int64)


def normalize_screen(joint_2d: np.ndarray, res: np.ndarray) -> np.ndarray:
    """MotionBERT's 2D normalisation: x / w * 2 - 1, y / w * 2 - h / w (the image's width maps to [-1, 1], aspect
    kept). joint_2d (n, J, 2) pixels, res (n, 2) (w, h) -> (n, J, 2)."""
    w, h = res[:, None, :1], res[:, None, 1:]
    return (joint_2d / w * 2 - np.concatenate([np.ones_like(w), h / w], -1)).astype(np.float32)


def normalize_crop(joints2d: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """Pixels to the person's crop: (x - cx, y - cy) / (1.2 w / 2), so the square crop spans [-1, 1] (VIBE's kp_2d for
    224-pixel crops, with TCMR's fixed 1.2 scale). joints2d (n, J, 2), bbox (n, 4) -> (n, J, 2)."""
    centre, half = bbox[:, None, :2], np.maximum(bbox[:, None, 2:3], 1e-6) * CROP_SCALE / 2
    return (joints2d - centre) / half

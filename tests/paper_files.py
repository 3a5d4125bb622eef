"""Synthetic files of the real paper-mode formats (keys, dtypes, shapes of the VIBE/TCMR databases, InstaVariety's
h5, MotionBERT's mesh pickles and SMPL; random values), written the way their tools write them (joblib.dump, h5py,
pickle). Used by tests/test_paper.py."""

import pickle
from pathlib import Path

import h5py
import joblib
import numpy as np
import scipy.sparse

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def write_smpl(folder: Path, seed: int = 0) -> Path:
    """SMPL_NEUTRAL.pkl (numpy + scipy.sparse, real keys and shapes) and J_regressor_h36m.npy, with a template whose
    joints spread like a body so poses move joints by realistic amounts."""
    rng = np.random.default_rng(seed)
    V = 6890
    folder.mkdir(parents=True, exist_ok=True)
    v = rng.normal(0, 0.25, (V, 3)) * np.array([0.6, 1.5, 0.3])
    nearest = np.argsort(rng.random((24, V)), 1)[:, :40]
    J = scipy.sparse.lil_matrix((24, V))
    for j in range(24):
        J[j, nearest[j]] = 1 / 40
    weights = rng.random((V, 24)) ** 8
    weights /= weights.sum(1, keepdims=True)
    data = {"v_template": v, "shapedirs": rng.normal(0, 0.01, (V, 3, 10)), "posedirs": rng.normal(0, 1e-3, (V, 3, 207)),
            "J_regressor": scipy.sparse.csc_matrix(J), "weights": weights,
            "kintree_table": np.array([[4294967295] + SMPL_PARENTS[1:], list(range(24))]),
            "f": rng.integers(0, V, (13776, 3)).astype(np.uint32)}
    (folder / "SMPL_NEUTRAL.pkl").write_bytes(pickle.dumps(data, protocol=2))
    h36m = rng.random((17, V)) * (rng.random((17, V)) < 0.01)
    np.save(folder / "J_regressor_h36m.npy", h36m / h36m.sum(1, keepdims=True))
    return folder


def _rows(seq_lens: list[int], prefix: str):
    names = np.concatenate([[f"{prefix}{i:02d}_0"] * n for i, n in enumerate(seq_lens)]).astype(str)   # '<U'
    frame_id = np.concatenate([np.arange(n) for n in seq_lens]).astype(np.int64)
    return names, frame_id


def vibe_db(seq_lens: list[int], joints3d: int | None, joints2d: int, smpl: bool, rng, feature_dim: int = 2048,
            valid: str | None = "valid", prefix: str = "seq") -> dict:
    names, frame_id = _rows(seq_lens, prefix)
    N = len(names)
    db = {"vid_name": names, "frame_id": frame_id, "img_name": np.array([f"img/{n}/{i:05d}.jpg" for n, i in
                                                                         zip(names, frame_id)]),
          "features": rng.normal(0, 1, (N, feature_dim)).astype(np.float32),
          "joints2D": np.concatenate([rng.uniform(100, 400, (N, joints2d, 2)), rng.integers(0, 2, (N, joints2d, 1))],
                                     -1).astype(np.float64),
          "bbox": np.tile(np.array([250.0, 250.0, 300.0, 300.0]), (N, 1))}
    if joints3d:
        db["joints3D"] = rng.normal(0, 0.3, (N, joints3d, 3)).astype(np.float32)
    if smpl:
        db["pose"] = (rng.normal(0, 0.2, (N, 72))).astype(np.float32)
        db["shape"] = np.repeat(rng.normal(0, 0.5, (1, 10)), N, 0).astype(np.float32)
    if valid == "valid":
        db["valid"] = (rng.random(N) > 0.1).astype(np.int64)
    elif valid == "valid_i":
        db["valid_i"] = (rng.random((N, 1)) > 0.5).astype(np.float64)
    return db


def mesh_split(seq_lens: list[int], rng, camera: bool = False) -> dict:
    names, _ = _rows(seq_lens, "courtyard_")
    N = len(names)
    d = {"joint_2d": rng.uniform(0, 1000, (N, 17, 2)).astype(np.float32),
         "confidence": rng.uniform(0, 1, (N, 17, 1)).astype(np.float32),
         "smpl_pose": rng.normal(0, 0.2, (N, 72)).astype(np.float32),
         "smpl_shape": rng.normal(0, 0.5, (N, 10)).astype(np.float32), "source": list(names)}
    if camera:
        d["camera_name"] = list(rng.choice(["54138969", "55011271"], N))
    return d


def write_all(folder: Path, seed: int = 0) -> Path:
    """Every file the paper settings name, small."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(vibe_db([40, 24], 49, 14, True, rng), folder / "3dpw_train_db.pt")
    joblib.dump(vibe_db([36, 21, 12], 14, 14, True, rng), folder / "3dpw_test_db.pt")
    joblib.dump(vibe_db([30, 20], 49, 49, False, rng, valid=None), folder / "h36m_train_25fps_db.pt")
    h36m_test = vibe_db([20, 18], 49, 49, False, rng, valid=None)
    h36m_test["pose"], h36m_test["shape"] = np.zeros((38, 72), np.float32), np.zeros((38, 10), np.float32)
    joblib.dump(h36m_test, folder / "h36m_test_25fps_nosmpl_db.pt")
    mpii_train = vibe_db([30, 17], 49, 49, False, rng, valid=None)
    mpii_train["frame_id"] = np.array([f"frame_{i:06d}" for i in mpii_train["frame_id"]])   # strings in MPI files
    joblib.dump(mpii_train, folder / "mpii3d_train_scale12_db.pt")
    joblib.dump(vibe_db([25, 19], 49, 49, False, rng, valid="valid_i"), folder / "mpii3d_val_scale12_db.pt")
    posetrack = vibe_db([20, 18], None, 49, False, rng, valid=None)
    del posetrack["frame_id"]                                                       # PoseTrack's has none
    joblib.dump(posetrack, folder / "posetrack_train_db.pt")
    insta = vibe_db([30, 22], None, 25, False, rng, valid=None)
    with h5py.File(folder / "insta_train_db.h5", "w") as f:
        f.create_dataset("vid_name", data=np.array([n.encode() for n in insta["vid_name"]]))   # bytes, as VIBE's
        f.create_dataset("frame_id", data=insta["frame_id"])
        f.create_dataset("joints2D", data=insta["joints2D"][..., :3] * 224 / 400)
        f.create_dataset("features", data=insta["features"])
    for name, camera in (("mesh_det_pw3d.pkl", False), ("mesh_det_h36m.pkl", True)):
        data = {"train": mesh_split([40, 30], rng, camera), "test": mesh_split([35, 20, 9], rng, camera)}
        (folder / name).write_bytes(pickle.dumps(data))
        for split in data.values():               # the refinement's files add HybrIK's predictions per frame
            split["pred_smpl_pose"] = split["smpl_pose"] + rng.normal(0, 0.05, split["smpl_pose"].shape).astype(np.float32)
            split["pred_smpl_shape"] = split["smpl_shape"] + rng.normal(0, 0.1, split["smpl_shape"].shape).astype(np.float32)
        hybrik = "mesh_det_pw3d_w_hybrik_pred_hr48_w.pkl" if name == "mesh_det_pw3d.pkl" else "mesh_det_h36m_w_hybrik_pred.pkl"
        (folder / hybrik).write_bytes(pickle.dumps(data))
    return folder

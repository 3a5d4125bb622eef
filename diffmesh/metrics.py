"""Evaluation metrics, as pure numpy functions (float64), and the two protocols in use (docs/method.md).

Inputs are in metres; metrics are reported in millimetres (ACC-ERR in mm/frame^2, which papers label mm/s^2).
Joint arrays are Human3.6M-17 ordered (T, 17, 3) unless stated.
"""

from dataclasses import asdict, dataclass

import numpy as np

# The 14 evaluation joints (LSP order) as Human3.6M-17 indices, as in TCMR/VIBE's H36M_TO_J14.
H36M_TO_J14 = np.array([3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10])
J14_HIPS = (2, 3)  # positions of the right and left hip in J14
PELVIS = 0


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame mean joint position error. pred, gt: (T, J, 3) -> (T,), same units as the input."""
    return np.linalg.norm(pred - gt, axis=-1).mean(-1)


def similarity_procrustes(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Align each frame of `pred` to `gt` with the best scale, rotation and translation (Umeyama, no reflection).

    pred, gt: (T, J, 3) -> aligned pred (T, J, 3).
    """
    mu_p, mu_g = pred.mean(1, keepdims=True), gt.mean(1, keepdims=True)
    p, g = pred - mu_p, gt - mu_g
    cov = np.einsum("tji,tjk->tik", p, g)                                      # (T, 3, 3) = P^T G
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(np.einsum("tij,tjk->tik", U, Vt)))
    D = np.ones_like(S)
    D[:, -1] = d
    R = np.einsum("tij,tj,tjk->tik", U, D, Vt)                                  # p @ R ~ g
    scale = (S * D).sum(-1) / np.square(p).sum((1, 2))
    return scale[:, None, None] * np.einsum("tji,tik->tjk", p, R) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame MPJPE after similarity Procrustes alignment. (T, J, 3) -> (T,)."""
    return mpjpe(similarity_procrustes(pred, gt), gt)


def mpve(pred_verts: np.ndarray, gt_verts: np.ndarray) -> np.ndarray:
    """Per-frame mean vertex error. (T, V, 3) -> (T,)."""
    return mpjpe(pred_verts, gt_verts)


def acceleration(x: np.ndarray) -> np.ndarray:
    """Second difference x_{t-1} - 2 x_t + x_{t+1}. (T, J, 3) -> (T-2, J, 3)."""
    return x[:-2] - 2 * x[1:-1] + x[2:]


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over the first axis (window odd): (T, ...) -> (T, ...), NaN where the window leaves
    the sequence (and wherever it meets a NaN)."""
    half = window // 2
    out = np.full(x.shape, np.nan)
    if len(x) >= window:
        out[half:len(x) - half] = np.lib.stride_tricks.sliding_window_view(x, window, axis=0).mean(-1)
    return out


def acc_err(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame acceleration error: mean over joints of ||acc_pred - acc_gt||. (T, J, 3) -> (T-2,)."""
    return np.linalg.norm(acceleration(pred) - acceleration(gt), axis=-1).mean(-1)


@dataclass
class Metrics:
    """Protocol results in mm (acc_err in mm/frame^2); mpve is None without vertices. `frames` counts the frames
    scored for MPJPE, `acc_frames` the acceleration terms (for weighting when aggregating sequences)."""

    mpjpe: float
    pa_mpjpe: float
    mpve: float | None
    acc_err: float
    frames: int
    acc_frames: int

    def as_dict(self) -> dict:
        return asdict(self)


def _check(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[1:] != (17, 3):
        raise ValueError(f"expected matching (T, 17, 3) joint arrays, got {pred.shape} and {gt.shape}")


def evaluate_tcmr(pred: np.ndarray, gt: np.ndarray, pred_verts: np.ndarray | None = None,
                  gt_verts: np.ndarray | None = None) -> Metrics:
    """TCMR/MPS-Net/GLoT protocol on one whole (valid-filtered) sequence: 14 joints centred on the mean of the hips,
    per-frame PA, acceleration error over the whole sequence; MPVE on vertices as given (no translation).
    pred, gt: (T, 17, 3) Human3.6M-17, or gt already as the 14 joints (T, 14, 3) as 3DPW's test database stores it."""
    if gt.ndim == 3 and gt.shape[1:] == (14, 3) and pred.shape[1:] == (17, 3) and len(gt) == len(pred):
        gt14 = gt
    else:
        _check(pred, gt)
        gt14 = gt[:, H36M_TO_J14]
    return evaluate_joint_set(pred[:, H36M_TO_J14], gt14, J14_HIPS, pred_verts, gt_verts)


def evaluate_joint_set(pred: np.ndarray, gt: np.ndarray, centre: tuple[int, ...], pred_verts: np.ndarray | None = None,
                       gt_verts: np.ndarray | None = None, scored: np.ndarray | None = None) -> Metrics:
    """One whole sequence, TCMR style, on any joint set: both sides centred on the mean of the `centre` joints,
    per-frame PA, ACC-ERR over the whole sequence (its first and last frame drop out).

    Args:
        pred, gt: (T, J, 3) metres; pred_verts, gt_verts: (T, V, 3) or None (MPVE as given, no alignment);
        scored: (T,) bool frames that count for MPJPE/PA-MPJPE/MPVE (MPI-INF-3DHP's valid frames); ACC-ERR uses all.
    """
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"expected matching (T, J, 3) joint arrays, got {pred.shape} and {gt.shape}")
    p, g = pred.astype(np.float64), gt.astype(np.float64)
    p = p - p[:, list(centre), :].mean(1, keepdims=True)
    g = g - g[:, list(centre), :].mean(1, keepdims=True)
    acc = acc_err(p, g) if len(p) >= 3 else np.zeros(0)
    s = np.ones(len(p), bool) if scored is None else np.asarray(scored, bool)
    mv = None
    if pred_verts is not None:
        mv = float(mpve(pred_verts[s].astype(np.float64), gt_verts[s].astype(np.float64)).mean() * 1000)
    n = int(s.sum())
    return Metrics(float(mpjpe(p[s], g[s]).mean() * 1000) if n else 0.0,
                   float(pa_mpjpe(p[s], g[s]).mean() * 1000) if n else 0.0, mv,
                   float(acc.mean() * 1000) if len(acc) else float("nan"), n, len(acc))


def evaluate_motionbert(pred: np.ndarray, gt: np.ndarray, pred_verts: np.ndarray | None = None,
                        gt_verts: np.ndarray | None = None, clip_len: int = 16) -> Metrics:
    """MotionBERT/DiffMesh protocol on one sequence: non-overlapping clips of `clip_len` (tail dropped), joints
    relative to the pelvis (joint 0), 14 joints for MPJPE/PA-MPJPE, MPVE with the regressed pelvis subtracted,
    acceleration error (14 joints) inside each clip, averaged over clips."""
    _check(pred, gt)
    n = (len(pred) // clip_len) * clip_len
    if n == 0:
        raise ValueError(f"sequence of {len(pred)} frames is shorter than one clip of {clip_len}")
    pred, gt = pred[:n].astype(np.float64), gt[:n].astype(np.float64)
    p_root, g_root = pred[:, PELVIS:PELVIS + 1], gt[:, PELVIS:PELVIS + 1]
    p, g = (pred - p_root)[:, H36M_TO_J14], (gt - g_root)[:, H36M_TO_J14]
    accs = [acc_err(p[s:s + clip_len], g[s:s + clip_len]) for s in range(0, n, clip_len)]
    mv = None
    if pred_verts is not None:
        mv = float(mpve(pred_verts[:n] - p_root, gt_verts[:n] - g_root).mean() * 1000)
    acc = np.concatenate(accs)
    return Metrics(float(mpjpe(p, g).mean() * 1000), float(pa_mpjpe(p, g).mean() * 1000), mv,
                   float(acc.mean() * 1000) if len(acc) else float("nan"), n, len(acc))


def aggregate(results: list[Metrics]) -> Metrics:
    """Combine per-sequence results: per-frame metrics weighted by frames, ACC-ERR by acceleration terms."""
    frames = sum(r.frames for r in results)
    acc_frames = sum(r.acc_frames for r in results)
    if frames == 0:
        raise ValueError("no frames to aggregate")
    w = lambda key: sum(getattr(r, key) * r.frames for r in results if r.frames) / frames  # noqa: E731
    mv = None if any(r.mpve is None for r in results) else w("mpve")
    acc = sum(r.acc_err * r.acc_frames for r in results if r.acc_frames) / acc_frames if acc_frames else float("nan")
    return Metrics(w("mpjpe"), w("pa_mpjpe"), mv, acc, frames, acc_frames)

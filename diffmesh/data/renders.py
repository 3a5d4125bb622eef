"""The rendered MediaPipe set: its cache files, their reader, and MediaPipe's errors against the rendered truth beside
those of the synthetic noise model (`synthetic.NoiseModel`).

`diffmesh prepare --render` (`diffmesh/render_set.py`) renders the Anny fits of the CMU sequences from random cameras
and runs MediaPipe on the frames exactly as `diffmesh run` does. Each (sequence, camera) becomes one file
`SS_TT_camK.npz` in `default_render_dir()`, written atomically, with a `format` field; this module reads them back
and never imports the renderer or MediaPipe. Arrays of a file (T frames, world axes z up, metres; camera axes x
right, y down, z forward; pixels continuous, principal point at the image centre):

- camera: `camera_R` (3, 3) and `camera_position` (3,) (x_cam = R (x_world - position)), `focal`, `width`,
  `height`, `principal` (2,), `fps`;
- the body: `rotmats` (T, K, 3, 3) world rotations (root first), `translation` (T, 3) root head, `shape` (S,),
  `glitch` (T,);
- the truth: `joints_world`, `joints_cam` (T, 17, 3) Human3.6M-17 bone heads and `joints_px` (T, 17, 2);
  `landmarks_world`, `landmarks_cam` (T, 33, 3) and `landmarks_px` (T, 33, 2), the points the synthetic maker puts
  where MediaPipe reports its landmarks (`synthetic.ANNY_MEDIAPIPE`; `landmark_used` (33,) marks them, the others
  are zero); `*_inside` (inside the image, in front of the camera) and `*_unoccluded` (not hidden by the body: a
  depth test against the rendered depth buffer) per point and frame;
- MediaPipe: `mp_landmarks` (T, 33, 2) pixels, `mp_visibility` (T, 33), `mp_world` (T, 33, 3) (metres, hip-centred,
  y down), `mp_returned` (T,) (NaN where it returned nothing).
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..keypoints import H36M_FROM_MEDIAPIPE, USED_LANDMARKS, mediapipe_to_h36m
from ..metrics import pa_mpjpe, similarity_procrustes
from ..paths import cache_root
from .synthetic import SWAPS, NoiseModel

RENDER_FORMAT = 1
FILE_GLOB = "*_cam*.npz"
H36M_NAMES = ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax", "nose",
              "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")
REBUILD = "diffmesh prepare --render --force"
REQUIRED_KEYS = ("sequence", "camera_index", "seed", "fit_digest", "camera_R", "camera_position", "focal", "width",
                 "height", "principal", "rotmats", "translation", "shape", "glitch", "joints_world", "joints_cam",
                 "joints_px", "joints_inside", "joints_unoccluded", "landmarks_world", "landmarks_cam",
                 "landmarks_px", "landmark_used", "landmarks_inside", "landmarks_unoccluded", "mp_landmarks",
                 "mp_visibility", "mp_world", "mp_returned")


def default_render_dir() -> Path:
    return cache_root() / "cmu_renders"


def render_file(cache_dir: Path, sequence: str, camera: int) -> Path:
    return Path(cache_dir) / f"{sequence}_cam{camera}.npz"


def check_render_file(path: Path) -> dict:
    """Open one render file; a one-line DataError when it is unreadable or was written by another render format."""
    rebuild = f"run `{REBUILD} --render-cache {Path(path).parent}` to re-render it"
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"render cache file {path} is unreadable ({type(e).__name__}); {rebuild}") from None
    fmt = int(data["format"]) if "format" in data else -1
    if fmt != RENDER_FORMAT:
        raise DataError(f"render cache file {path} was written by render format {fmt}, this diffmesh reads "
                        f"{RENDER_FORMAT}; {rebuild}")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise DataError(f"render cache file {path} is unreadable (no {', '.join(missing)}); {rebuild}")
    return data


def load_render_set(cache_dir=None, sequences: list[str] | None = None) -> list[dict]:
    """All render files of the cache (or of the listed sequences), each checked (`check_render_file`)."""
    cache_dir = Path(cache_dir) if cache_dir else default_render_dir()
    paths = sorted(cache_dir.glob(FILE_GLOB))
    if sequences is not None:
        paths = [p for p in paths if p.name.rsplit("_cam", 1)[0] in set(sequences)]
    if not paths:
        raise DataError(f"no rendered sequences in {cache_dir}; run `diffmesh prepare --render` first")
    return [check_render_file(p) for p in paths]


def truth_keypoints(data: dict) -> np.ndarray:
    """The exact 17 keypoints (T, 17, 2) pixels the synthetic maker would give for this camera (its landmarks
    through the 33 -> 17 mapping)."""
    conf = np.zeros(data["landmarks_px"].shape[:2], np.float32)
    conf[:, list(USED_LANDMARKS)] = 1.0
    return mediapipe_to_h36m(data["landmarks_px"], conf)[..., :2]


def mediapipe_keypoints(data: dict) -> np.ndarray:
    """MediaPipe's 17 keypoints (T, 17, 3) = (x, y, confidence) pixels, as `diffmesh run` maps them; frames
    without a pose are NaN with confidence 0."""
    kp = mediapipe_to_h36m(data["mp_landmarks"], data["mp_visibility"])
    kp[~data["mp_returned"], :, 2] = 0.0
    return kp


def _inside17(data: dict) -> np.ndarray:
    """A 17-joint keypoint is inside the image when all the landmarks it is built from are."""
    inside = data["landmarks_inside"]
    return np.stack([inside[:, list(g)].all(-1) for g in H36M_FROM_MEDIAPIPE], -1)


def _unoccluded17(data: dict) -> np.ndarray:
    vis = data["landmarks_unoccluded"]
    return np.stack([vis[:, list(g)].all(-1) for g in H36M_FROM_MEDIAPIPE], -1)


@dataclass
class ErrorSamples:
    """2D errors of one detector (MediaPipe or the noise model) over many frames, pooled: err (N, 17, 2) pixels
    (prediction - truth), size (N,) the person's height in the image (pixels), conf (N, 17), inside/unoccluded
    (N, 17) bool, step (M, 17, 2) the change of the error from one frame to the next (consecutive frames only),
    step_size (M,), swapped (N, 2) bool: legs / arms closer to the truth when left and right are exchanged."""

    err: np.ndarray
    size: np.ndarray
    conf: np.ndarray
    inside: np.ndarray
    unoccluded: np.ndarray
    step: np.ndarray
    step_size: np.ndarray
    swapped: np.ndarray


def _swapped(pred: np.ndarray, exact: np.ndarray, size: np.ndarray) -> np.ndarray:
    """(N, 2): the left/right legs (arms) of pred are nearer the exchanged truth by more than 5 % of the height."""
    out = []
    for pair in SWAPS:
        left, right = list(pair[3:]), list(pair[:3])
        same = np.linalg.norm(pred[:, pair, :] - exact[:, pair, :], axis=-1).mean(-1)
        flip = np.linalg.norm(pred[:, left + right, :] - exact[:, pair, :], axis=-1).mean(-1)
        out.append(flip < same - 0.05 * size)
    return np.stack(out, -1)


def _samples(per_file: list[tuple[np.ndarray, np.ndarray, dict]]) -> ErrorSamples:
    """Pool (prediction (T, 17, 3) with NaN frames dropped, exact (T, 17, 2), the file) over files."""
    parts = {k: [] for k in ErrorSamples.__dataclass_fields__}
    for pred, exact, data in per_file:
        ok = np.isfinite(pred[:, 0, 0])
        size = np.maximum(exact[..., 1].max(-1) - exact[..., 1].min(-1), 10.0)
        err = pred[..., :2] - exact
        both = ok[1:] & ok[:-1]
        parts["err"].append(err[ok])
        parts["size"].append(size[ok])
        parts["conf"].append(pred[ok][..., 2])
        parts["inside"].append(_inside17(data)[ok])
        parts["unoccluded"].append(_unoccluded17(data)[ok])
        parts["step"].append((err[1:] - err[:-1])[both])
        parts["step_size"].append(size[1:][both])
        parts["swapped"].append(_swapped(pred[ok][..., :2], exact[ok], size[ok]))
    return ErrorSamples(**{k: np.concatenate(v) for k, v in parts.items()})


def mediapipe_samples(files: list[dict]) -> ErrorSamples:
    return _samples([(mediapipe_keypoints(d), truth_keypoints(d), d) for d in files])


def noise_model_samples(files: list[dict], noise: NoiseModel | None = None, clip_frames: int = 16,
                        seed: int = 0) -> ErrorSamples:
    """The noise model on the same truth as MediaPipe saw: each file's exact keypoints cut into `clip_frames`
    windows (as the synthetic maker cuts clips), each window noised with its own generator."""
    noise = noise or NoiseModel()
    per_file = []
    for i, d in enumerate(files):
        exact = truth_keypoints(d)
        out = np.zeros((len(exact), 17, 3), np.float32)
        for w, a in enumerate(range(0, len(exact), clip_frames)):
            out[a:a + clip_frames] = noise.apply(np.random.default_rng([seed, i, w]), exact[a:a + clip_frames],
                                                 int(d["width"]), int(d["height"]))
        per_file.append((out, exact, d))
    return _samples(per_file)


def error_table(s: ErrorSamples) -> dict:
    """Per joint (inside the image): error in px (median, mean, p90) and in % of the person's height (median, p90,
    share over 10 %), vertical bias (% of height, + = lower in the image), median frame-to-frame step (% of height),
    lag-1 correlation of the error, confidence (mean, share < 0.5); and summary rows."""
    rel = np.linalg.norm(s.err, axis=-1) / s.size[:, None] * 100
    px = np.linalg.norm(s.err, axis=-1)
    step = np.linalg.norm(s.step, axis=-1) / s.step_size[:, None] * 100
    joints = {}
    for j, name in enumerate(H36M_NAMES):
        m = s.inside[:, j]
        if not m.any():
            continue
        e = s.err[m, j] / s.size[m, None]
        joints[name] = {
            "n": int(m.sum()), "px_median": float(np.median(px[m, j])), "px_mean": float(px[m, j].mean()),
            "px_p90": float(np.percentile(px[m, j], 90)), "pct_median": float(np.median(rel[m, j])),
            "pct_p90": float(np.percentile(rel[m, j], 90)), "over10pct": float((rel[m, j] > 10).mean()),
            "bias_down_pct": float(100 * e[:, 1].mean()), "step_pct_median": float(np.median(step[:, j])),
            "conf_mean": float(s.conf[m, j].mean()), "conf_below_0.5": float((s.conf[m, j] < 0.5).mean())}
    m = s.inside
    summary = {"frames": int(len(s.err)), "pct_median": float(np.median(rel[m])),
               "pct_p90": float(np.percentile(rel[m], 90)), "over10pct": float((rel[m] > 10).mean()),
               "px_median": float(np.median(px[m])), "px_mean": float(px[m].mean()),
               "step_pct_median": float(np.median(step)), "lag1_corr": _lag1(s),
               "hidden_pct_median": _median(rel[m & ~s.unoccluded]),
               "visible_pct_median": _median(rel[m & s.unoccluded]),
               "over10pct_hidden": _share(rel[m & ~s.unoccluded] > 10),
               "over10pct_visible": _share(rel[m & s.unoccluded] > 10),
               "conf_mean": float(s.conf[m].mean()), "conf_below_0.5": float((s.conf[m] < 0.5).mean()),
               "conf_zero": float((s.conf[m] < 0.02).mean()),
               "low_conf_pct_median": _median(rel[m & (s.conf < 0.5)]),
               "over10pct_low_conf": _share(rel[m & (s.conf < 0.5)] > 10),
               "swap_legs": float(s.swapped[:, 0].mean()), "swap_arms": float(s.swapped[:, 1].mean())}
    return {"joints": joints, "all": summary}


def _share(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if x.size else None


def _lag1(s: ErrorSamples) -> float:
    """Correlation of the error with the previous frame's, from var(e) and var(step): 1 - var(step) / (2 var(e))."""
    ve = np.median(np.square(s.err / s.size[:, None, None]))
    vs = np.median(np.square(s.step / s.step_size[:, None, None]))
    return float(1 - vs / (2 * ve))


def world_pa_mpjpe(files: list[dict]) -> dict:
    """MediaPipe's world landmarks against the rendered truth, mm: PA-MPJPE on the 17 joints of the 33 -> 17
    mapping (its landmarks against the truth landmarks through the same mapping), and against the Human3.6M bone
    heads (the model's targets), over the frames with a pose."""
    mp, lm, h36 = [], [], []
    for d in files:
        ok = d["mp_returned"]
        ones = np.ones(d["mp_visibility"].shape, np.float32)
        mp.append(mediapipe_to_h36m(d["mp_world"][ok], ones[ok])[..., :3])
        lm.append(mediapipe_to_h36m(d["landmarks_cam"][ok], ones[ok])[..., :3])
        h36.append(d["joints_cam"][ok])
    mp, lm, h36 = (np.concatenate(x).astype(np.float64) for x in (mp, lm, h36))
    per_joint = np.linalg.norm(similarity_procrustes(mp, lm) - lm, axis=-1) * 1000
    return {"frames": int(len(mp)), "pa_mpjpe_landmarks_mm": float(pa_mpjpe(mp, lm).mean() * 1000),
            "pa_mpjpe_h36m_joints_mm": float(pa_mpjpe(mp, h36).mean() * 1000),
            "per_joint_landmarks_mm": {n: float(per_joint[:, j].mean()) for j, n in enumerate(H36M_NAMES)}}


def detection(files: list[dict]) -> dict:
    """Share of frames in which MediaPipe returned a pose: all frames, and frames where the whole body (every
    landmark the mapping uses) is inside the image."""
    returned = np.concatenate([d["mp_returned"] for d in files])
    whole = np.concatenate([d["landmarks_inside"][:, list(USED_LANDMARKS)].all(-1) for d in files])
    return {"frames": int(len(returned)), "rate": float(returned.mean()),
            "frames_whole_body_inside": int(whole.sum()),
            "rate_whole_body_inside": float(returned[whole].mean()) if whole.any() else None,
            "rate_partly_outside": float(returned[~whole].mean()) if (~whole).any() else None}


def render_statistics(files: list[dict], noise: NoiseModel | None = None) -> dict:
    """Everything `diffmesh prepare --render` reports: detection rate, MediaPipe's 2D error table and the noise
    model's on the same truth, world-landmark PA-MPJPE, and the share of hidden joints."""
    return {"files": len(files), "detection": detection(files),
            "mediapipe_2d": error_table(mediapipe_samples(files)),
            "noise_model_2d": error_table(noise_model_samples(files, noise)),
            "mediapipe_world": world_pa_mpjpe(files),
            "hidden_share": float(np.concatenate([~_unoccluded17(d)[_inside17(d)] for d in files]).mean())}


def comparison_lines(stats: dict) -> list[str]:
    """The per-joint table of `render_statistics` as text lines (MediaPipe beside the noise model)."""
    mp, nm = stats["mediapipe_2d"], stats["noise_model_2d"]
    lines = [f"{'joint':11} {'MP px':>6} {'NM px':>6} {'MP %h':>6} {'NM %h':>6} {'MP p90':>6} {'NM p90':>6} "
             f"{'MP >10%':>7} {'NM >10%':>7} {'MP bias':>7} {'MP conf':>7} {'NM conf':>7}   (median px, % of height)"]
    for name in H36M_NAMES:
        a, b = mp["joints"].get(name), nm["joints"].get(name)
        if a is None or b is None:
            continue
        lines.append(f"{name:11} {a['px_median']:6.1f} {b['px_median']:6.1f} {a['pct_median']:6.2f} "
                     f"{b['pct_median']:6.2f} {a['pct_p90']:6.2f} {b['pct_p90']:6.2f} {a['over10pct']:7.3f} "
                     f"{b['over10pct']:7.3f} {a['bias_down_pct']:7.2f} {a['conf_mean']:7.2f} {b['conf_mean']:7.2f}")
    for label, row in (("MediaPipe", mp["all"]), ("noise model", nm["all"])):
        lines.append(f"{label:11} " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if v is not None))
    return lines

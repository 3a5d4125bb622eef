"""`diffmesh eval-video`: every shipped checkpoint scored on real video against a multi-view 3D reference.

The recording is Pose2Sim's multi-person demo (four calibrated, synchronised 60 fps views; `multiview_reference.py`
builds the reference from MediaPipe in all four views). Each view alone goes through `diffmesh run`
(`pipeline.run_video`, no overlay) once per checkpoint, and is scored beside MediaPipe's own world landmarks
(`pose_world_landmarks` of the same run), raw and after a One-Euro filter (the filter's author's package,
min cutoff 4 Hz, beta 1, on metres, with the frames' timestamps).

Which frames count: those where the run has a body, MediaPipe returned a pose, and the run's 2D keypoints lie on
one of the reference people projected into that view (`assign_people`); each such frame is scored against that
person, so a view whose single-person tracker moves from one person to another scores both, and its coverage says
how many frames it scored.

The scores, per joint set (the 12 limb joints; the 10 without the hips, whose landmark and joint definitions
differ most; all 17), all in millimetres:
- MPJPE: each frame centred on the mean of the set's joints, then one similarity (rotation and scale) for the
  whole sequence, from the camera (or MediaPipe's) frame to the reference's world frame;
- PA-MPJPE: a similarity per frame (Procrustes);
- ACC-ERR: the acceleration error (mm/frame^2 at the video's 60 fps) of the sequence-aligned joints, against
  the reference and against its 5-frame centred moving average (the reference's own jitter is reported: the
  triangulation is noisy, so the smoothed reference is the fairer target of a smooth method).
"""

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DiffMeshError
from ..keypoints import SHARED_JOINTS, mediapipe_to_h36m
from ..metrics import acceleration, moving_average, similarity_procrustes
from ..paths import WEIGHTS_DIR
from ..pipeline import RunSettings, run_video
from ..result import Result
from .multiview_reference import Reference, demo_references

BENCHMARK_VERSION = 1
HIPS = (1, 4)
JOINT_SETS = {
    "limbs12": SHARED_JOINTS,
    "limbs10": tuple(j for j in SHARED_JOINTS if j not in HIPS),
    "all17": tuple(range(17)),
}
ONE_EURO = {"mincutoff": 4.0, "beta": 1.0, "dcutoff": 1.0}      # Hz, per (m/s), Hz
SMOOTH_WINDOW = 5
# A run's frame shows the reference person when its keypoints lie within this fraction of the person's projected
# height of the reference joints (median over the limb joints MediaPipe is confident about).
MATCH_FRACTION = 0.15
MIN_CONFIDENCE = 0.5
MEDIAPIPE_RAW, MEDIAPIPE_FILTERED = "mediapipe_world", "mediapipe_world_one_euro"


def shipped_checkpoints() -> list[Path]:
    return sorted(WEIGHTS_DIR.glob("*.pt"))


# ---------------------------------------------------------------- which frames count

def match_distance(keypoints2d: np.ndarray, reference_px: np.ndarray) -> np.ndarray:
    """(T,) how far the run's keypoints (T, 17, 3: px + confidence) lie from a reference person projected into the
    view (T, 17, 2): the median over the confident limb joints, as a fraction of the person's projected height
    (NaN where nothing can be compared)."""
    limbs = list(SHARED_JOINTS)
    kp, ref = keypoints2d[:, limbs], reference_px[:, limbs]
    dist = np.linalg.norm(kp[..., :2] - ref, axis=-1)
    dist = np.where((kp[..., 2] >= MIN_CONFIDENCE) & np.isfinite(dist), dist, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # frames with no confident joint: NaN
        height = np.nanmax(reference_px[..., 1], axis=1) - np.nanmin(reference_px[..., 1], axis=1)
        return np.nanmedian(dist, axis=1) / height


def assign_people(keypoints2d: np.ndarray, people_px: list[np.ndarray]) -> np.ndarray:
    """(T,) which reference person (index into `people_px`, each (T, 17, 2)) the run follows in each frame, -1 for
    nobody: the nearest person within MATCH_FRACTION."""
    d = np.stack([np.nan_to_num(match_distance(keypoints2d, px), nan=np.inf) for px in people_px])
    best = d.argmin(0)
    return np.where(d.min(0) < MATCH_FRACTION, best, -1)


# ---------------------------------------------------------------- alignment and scores

def centred(points: np.ndarray) -> np.ndarray:
    return points - points.mean(1, keepdims=True)


def align_sequence(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Each frame centred, then one rotation and scale for all frames: pred (T, J, 3) in gt's frame, centred."""
    p, g = centred(pred), centred(gt)
    T, J = p.shape[:2]
    return similarity_procrustes(p.reshape(1, T * J, 3), g.reshape(1, T * J, 3)).reshape(T, J, 3)


def acc_error_mm(pred: np.ndarray, gt: np.ndarray, scored: np.ndarray) -> float:
    """Mean acceleration error (mm/frame^2) over frames t whose neighbours t-1, t+1 are scored too."""
    triple = scored[:-2] & scored[1:-1] & scored[2:]
    err = np.linalg.norm(acceleration(pred) - acceleration(gt), axis=-1).mean(-1)
    err = err[triple & np.isfinite(err)]
    return float(err.mean() * 1000) if len(err) else float("nan")


def score_sequence(pred: np.ndarray, ref: np.ndarray, scored: np.ndarray) -> dict[str, dict[str, float]]:
    """pred and ref (T, 17, 3) metres (NaN allowed outside `scored`) -> {joint set: {metric: value}}."""
    out = {}
    for name, joints in JOINT_SETS.items():
        j = list(joints)
        ok = scored & np.isfinite(pred[:, j]).all((1, 2)) & np.isfinite(ref[:, j]).all((1, 2))
        if ok.sum() < 3:
            out[name] = {"mpjpe": float("nan"), "pa_mpjpe": float("nan"), "acc_err": float("nan"),
                         "acc_err_smoothed": float("nan"), "frames": int(ok.sum())}
            continue
        p, g = pred[:, j], ref[:, j]
        aligned = np.full_like(p, np.nan)
        aligned[ok] = align_sequence(p[ok], g[ok])
        gc = np.where(ok[:, None, None], centred(np.nan_to_num(g)), np.nan)
        smooth = moving_average(gc, SMOOTH_WINDOW)
        pa = similarity_procrustes(p[ok], g[ok])
        out[name] = {
            "mpjpe": float(np.linalg.norm(aligned[ok] - gc[ok], axis=-1).mean() * 1000),
            "pa_mpjpe": float(np.linalg.norm(pa - g[ok], axis=-1).mean() * 1000),
            "acc_err": acc_error_mm(aligned, gc, ok),
            "acc_err_smoothed": acc_error_mm(aligned, smooth, ok & np.isfinite(smooth).all((1, 2))),
            "frames": int(ok.sum()),
        }
    return out


# ---------------------------------------------------------------- MediaPipe's own 3D

def mediapipe_world_h36m(world: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """MediaPipe's world landmarks (T, 33, 3) -> the 17 joints (T, 17, 3), built as the 2D layout builds them."""
    return mediapipe_to_h36m(world, visibility)[..., :3].astype(np.float64)


def one_euro(points: np.ndarray, times: np.ndarray, mincutoff: float = ONE_EURO["mincutoff"],
             beta: float = ONE_EURO["beta"], dcutoff: float = ONE_EURO["dcutoff"]) -> np.ndarray:
    """Each coordinate of (T, J, 3) through a One-Euro filter (the OneEuroFilter package) over the frames'
    timestamps; frames with NaN pass as NaN and the filter restarts after them."""
    from OneEuroFilter import OneEuroFilter

    T = len(points)
    flat = points.reshape(T, -1)
    out = np.full_like(flat, np.nan)
    rate = 1.0 / np.median(np.diff(times)) if T > 1 else 30.0
    filters = None
    for t in range(T):
        if not np.isfinite(flat[t]).all():
            filters = None
            continue
        if filters is None:
            filters = [OneEuroFilter(rate, mincutoff, beta, dcutoff) for _ in range(flat.shape[1])]
        out[t] = [f(float(v), float(times[t])) for f, v in zip(filters, flat[t])]
    return out.reshape(points.shape)


# ---------------------------------------------------------------- one view, every method

@dataclass
class ViewScores:
    """One view: per reference person, the frames scored and every method's scores on them; `methods` is the
    frame-weighted mean over the people (the view's figure)."""

    view: str
    frames: int
    people: dict[int, dict]
    methods: dict[str, dict[str, dict[str, float]]]
    seconds: float

    @property
    def scored(self) -> int:
        return sum(p["scored_frames"] for p in self.people.values())

    def as_dict(self) -> dict:
        return {"frames": self.frames, "scored_frames": self.scored, "coverage": self.scored / max(self.frames, 1),
                "people": self.people, "methods": self.methods, "seconds": self.seconds}


def checkpoint_labels(checkpoints: list[Path]) -> list[str]:
    """The name of each checkpoint in a report: its file name without .pt, or `folder/name` where two files share
    a name (two runs' best.pt), so that no two checkpoints are reported, or run, under one name."""
    stems = [Path(c).stem for c in checkpoints]
    labels = [f"{Path(c).parent.name}/{s}" if stems.count(s) > 1 else s for c, s in zip(checkpoints, stems)]
    if len(set(labels)) < len(labels):
        raise DiffMeshError("two checkpoints given have the same folder and file name; pass each file once")
    return labels


def run_view(video: Path, checkpoint: Path, workdir: Path, settings: dict, label: str | None = None) -> Result:
    """One view through `diffmesh run --max-people 1` (result.npz only) with one checkpoint: the single-person
    tracker, the path this benchmark has always measured (`eval-video --people` scores the default, everyone)."""
    out = workdir / f"{(label or checkpoint.stem).replace('/', '__')}_{video.stem}"
    run_video(video, out, RunSettings(checkpoint=str(checkpoint), render=False, exports=("npz",), progress=False,
                                      force=True, **{"max_people": 1, **settings}))
    return Result.load(out / "result.npz")


def weighted_mean(scores: list[dict], weights: list[int]) -> dict:
    """{joint set: {metric: value}} dicts averaged with weights (NaN entries left out)."""
    out = {}
    for joint_set in scores[0]:
        out[joint_set] = {}
        for m in scores[0][joint_set]:
            vals = np.array([s[joint_set][m] for s in scores], float)
            w = np.array(weights, float) * np.isfinite(vals)
            out[joint_set][m] = float((np.nan_to_num(vals) * w).sum() / w.sum()) if w.sum() else float("nan")
    return out


def score_view(refs: list[Reference], view: int, video: Path, checkpoints: list[Path], workdir: Path,
               settings: dict) -> ViewScores:
    """One view: every checkpoint's run and MediaPipe's world landmarks, raw and filtered, on the same frames,
    each frame scored against the reference person the run follows there."""
    t0 = time.perf_counter()
    results = {label: run_view(video, ck, workdir, settings, label)
               for ck, label in zip(checkpoints, checkpoint_labels(checkpoints))}
    first = next(iter(results.values()))
    T = min(first.num_frames, len(refs[0].joints))
    camera = refs[0].camera_models[view]
    follows = assign_people(first.keypoints2d[:T], [camera.project(np.nan_to_num(r.joints[:T])) for r in refs])
    world = mediapipe_world_h36m(first.mediapipe_world[:T], first.landmarks2d[:T, :, 2])
    preds = {name: r.joints3d[:T].astype(np.float64) for name, r in results.items()}
    preds[MEDIAPIPE_RAW] = world
    preds[MEDIAPIPE_FILTERED] = one_euro(world, first.timestamps[:T])
    people, per_person = {}, []
    for p, ref in enumerate(refs):
        scored = (follows == p) & first.valid[:T] & np.isfinite(world).all((1, 2)) \
            & np.isfinite(ref.joints[:T]).all((1, 2))
        if scored.sum() < 10:                      # too few frames for a sequence alignment and accelerations
            continue
        methods = {name: score_sequence(pred, ref.joints[:T], scored) for name, pred in preds.items()}
        people[p] = {"followed_frames": int((follows == p).sum()), "scored_frames": int(scored.sum()),
                     "methods": methods}
        per_person.append(methods)
    weights = [people[p]["scored_frames"] for p in people]
    methods = ({name: weighted_mean([m[name] for m in per_person], weights) for name in preds} if per_person
               else {})
    return ViewScores(camera.name, T, people, methods, time.perf_counter() - t0)


def mean_over_views(views: list[ViewScores]) -> dict[str, dict[str, dict[str, float]]]:
    """Each method's scores averaged over the views (each view weighs the same)."""
    views = [v for v in views if v.methods]
    if not views:
        raise DiffMeshError("no view of the recording followed a reference person; check the reference "
                            "(docs/data.md) and the run's keypoints")
    out: dict = {}
    for method in views[0].methods:
        out[method] = {}
        for joint_set, metrics in views[0].methods[method].items():
            out[method][joint_set] = {
                m: float(np.nanmean([v.methods[method][joint_set][m] for v in views])) for m in metrics
                if m != "frames"}
    return out


def describe_reference(ref: Reference) -> dict:
    seen = np.isfinite(ref.landmarks).all(-1).any(-1)
    return {"person": ref.person, "frames_seen": int(seen.sum()),
            "frames_complete": int(np.isfinite(ref.joints).all((1, 2)).sum()),
            "jitter_mm": ref.jitter_mm(), "smoothed_jitter_mm": ref.jitter_mm(SMOOTH_WINDOW),
            "view_error_px": dict(zip(ref.cameras, map(float, ref.view_error_px))),
            "views_kept": dict(zip(ref.cameras, map(float, ref.views_used[:, seen].mean((1, 2)))))}


def run_eval_video(checkpoints: list[str] | None = None, cache: str | None = None, workdir: str | None = None,
                   settings: dict | None = None, progress: bool = True) -> dict:
    """The benchmark (module docstring): a JSON-ready report."""
    t0 = time.perf_counter()
    paths = [Path(c) for c in checkpoints] if checkpoints else shipped_checkpoints()
    for p in paths:
        if not p.is_file():
            raise DiffMeshError(f"checkpoint {p} not found; pass files made by `diffmesh train` or leave "
                                f"--checkpoints out to score the shipped ones")
    refs = demo_references(cache, progress)
    with tempfile.TemporaryDirectory(prefix="diffmesh-eval-video-", dir=workdir) as tmp:
        views = []
        for c, name in enumerate(refs[0].cameras):
            views.append(score_view(refs, c, refs[0].folder / "videos" / f"{name}.mp4", paths, Path(tmp),
                                    settings or {}))
            if progress:
                print(f"  {name}: {views[-1].scored} of {views[-1].frames} frames scored "
                      f"({views[-1].seconds:.0f} s)", flush=True)
    return {
        "benchmark": "pose2sim_demo_multiperson", "version": BENCHMARK_VERSION, "settings": settings or {},
        "checkpoints": [p.name for p in paths], "one_euro": ONE_EURO,
        "fps": refs[0].fps,
        "reference": [describe_reference(r) for r in refs],
        "views": {v.view: v.as_dict() for v in views},
        "mean": mean_over_views(views),
        "seconds": time.perf_counter() - t0,
    }


def format_report(report: dict, joint_set: str = "limbs12") -> str:
    """The table: mean over views per method, then PA-MPJPE and smoothed ACC-ERR per view."""
    views = list(report["views"])
    head = ("| method | PA-MPJPE | MPJPE | ACC-ERR | ACC-ERR (smoothed ref) | "
            + " | ".join(f"{v} PA / ACC-s" for v in views) + " |")
    jitter = "; ".join(f"person {r['person']} {r['jitter_mm']:.1f} (smoothed {r['smoothed_jitter_mm']:.1f})"
                       for r in report["reference"])
    lines = [f"joint set {joint_set}; mm and mm/frame^2 at {report['fps']:.0f} fps; reference jitter: {jitter}",
             head, "|" + "---|" * (5 + len(views))]
    for method, sets in report["mean"].items():
        m = sets[joint_set]
        nan = {"pa_mpjpe": float("nan"), "acc_err_smoothed": float("nan")}
        per_view = [report["views"][v]["methods"].get(method, {}).get(joint_set, nan) for v in views]
        lines.append(f"| {method} | {m['pa_mpjpe']:.1f} | {m['mpjpe']:.1f} | {m['acc_err']:.1f} | "
                     f"{m['acc_err_smoothed']:.1f} | "
                     + " | ".join(f"{s['pa_mpjpe']:.1f} / {s['acc_err_smoothed']:.1f}" for s in per_view) + " |")
    cover = ", ".join(f"{v} " + "+".join(f"{n['scored_frames']} (person {p})"
                                         for p, n in report["views"][v]["people"].items())
                      + f" of {report['views'][v]['frames']}" for v in views)
    lines.append(f"frames scored per view: {cover}")
    return "\n".join(lines)

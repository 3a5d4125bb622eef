"""`diffmesh eval` on the rendered test split (the default): the CMU test subjects (13, 35, 55) rendered as clothed
Anny bodies from fixed seeded cameras (`diffmesh prepare --render`, docs/data.md section 3) and seen through
MediaPipe, so the inputs carry MediaPipe's real errors while the 3D truth is exact.

Each rendered (sequence, camera) goes through the same steps as `diffmesh run` after its keypoint stage: presence
(`video/presence.py`), the windows at the model's rate and the stitching (`pipeline.recover_motion`), the body's
joints (`pipeline.body_joints`). The scores are the real-video benchmark's (`real_video.score_sequence`: MPJPE
after one similarity per sequence, per-frame PA-MPJPE, ACC-ERR), against the rendered truth (the Human3.6M bone
heads in the camera frame), on the frames where the run has a body and the fit is not a glitch; MediaPipe's own
world landmarks, raw and One-Euro-filtered, are scored on the same frames.
"""

import time
from pathlib import Path

import numpy as np
import torch

from ..body import load_body
from ..checkpoint import load_model, read_checkpoint
from ..data.renders import load_render_set
from ..errors import DataError
from ..pipeline import RunSettings, body_joints, keypoints_h36m, recover_motion
from ..video.pose import PoseTrack
from ..video.presence import Presence, decide_presence
from ..windows import model_rate
from .real_video import (MEDIAPIPE_FILTERED, MEDIAPIPE_RAW, checkpoint_labels, mediapipe_world_h36m, one_euro,
                         score_sequence, shipped_checkpoints, weighted_mean)

TEST_SUBJECTS = ("13", "35", "55")
VAL_SUBJECTS = ("08", "09", "10", "39", "93")   # the mocap's validation split: for tuning, never for reporting


def test_files(cache_dir=None, limit: int | None = None, split: str = "test") -> list[dict]:
    """The render files of the test subjects, or of the validation ones (`split` "val"); evenly spaced `limit` of
    them when given."""
    subjects = {"test": TEST_SUBJECTS, "val": VAL_SUBJECTS}[split]
    files = [d for d in load_render_set(cache_dir) if str(d["sequence"]).split("_")[0] in subjects]
    if not files:
        raise DataError(f"the render cache holds none of the {split} subjects {', '.join(subjects)}; run "
                        f"`diffmesh prepare --render --subjects {','.join(subjects)}`")
    if limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, min(limit, len(files))).astype(int)]
    return files


def file_inputs(data: dict) -> tuple[PoseTrack, np.ndarray, float]:
    """A render file's MediaPipe output as the run's pose track, its timestamps and frame rate."""
    track = PoseTrack(data["mp_landmarks"], data["mp_visibility"], data["mp_world"], data["mp_returned"])
    fps = float(data["fps"])
    return track, np.arange(len(track.returned)) / fps, fps


@torch.inference_mode()
def recover_file(model, rate: float, data: dict, settings: RunSettings
                 ) -> tuple[np.ndarray, np.ndarray, Presence, PoseTrack]:
    """What `diffmesh run` makes of one render file's MediaPipe output: the body's rotations (T, K, 3, 3) and
    shapes (T, S), the presence and the pose track; `rate` is the model's frame rate (`windows.model_rate`)."""
    track, times, fps = file_inputs(data)
    presence = decide_presence(track, fps, int(data["height"]))
    rate = rate if settings.resample else None
    inputs = keypoints_h36m(track, model.cfg.keypoint_inputs)
    rotmats, shapes = recover_motion(model, inputs, times, presence, fps, rate, settings.windows,
                                     settings.batch_clips, settings.device, settings.seed)
    return rotmats, shapes, presence, track


def predict_file(model, rate: float, body, data: dict, settings: RunSettings) -> tuple[np.ndarray, np.ndarray]:
    """The model's root-relative camera-frame joints (T, 17, 3) for one render file, and where the run has a
    body."""
    rotmats, shapes, presence, _ = recover_file(model, rate, data, settings)
    joints = body_joints(body, rotmats, shapes).astype(np.float64)
    return joints - joints[:, :1], presence.valid


def load_models(checkpoints: list[Path], body, device: str) -> dict:
    """{name: (model, its frame rate)}; a missing, corrupt or unsuitable checkpoint is one line (before any data)."""
    labels = checkpoint_labels(checkpoints)
    return {label: (load_model(c, body, expect={"input": "keypoints"}).to(device),
                    model_rate(read_checkpoint(c)["config"])) for c, label in zip(checkpoints, labels)}


def score_files(models: dict, body, files: list[dict], settings: RunSettings) -> tuple[dict, int]:
    """Every model (`load_models`) and MediaPipe on every file: {method: {joint set: {metric: value}}}
    (frame-weighted over the files) and the number of frames scored."""
    per_file: dict[str, list] = {name: [] for name in [*models, MEDIAPIPE_RAW, MEDIAPIPE_FILTERED]}
    weights = []
    for data in files:
        truth = data["joints_cam"].astype(np.float64)
        truth = truth - truth[:, :1]
        preds, valid = {}, None
        for name, (model, rate) in models.items():
            preds[name], valid = predict_file(model, rate, body, data, settings)
        track, times, _ = file_inputs(data)
        world = mediapipe_world_h36m(track.world, track.visibility)
        preds[MEDIAPIPE_RAW], preds[MEDIAPIPE_FILTERED] = world, one_euro(world, times)
        scored = valid & ~data["glitch"].astype(bool) & np.isfinite(world).all((1, 2))
        if scored.sum() < 10:
            continue
        for name, pred in preds.items():
            per_file[name].append(score_sequence(pred, truth, scored))
        weights.append(int(scored.sum()))
    if not weights:
        raise DataError("no render file had ten frames with a body; check the render set (docs/data.md)")
    return {name: weighted_mean(scores, weights) for name, scores in per_file.items()}, sum(weights)


def run_render_eval(checkpoints: list[str] | None = None, cache_dir=None, limit: int | None = None,
                    settings: RunSettings | None = None) -> dict:
    """`diffmesh eval` on the rendered test split: a JSON-ready report."""
    t0 = time.perf_counter()
    paths = [Path(c) for c in checkpoints] if checkpoints else shipped_checkpoints()
    settings = settings or RunSettings()
    body = load_body("anny")
    models = load_models(paths, body, settings.device)
    files = test_files(cache_dir, limit)
    methods, frames = score_files(models, body, files, settings)
    return {"data": "renders", "subjects": list(TEST_SUBJECTS), "files": len(files), "frames_scored": frames,
            "checkpoints": [p.name for p in paths], "windows": settings.windows, "resample": settings.resample,
            "methods": methods, "seconds": time.perf_counter() - t0}


def format_render_report(report: dict) -> str:
    lines = [f"rendered test split: {report['files']} sequence-camera files, {report['frames_scored']} frames "
             f"scored; mm, ACC-ERR in mm/frame^2 at 30 fps",
             "| method | 12 limbs PA-MPJPE | MPJPE | ACC-ERR | 17 joints PA-MPJPE | MPJPE | ACC-ERR |",
             "|---|---|---|---|---|---|---|"]
    for name, sets in report["methods"].items():
        a, b = sets["limbs12"], sets["all17"]
        lines.append(f"| {name} | {a['pa_mpjpe']:.1f} | {a['mpjpe']:.1f} | {a['acc_err']:.1f} | "
                     f"{b['pa_mpjpe']:.1f} | {b['mpjpe']:.1f} | {b['acc_err']:.1f} |")
    return "\n".join(lines)

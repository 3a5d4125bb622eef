"""A video in, a smooth mesh sequence out: `diffmesh run VIDEO -o OUTDIR`.

The data's way, stage by stage (each one below is a function of this file):
1. `detect_keypoints`: PyAV decodes the frames (a background thread, rotation applied) and MediaPipe Pose finds
   one person's 33 landmarks per frame (video mode); `video/presence.py` decides in which frames a person is
   really there and where the track jumps to someone else.
2. `cut_clips`: each person's run of valid frames is cut into f-frame clips (the last one padded by repeating
   its last frame); the keypoints, mapped to the 17 Human3.6M joints, are normalised per clip as in training.
3. `recover_meshes`: DiffMesh turns every clip into per-frame bone rotations and one shape (batches of clips).
4. `solve_translation`: the body is placed in a pinhole camera (focal length: the image diagonal in pixels
   unless `--focal`, principal point at the centre) by the translation that best reprojects its joints onto
   the keypoints (weighted linear least squares per frame).
5. Outputs (`write_outputs`): result.npz, mesh.glb, motion.bvh and overlay.mp4 (a second decoding pass renders
   the mesh over each frame), all written into a staging folder that replaces OUTDIR only when complete.
Frames without a person get no body: `valid` is False there and their joints are NaN.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .body import H36M_JOINT_NAMES, load_body
from .body.base import BodyModel
from .checkpoint import load_model
from .errors import DiffMeshError
from .keypoints import mediapipe_to_h36m, normalize_clip
from .model import DiffMeshModel
from .outdir import commit_outdir, prepare_outdir
from .render import MeshRenderer, project
from .video.decode import VideoInfo, VideoWriter, iter_frames, probe_video
from .video.pose import PoseTrack, concatenate_tracks, read_track_file, track_frames
from .video.presence import Presence, decide_presence

# Joints that are the same body points in the 2D layout and the model's 3D joints (hips, knees, ankles,
# shoulders, elbows, wrists). The others are built differently on each side (2D pelvis = mid-hips, 2D head =
# mid-ears, ...), so they would bias the camera solve and the reprojection error.
SHARED_JOINTS = (1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16)
EXPORTS = ("npz", "glb", "bvh")


@dataclass
class RunSettings:
    """What `diffmesh run` does. checkpoint None = the shipped default; focal None = the image diagonal (px)."""

    checkpoint: str | None = None
    device: str = "cpu"
    body: str = "anny"
    smpl_path: str | None = None
    focal: float | None = None
    render: bool = True
    side_view: bool = False
    exports: tuple[str, ...] = EXPORTS
    save_vertices: bool = False
    batch_clips: int = 64
    seed: int = 0
    force: bool = False
    progress: bool = True


@dataclass
class RunSummary:
    video: str
    outdir: str
    frames: int
    valid_frames: int
    people: int
    fps_video: float
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def stage_fps(self) -> dict[str, float]:
        return {k: self.frames / max(v, 1e-9) for k, v in self.seconds.items()}

    def lines(self) -> list[str]:
        fps = self.stage_fps()
        total = sum(v for k, v in self.seconds.items() if k != "total")
        out = [f"{self.video}: {self.frames} frames at {self.fps_video:.2f} fps, a person in {self.valid_frames} "
               f"({self.people} track{'s' if self.people != 1 else ''})",
               "  " + ", ".join(f"{k} {fps[k]:.1f} fps" for k in self.seconds if k != "total")
               + f"; total {self.frames / max(total, 1e-9):.1f} fps ({total:.1f} s)"]
        out += [f"  wrote {Path(self.outdir) / f}" for f in self.files]
        return out


# ---------------------------------------------------------------- 1. keypoints and presence

# MediaPipe's pose graph runs on one core, so a second worker process on the second half of a video nearly
# doubles the keypoint rate on 2 cores. The worker needs ~1.5 s to start (Python, PyAV, MediaPipe), worth it
# from a few hundred frames on; it starts cold, so MediaPipe re-detects at the split (presence.py splits the
# track there if it picks someone else).
WORKER_MIN_FRAMES = 150
WORKER_STARTUP_FRAMES = 80          # frames the main process handles while the worker starts


def detect_keypoints(video: str | Path, info: VideoInfo, progress: bool = True, workers: int | None = None
                     ) -> tuple[PoseTrack, np.ndarray]:
    """MediaPipe on every frame: the pose track (T frames) and the frames' timestamps (T,) in seconds.
    `workers` None: two processes when the machine has two cores or more and the video is long enough."""
    T = info.num_frames or 0
    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 and T >= WORKER_MIN_FRAMES else 1
    if workers <= 1 or T < 2:
        return track_frames(str(video), progress=progress, total=T or None)
    split = min(T - 1, (T + WORKER_STARTUP_FRAMES) // 2)
    with tempfile.TemporaryDirectory(prefix="diffmesh-keypoints-") as tmp:
        result, log = Path(tmp) / "second_half.npz", Path(tmp) / "worker.log"
        # A plain subprocess (not multiprocessing): it never re-imports the caller's main module.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                       os.environ.get("PYTHONPATH")])))
        with open(log, "w") as log_file:
            worker = subprocess.Popen([sys.executable, "-c", "import sys; from diffmesh.video.pose import "
                                       "track_frames_to_file as run; run(*sys.argv[1:])", str(video), str(split),
                                       str(result)], stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        try:
            track_a, times_a = track_frames(str(video), 0, split, progress, total=split)
            worker.wait()
            err = log.read_text(errors="replace")
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if len(times_a) < split:                     # the video was shorter than its header said
            return track_a, times_a
        if worker.returncode != 0:
            last = [line for line in err.strip().splitlines() if line.strip()][-1:] or ["no message"]
            raise DiffMeshError(f"the keypoint worker failed on the second half of {video}: {last[0][:200]}")
        track_b, times_b = read_track_file(result)
    return concatenate_tracks([track_a, track_b]), np.concatenate([times_a, times_b])


def keypoints_h36m(track: PoseTrack) -> np.ndarray:
    """(T, 17, 3) pixels + confidence in the model's layout; frames without a pose have zeros."""
    landmarks = np.nan_to_num(track.landmarks)
    return mediapipe_to_h36m(landmarks, track.visibility)


# ---------------------------------------------------------------- 2. clips

def cut_clips(presence: Presence, num_frames: int) -> list[np.ndarray]:
    """Frame indices (f,) of each clip: every run of valid frames of one track, cut into f-frame pieces; the
    last piece of a run is padded by repeating its last frame (the padded outputs are dropped again)."""
    clips = []
    for start, stop in presence.runs():
        for a in range(start, stop, num_frames):
            idx = np.arange(a, min(a + num_frames, stop))
            clips.append(np.concatenate([idx, np.full(num_frames - len(idx), idx[-1])]))
    return clips


# ---------------------------------------------------------------- 3. the model

@torch.inference_mode()
def recover_meshes(model: DiffMeshModel, keypoints: np.ndarray, clips: list[np.ndarray], num_frames_total: int,
                   batch_clips: int = 64, device: str = "cpu", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over the clips: per-frame rotations (T, K, 3, 3) and shapes (T, S) (identity / zeros in frames
    no clip covers). Each frame takes its clip's shape."""
    model.eval()
    K, S = model.cfg.num_bones, model.cfg.num_shape
    rotmats = np.tile(np.eye(3, dtype=np.float32), (num_frames_total, K, 1, 1))
    shapes = np.zeros((num_frames_total, S), np.float32)
    g = torch.Generator(device=device).manual_seed(seed)
    for i in range(0, len(clips), batch_clips):
        batch = clips[i:i + batch_clips]
        x = np.stack([normalize_clip(keypoints[idx])[0] for idx in batch])
        out = model(torch.from_numpy(x).to(device), generator=g)
        rot, shape = out.rotmats.float().cpu().numpy(), out.shape.float().cpu().numpy()
        for c, idx in enumerate(batch):
            rotmats[idx] = rot[c]                     # padded frames write the same frame again: harmless
            shapes[idx] = shape[c]
    return rotmats, shapes


@torch.inference_mode()
def body_joints(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Human3.6M joints (T, 17, 3) of the posed body (joints only, no skinning). Frames that share a shape (a clip)
    are posed together from one rest model, which is what costs time."""
    out = np.zeros((len(rotmats), 17, 3), np.float32)
    if len(rotmats) == 0:
        return out
    unique, inverse = np.unique(shapes, axis=0, return_inverse=True)
    for u, shape in enumerate(unique):
        idx = np.where(inverse.reshape(-1) == u)[0]
        joints = body.clip_joints(torch.from_numpy(rotmats[idx])[None], torch.from_numpy(shape)[None])[0]
        out[idx] = joints.numpy()
    return out


def to_output_body(model_body: BodyModel, body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray,
                   valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Retarget the model's Anny poses (T, 24, 3, 3) and shapes (T, 6) to SMPL: SMPL rotations (T, 24, 3, 3), one
    betas vector repeated (T, 10), and the mean joint distance (mm) between the two bodies after the fit."""
    from .body.retarget import retarget_anny_to_smpl

    r = retarget_anny_to_smpl(model_body, torch.from_numpy(rotmats), torch.from_numpy(shapes), body,
                              valid=torch.from_numpy(valid))
    betas = np.repeat(r.betas.numpy()[None], len(rotmats), 0).astype(np.float32)
    return r.rotmats.numpy().astype(np.float32), betas, float(r.joint_error_mm)


@torch.inference_mode()
def root_offset(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """(T, 3) root bone head minus the Human3.6M pelvis joint. The exports place the root bone; the camera solve
    places the pelvis joint. For Anny they are the same point (zero); SMPL regresses its pelvis joint from vertices."""
    if body.name == "anny":
        return np.zeros((len(rotmats), 3), np.float32)
    out = []
    for i in range(0, len(rotmats), 256):
        posed = body(torch.from_numpy(rotmats[i:i + 256]), torch.from_numpy(shapes[i:i + 256]), with_vertices=False)
        out.append((posed.bone_heads[:, 0] - posed.joints[:, 0]).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- 4. camera

def default_focal(width: int, height: int) -> float:
    """The focal length (pixels) assumed when none is given: the image diagonal (about 47 degrees across the
    longer side of a 16:9 frame), as WHAM and GVHMR assume for unknown cameras."""
    return float(np.hypot(width, height))


def _translation_equations(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                           joint_ids: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the linear equations f (X + tx) - (u - cx)(Z + tz) = 0 (and for y) of each joint, weighted by
    the square root of its confidence: A (T, 2J, 3), b (T, 2J)."""
    X = joints[:, joint_ids].astype(np.float64)
    u = keypoints[:, joint_ids, 0] - principal[0]
    v = keypoints[:, joint_ids, 1] - principal[1]
    w = np.sqrt(np.clip(keypoints[:, joint_ids, 2], 0, 1))
    zeros, ones = np.zeros_like(u), np.ones_like(u)
    A = np.concatenate([np.stack([focal * ones, zeros, -u], -1), np.stack([zeros, focal * ones, -v], -1)], 1)
    b = np.concatenate([u * X[..., 2] - focal * X[..., 0], v * X[..., 2] - focal * X[..., 1]], 1)
    w2 = np.concatenate([w, w], 1)
    return A * w2[..., None], b * w2


def solve_translation(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                      joint_ids: tuple[int, ...] = SHARED_JOINTS, min_depth: float = 0.3) -> np.ndarray:
    """Camera-frame translation (T, 3) of root-relative joints (T, J, 3) that best reprojects them onto keypoints
    (T, J, 3) = (u, v, confidence) with a pinhole camera: confidence-weighted linear least squares, one 3x3 system
    per frame (`_translation_equations`)."""
    A, b = _translation_equations(joints, keypoints, focal, principal, joint_ids)
    AtA = A.transpose(0, 2, 1) @ A + 1e-9 * np.eye(3)
    t = np.linalg.solve(AtA, (A.transpose(0, 2, 1) @ b[..., None]))[..., 0]
    t[:, 2] = np.maximum(t[:, 2], min_depth)
    return t.astype(np.float32)


def smooth_translation(joints: np.ndarray, keypoints: np.ndarray, focal: float, principal: tuple[float, float],
                       fps: float, smoothness: float = 0.002, joint_ids: tuple[int, ...] = SHARED_JOINTS,
                       min_depth: float = 0.3) -> np.ndarray:
    """The translation of consecutive frames of one person (T, 3), solved jointly: the per-frame equations (divided
    by the per-frame depth, so their residuals are pixels) plus `smoothness` (seconds^2) times the acceleration in
    m/s^2, converted to pixels at the person's depth. Depth is what the keypoints constrain least (a 1 % change of
    scale), so without this term it jitters by decimetres from frame to frame."""
    from scipy.sparse import block_diag, diags, identity, kron, vstack
    from scipy.sparse.linalg import spsolve

    T = len(joints)
    t0 = solve_translation(joints, keypoints, focal, principal, joint_ids, min_depth).astype(np.float64)
    if T < 3:
        return t0.astype(np.float32)
    A, b = _translation_equations(joints, keypoints, focal, principal, joint_ids)
    A, b = A / t0[:, 2, None, None], b / t0[:, 2, None]
    data = block_diag(list(A), format="csr")
    second = diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(T - 2, T))               # second difference in time
    weight = smoothness * fps ** 2 * focal / np.median(t0[:, 2])                # px per (m/frame^2)
    accel = kron(second, identity(3)) * weight
    M = vstack([data, accel]).tocsc()
    rhs = np.concatenate([b.reshape(-1), np.zeros(3 * (T - 2))])
    t = spsolve((M.T @ M).tocsc(), M.T @ rhs).reshape(T, 3)
    t[:, 2] = np.maximum(t[:, 2], min_depth)
    return t.astype(np.float32)


def place_in_camera(joints: np.ndarray, keypoints: np.ndarray, presence: Presence, focal: float,
                    principal: tuple[float, float], fps: float) -> np.ndarray:
    """Translation (T, 3) for every run of valid frames of one track (`smooth_translation`); NaN elsewhere."""
    out = np.full((len(joints), 3), np.nan, np.float32)
    for start, stop in presence.runs():
        out[start:stop] = smooth_translation(joints[start:stop], keypoints[start:stop], focal, principal, fps)
    return out


def reprojection_error(joints_cam: np.ndarray, keypoints: np.ndarray, valid: np.ndarray, focal: float,
                       principal: tuple[float, float], min_confidence: float = 0.5) -> dict[str, float]:
    """Mean pixel distance between the projected model joints and the confident 2D keypoints of the shared
    joints over valid frames, also as a percentage of the person's height in the image (the keypoints' extent)."""
    ids = list(SHARED_JOINTS)
    uv = project(joints_cam[valid][:, ids], focal, principal)
    kp = keypoints[valid][:, ids]
    good = kp[..., 2] >= min_confidence
    err = np.linalg.norm(uv - kp[..., :2], axis=-1)
    height = kp[..., 1].max(1) - kp[..., 1].min(1)
    rel = err / np.maximum(height[:, None], 1.0)
    return {"px": float(err[good].mean()), "percent_of_height": float(100 * rel[good].mean()),
            "median_px": float(np.median(err[good]))}


# ---------------------------------------------------------------- 5. the whole run

def load_run_model(settings: RunSettings, body: BodyModel) -> tuple[DiffMeshModel, BodyModel, str]:
    """The checkpoint's model and the body it poses. A checkpoint trained for Anny (the shipped one) also serves
    `--body smpl`: its Anny poses are then retargeted to SMPL (`body/retarget.py`)."""
    from .checkpoint import read_checkpoint
    from .paths import DEFAULT_CHECKPOINT

    path = settings.checkpoint or DEFAULT_CHECKPOINT
    trained_for = read_checkpoint(path)["config"].get("body", "anny")
    if trained_for == body.name:
        model_body = body
    elif trained_for == "anny":
        model_body = load_body("anny")
    else:
        raise DiffMeshError(f"{path} poses {trained_for}, not {body.name}; run it with --body {trained_for}"
                            + (" --smpl-path DIR" if trained_for == "smpl" else ""))
    model = load_model(path, model_body, expect={"input": "keypoints"}).to(settings.device)
    return model, model_body, str(path)


def run_video(video: str | Path, outdir: str | Path, settings: RunSettings = RunSettings()) -> RunSummary:
    """The whole job (see the module docstring). Raises DiffMeshError with one line for the user's mistakes."""
    from .export import write_bvh, write_glb

    unknown = set(settings.exports) - set(EXPORTS)
    if unknown:
        raise DiffMeshError(f"unknown export(s) {sorted(unknown)}; choose from {','.join(EXPORTS)}")
    t_start = time.perf_counter()
    info = probe_video(video)
    final, staging = prepare_outdir(outdir, settings.force)
    try:
        seconds = {}
        t = time.perf_counter()
        body = load_body(settings.body, settings.smpl_path)
        model, model_body, ckpt = load_run_model(settings, body)
        seconds["setup"] = time.perf_counter() - t

        t = time.perf_counter()
        track, times = detect_keypoints(video, info, settings.progress)
        T = len(times)
        if T == 0:
            raise DiffMeshError(f"{video} has no decodable frames; check the file with another player")
        presence = decide_presence(track, info.fps, info.height)
        seconds["decode+keypoints"] = time.perf_counter() - t
        if not presence.valid.any():
            raise DiffMeshError(f"no person found in {video} (MediaPipe found no plausible body in any of {T} "
                                "frames); use a video in which one whole person is in view")

        t = time.perf_counter()
        keypoints = keypoints_h36m(track)
        clips = cut_clips(presence, model.cfg.num_frames)
        rotmats, shapes = recover_meshes(model, keypoints, clips, T, settings.batch_clips, settings.device,
                                         settings.seed)
        seconds["diffmesh"] = time.perf_counter() - t
        retarget_error = None
        if model_body is not body:
            t = time.perf_counter()
            rotmats, shapes, retarget_error = to_output_body(model_body, body, rotmats, shapes, presence.valid)
            seconds["retarget"] = time.perf_counter() - t

        t = time.perf_counter()
        valid = presence.valid
        focal = settings.focal or default_focal(info.width, info.height)
        principal = (info.width / 2, info.height / 2)
        joints = body_joints(body, rotmats, shapes)
        joints = joints - joints[:, :1]
        translation = place_in_camera(joints, keypoints, presence, focal, principal, info.fps)
        joints_cam = joints + translation[:, None]
        joints_cam[~valid] = np.nan
        seconds["body"] = time.perf_counter() - t

        t = time.perf_counter()
        files = []
        result = dict(
            joints3d=joints_cam.astype(np.float32), valid=valid, translation=translation,
            pose_rotmats=np.where(valid[:, None, None, None], rotmats, np.nan).astype(np.float32),
            shape=np.where(valid[:, None], shapes, np.nan).astype(np.float32),
            shape_mean=shapes[valid].mean(0).astype(np.float32),
            keypoints2d=keypoints, landmarks2d=np.concatenate([track.landmarks, track.visibility[..., None]], -1),
            mediapipe_world=track.world, track_id=presence.track_id, timestamps=times,
            fps=np.float64(info.fps), image_size=np.array([info.width, info.height]),
            focal=np.float64(focal), principal=np.array(principal),
            body_model=np.str_(body.name), body_version=np.str_(body.version),
            bone_names=np.array(body.skeleton().names), bone_parents=np.array(body.skeleton().parents),
            joint_names=np.array(H36M_JOINT_NAMES), checkpoint=np.str_(Path(ckpt).name),
            method=np.str_(model.cfg.method), reprojection=np.str_(json.dumps(
                reprojection_error(joints_cam, keypoints, valid, focal, principal))),
        )
        if retarget_error is not None:
            result["retarget_error_mm"] = np.float64(retarget_error)
        if settings.save_vertices:
            result["vertices"] = np.concatenate([
                body_vertices(body, rotmats[i:i + 256], shapes[i:i + 256], translation[i:i + 256],
                              valid[i:i + 256]).astype(np.float16) for i in range(0, T, 256)])
            result["faces"] = body.faces.cpu().numpy().astype(np.int32)
        if "npz" in settings.exports:
            np.savez_compressed(staging / "result.npz", **result)
            files.append("result.npz")
        root_translation = np.where(valid[:, None], translation + root_offset(body, rotmats, shapes), 0
                                    ).astype(np.float32)
        if "glb" in settings.exports:
            write_glb(staging / "mesh.glb", body, rotmats, result["shape_mean"], root_translation, info.fps, valid)
            files.append("mesh.glb")
        if "bvh" in settings.exports:
            write_bvh(staging / "motion.bvh", body, rotmats, result["shape_mean"], root_translation, info.fps, valid)
            files.append("motion.bvh")
        seconds["export"] = time.perf_counter() - t

        if settings.render:
            t = time.perf_counter()
            render_overlay(video, staging / "overlay.mp4", info, body, rotmats, shapes, translation, valid, focal,
                           principal, settings.side_view, settings.progress)
            files.append("overlay.mp4")
            seconds["render"] = time.perf_counter() - t
        commit_outdir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds["total"] = time.perf_counter() - t_start
    return RunSummary(str(video), str(final), T, int(valid.sum()), presence.num_tracks, info.fps, seconds, files)


@torch.inference_mode()
def body_vertices(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray, translation: np.ndarray,
                  valid: np.ndarray, batch: int = 64) -> np.ndarray:
    """Camera-frame vertices (T, V, 3) of the valid frames (NaN elsewhere), root at `translation`."""
    T = len(rotmats)
    out = np.full((T, body.num_vertices, 3), np.nan, np.float32)
    idx = np.where(valid)[0]
    for i in range(0, len(idx), batch):
        sel = idx[i:i + batch]
        posed = body(torch.from_numpy(rotmats[sel]), torch.from_numpy(shapes[sel]))
        root = posed.joints[:, :1]
        out[sel] = (posed.vertices - root).numpy() + translation[sel, None]
    return out


def render_overlay(video, path: Path, info: VideoInfo, body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray,
                   translation: np.ndarray, valid: np.ndarray, focal: float, principal: tuple[float, float],
                   side_view: bool, progress: bool, chunk: int = 32) -> None:
    """Second decoding pass: the mesh drawn over every frame (frames without a person pass through unchanged).
    Vertices are made `chunk` frames at a time, so memory does not grow with the video's length."""
    renderer = MeshRenderer(info.width, info.height, body.faces.cpu().numpy(), focal, principal)
    vertices, first = None, -chunk
    side_size = (info.height * 3 // 4 // 2 * 2, info.height)
    # superfast: 20 % less encoding time than veryfast at the same quality (CRF), for somewhat larger files.
    with VideoWriter(path, info.rate or info.fps, info.width + (side_size[0] if side_view else 0), info.height,
                     preset="superfast") as writer:
        for frame in tqdm(iter_frames(video), total=len(valid), desc="render", unit="frame", disable=not progress,
                          leave=False):
            i = frame.index
            ok = i < len(valid) and valid[i]
            if ok and i >= first + chunk:
                first = i
                sl = slice(i, i + chunk)
                vertices = body_vertices(body, rotmats[sl], shapes[sl], translation[sl], valid[sl])
            image = renderer.render(vertices[i - first] if ok else None, frame.rgb)
            if side_view:
                side = (renderer.render_side(vertices[i - first], side_size) if ok
                        else np.zeros((side_size[1], side_size[0], 3), np.uint8))
                image = np.concatenate([image, side], 1)
            writer.write(image)

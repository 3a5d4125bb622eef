"""A video in, a smooth mesh sequence out: `diffmesh run VIDEO -o OUTDIR`. `run_video` at the bottom of this
file is the whole chain; each stage is one call, in this order:

1. keypoints (`video/detect.py`): PyAV decodes the frames (a background thread, rotation applied) and MediaPipe
   Pose finds one person's 33 landmarks per frame (video mode, two processes on long videos);
   `video/presence.py` decides in which frames a person is really there and where the track jumps to someone else.
2. windows (`windows.py`): each person's run of valid frames is put on the model's time grid (the checkpoint's
   training rate, 30 fps, from the frames' real timestamps; `--no-resample` keeps the video's frames) and cut
   into f-sample windows: disjoint ("independent"), or overlapping by half and cross-faded ("blended", the
   default; "chained" also hands each window's reverse chain the state of the window after it). The keypoints,
   mapped to the 17 Human3.6M joints, are normalized per window as in training.
3. `recover_motion`: DiffMesh turns every window into per-sample bone rotations and one shape (batches of
   windows); the windows are stitched per run, the rotations slerped back to every video frame, and each person
   (presence track) gets one shape, the mean of its windows'; `to_output_body` retargets them when the output
   body (SMPL) is not the one the checkpoint poses.
4. `place_body` (`camera.py`): the body is placed in a pinhole camera (focal length: the image diagonal in pixels
   unless `--focal`, principal point at the centre) by the translation that best reprojects its joints onto
   the keypoints, smoothed over each run of frames.
   Then `find_world` (`world.py`): gravity from the bodies and the ground from their planted feet, a z-up world
   that result.npz, the GLB and the BVH use where one is found (a static camera).
5. outputs: `make_result` (`result.py`: result.npz), `write_exports` (mesh.glb, motion.bvh) and
   `overlay.render_overlay` (overlay.mp4, a second decoding pass), all into a staging folder that replaces OUTDIR only
   when complete (`outdir.py`).
Frames without a person get no body: `valid` is False there and their joints are NaN.

Several people (`--max-people`, `--person`): stage 1 is `find_people` (MediaPipe's multi-person landmarker on the
frame and its crops, tracks by `video/people.py`, presence per track), stages 2-4 run per person
(`recover_person`) in the one camera, and the outputs hold everyone (result.npz version 2, one armature per person
in mesh.glb, a BVH per person, one colour per person in the overlay).
"""

import functools
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .body import H36M_JOINT_NAMES, load_body
from .body.base import BodyModel, joints_per_shape
from .camera import default_focal, place_in_camera, reprojection_error
from .checkpoint import load_model, read_checkpoint
from .errors import DiffMeshError
from .export import write_bvh, write_glb_people
from .keypoints import model_keypoints, normalize_clip
from .model import DiffMeshModel
from .outdir import staged_outdir
from .overlay import render_overlay
from .paths import DEFAULT_CHECKPOINT
from .predict import predict_clips
from .result import Result, save_people
from .run_settings import EXPORTS, RunSettings, RunSummary
from .top_view import TopView
from .video.camera_motion import MOVING_DRIFT, MotionProbe, camera_drift
from .video.decode import VideoInfo, probe_video
from .video.detect import detect_keypoints
from .video.people import detect_tracks
from .video.pose import PoseTrack
from .video.presence import Presence, decide_presence
from .rotations import interpolate, slerp_at
from .world import Settled, World, ankle_height, fit_ground, for_exports, lock_feet, settle_feet
from .windows import (DEFAULT_WINDOWS, WINDOW_MODES, RunPlan, model_rate, person_shapes, plan_runs, stitch,
                      window_samples, window_weights)

@dataclass
class Camera:
    """The pinhole camera of a run (pixels)."""

    focal: float
    principal: tuple[float, float]

    @classmethod
    def for_video(cls, info: VideoInfo, focal: float | None) -> "Camera":
        return cls(focal or default_focal(info.width, info.height), (info.width / 2, info.height / 2))


@dataclass
class Motion:
    """One person's body over the video's T frames: rotations (T, K, 3, 3), shapes (T, S), camera-frame
    translation (T, 3) and joints (T, 17, 3) (NaN where not valid), valid (T,)."""

    rotmats: np.ndarray
    shapes: np.ndarray
    translation: np.ndarray
    joints_cam: np.ndarray
    valid: np.ndarray


# ---------------------------------------------------------------- 1. keypoints and presence

def find_person(video: str | Path, info: VideoInfo, progress: bool, workers: int | None = None,
                probe: MotionProbe | None = None) -> tuple[PoseTrack, np.ndarray, Presence]:
    """MediaPipe on every frame (`workers` processes, as `detect_keypoints` chooses when None), then presence: the
    track, the frames' timestamps (T,) and where a person is. `probe` keeps thumbnails for the camera-motion test."""
    track, times = detect_keypoints(video, info, progress, workers, probe)
    if len(times) == 0:
        raise DiffMeshError(f"{video} has no decodable frames; check the file with another player")
    return track, times, decide_presence(track, info.fps, info.height)


def find_people(video: str | Path, info: VideoInfo, settings: RunSettings, probe: MotionProbe | None = None
                ) -> tuple[list[tuple[PoseTrack, Presence]], list[int], np.ndarray]:
    """Stage 1 for every person: each person's track with its own presence, their ids and the frames'
    timestamps. One person (`max_people` 1, no `person`): MediaPipe's single-person tracker (`find_person`), id 0;
    else the multi-person landmarker and tracks (`video/people.py`), minus the tracks in which presence finds no
    real person (no body is made for them)."""
    if not settings.several_people:
        track, times, presence = find_person(video, info, settings.progress, settings.keypoint_workers, probe)
        return [(track, presence)], [0], times
    tracks, ids, times = detect_tracks(video, info, settings.progress, settings.max_people or None, settings.person,
                                       probe=probe, workers=settings.keypoint_workers)
    if len(times) == 0:
        raise DiffMeshError(f"{video} has no decodable frames; check the file with another player")
    people = [(track, decide_presence(track, info.fps, info.height)) for track in tracks]
    keep = [k for k, (_, presence) in enumerate(people) if presence.valid.any()]
    return [people[k] for k in keep], [ids[k] for k in keep], times


def keypoints_h36m(track: PoseTrack, inputs: str = "2d+vis") -> np.ndarray:
    """(T, 17, C) pixels + confidence in the model's layout (and MediaPipe's root-relative world joints for a
    "2d+3d" model: `keypoints.model_keypoints`); frames without a pose have zeros."""
    return model_keypoints(track.landmarks, track.visibility, track.world, inputs)


# ---------------------------------------------------------------- 2. windows

def cut_clips(presence: Presence, num_frames: int) -> list[np.ndarray]:
    """Frame indices (f,) of each clip: every run of valid frames of one track, cut into f-frame pieces; the
    last piece of a run is padded by repeating its last frame (the padded outputs are dropped again). The clips
    of `windows="independent", resample=False`, for callers that run the model on explicit clips."""
    clips = []
    for start, stop in presence.runs():
        for a in range(start, stop, num_frames):
            idx = np.arange(a, min(a + num_frames, stop))
            clips.append(np.concatenate([idx, np.full(num_frames - len(idx), idx[-1])]))
    return clips


def window_inputs(keypoints: np.ndarray, plans: list[RunPlan], num_frames: int) -> np.ndarray:
    """The model's inputs (W, f, 17, C), one per window in plan order: each run's keypoints (T, 17, C) on its
    grid (linear interpolation between frames), each window normalized on its own as in training."""
    x = []
    for plan in plans:
        samples = interpolate(keypoints[plan.start:plan.stop], plan.grid.frame_at_sample)
        m = plan.grid.num_samples
        x += [normalize_clip(samples[window_samples(int(s), num_frames, m)])[0] for s in plan.starts]
    return np.stack(x).astype(np.float32) if x else np.zeros((0, num_frames, *keypoints.shape[1:]), np.float32)


# ---------------------------------------------------------------- 3. the model

def load_run_model(settings: RunSettings, body: BodyModel) -> tuple[DiffMeshModel, BodyModel, str, float]:
    """The checkpoint's model, the body it poses and the frame rate it expects (`windows.model_rate`). A
    checkpoint trained for Anny (the shipped one) also serves `--body smpl`: its Anny poses are then retargeted
    to SMPL (`body/retarget.py`)."""
    path = settings.checkpoint or DEFAULT_CHECKPOINT
    config = read_checkpoint(path)["config"]
    trained_for = config.get("body", "anny")
    if trained_for == body.name:
        model_body = body
    elif trained_for == "anny":
        model_body = load_body("anny")
    else:
        raise DiffMeshError(f"{path} poses {trained_for}, not {body.name}; run it with --body {trained_for}"
                            + (" --smpl-path DIR" if trained_for == "smpl" else ""))
    model = load_model(path, model_body, expect={"input": "keypoints"}).to(settings.device)
    return model, model_body, str(path), model_rate(config)


def _file_stamp(path: str | Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


@functools.lru_cache(maxsize=1)
def _cached_parts(choice: tuple[str | None, str, str, str | None], stamps: tuple
                  ) -> tuple[BodyModel, DiffMeshModel, BodyModel, str, float]:
    checkpoint, device, body_name, smpl_path = choice
    body = load_body(body_name, smpl_path)
    settings = RunSettings(checkpoint=checkpoint, device=device, body=body_name, smpl_path=smpl_path)
    return (body, *load_run_model(settings, body))


def load_run_parts(settings: RunSettings) -> tuple[BodyModel, DiffMeshModel, BodyModel, str, float]:
    """The output body, the model, the body it poses, the checkpoint's path and its rate. A process that runs
    many videos (a `diffmesh batch` worker) loads them once: the last set is kept, keyed by the settings that
    choose them and by the files' modification times, so a rewritten checkpoint or SMPL file is read again.
    Nothing downstream changes them (inference only), so sharing them between videos is safe."""
    choice = (settings.checkpoint and str(settings.checkpoint), settings.device, settings.body,
              settings.smpl_path and str(settings.smpl_path))
    stamps = (_file_stamp(settings.checkpoint or DEFAULT_CHECKPOINT), _file_stamp(settings.smpl_path))
    return _cached_parts(choice, stamps)


@torch.inference_mode()
def predict_chained(model: DiffMeshModel, x: np.ndarray, plans: list[RunPlan], batch_clips: int = 64,
                    device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """DiffMesh on the windows of each run from its last to its first: the last window's chain starts at x_end,
    every other window's at the state its successor's chain reached at the sample after the window's last
    (`DiffMeshModel.chain_from`). The windows of one rank from the end run as one batch across runs.
    Returns rotmats (C, f, K, 3, 3) and shapes (C, S) in plan order."""
    model.eval()
    f = model.cfg.num_frames
    first = np.cumsum([0] + [len(p.starts) for p in plans])
    rot: list = [None] * len(x)
    shape: list = [None] * len(x)
    inputs, handed = torch.as_tensor(x), {}
    for rank in range(max((len(p.starts) for p in plans), default=0)):
        jobs = []                                             # (window, state handed to its chain or None)
        for p, plan in enumerate(plans):
            w = len(plan.starts) - 1 - rank
            if w >= 0:
                g = int(first[p] + w)
                j = int(plan.starts[w] + f - plan.starts[w + 1]) if rank else 0
                jobs.append((g, handed[g + 1][j] if rank else None))
        handed = {}
        for i in range(0, len(jobs), batch_clips):
            ids = [g for g, _ in jobs[i:i + batch_clips]]
            start = torch.stack([s for _, s in jobs[i:i + batch_clips]]).to(device) if rank else None
            out, states = model.chain_from(inputs[ids].to(device), start)
            for k, g in enumerate(ids):
                rot[g], shape[g], handed[g] = out.rotmats[k].cpu(), out.shape[k].cpu(), states[k]
    return torch.stack(rot).float().numpy(), torch.stack(shape).float().numpy()


def predict_windows(model: DiffMeshModel, x: np.ndarray, plans: list[RunPlan], windows: str, batch_clips: int = 64,
                    device: str = "cpu", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rotations (C, f, K, 3, 3) and shapes (C, S) of the windows: chained for DiffMesh with `windows="chained"`
    (other methods have no chain to hand over and run as blended), else every window on its own."""
    if windows == "chained" and model.cfg.method == "diffmesh":
        return predict_chained(model, x, plans, batch_clips, device)
    out = predict_clips(model, None, x, batch_size=batch_clips, seed=seed, device=device, with_joints=False)
    return out["rotmats"].float().numpy(), out["shape"].float().numpy()


def recover_motion(model: DiffMeshModel, keypoints: np.ndarray, times: np.ndarray, presence: Presence, fps: float,
                   rate: float | None, windows: str = DEFAULT_WINDOWS, batch_clips: int = 64, device: str = "cpu",
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The model over every person's runs: per-frame rotations (T, K, 3, 3) and shapes (T, S) (identity / zeros
    in frames no run covers). Each run is put on the model's grid at `rate` fps (None: the video's frames) and cut
    into `windows`; the windows' rotations are stitched per sample (`windows.stitch`) and slerped back to the
    run's frames, and every frame of a track gets the track's one shape (`windows.person_shapes`)."""
    K, S, f = model.cfg.num_bones, model.cfg.num_shape, model.cfg.num_frames
    T = len(times)
    rotmats = np.tile(np.eye(3, dtype=np.float32), (T, K, 1, 1))
    shapes = np.zeros((T, S), np.float32)
    plans = plan_runs(presence, times, fps, f, rate, windows)
    if not plans:
        return rotmats, shapes
    rot, shape = predict_windows(model, window_inputs(keypoints, plans, f), plans, windows, batch_clips, device,
                                 seed)
    weights = window_weights(f, windows)
    real, tracks, c = [], [], 0
    for plan in plans:
        W, m = len(plan.starts), plan.grid.num_samples
        per_sample = stitch(rot[c:c + W], plan.starts, m, weights)
        rotmats[plan.start:plan.stop] = slerp_at(per_sample, plan.grid.sample_at_frame)
        real += [min(f, m - int(s)) for s in plan.starts]
        tracks += [plan.track] * W
        c += W
    person = person_shapes(shape, np.array(real), np.array(tracks))
    for plan in plans:
        shapes[plan.start:plan.stop] = person[plan.track]
    return rotmats, shapes


def recover_meshes(model: DiffMeshModel, keypoints: np.ndarray, clips: list[np.ndarray], num_frames_total: int,
                   batch_clips: int = 64, device: str = "cpu", seed: int = 0,
                   track_id: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The model on explicit clips (f,) of frame indices (`cut_clips`): per-frame rotations (T, K, 3, 3), each frame
    from its first position in a clip (a padded tail repeats the last frame, whose output is its real one), and
    one shape per track (`track_id` (T,); None: one person), the mean of its clips' weighted by their real frames.
    Identity / zeros in frames no clip covers."""
    K, S = model.cfg.num_bones, model.cfg.num_shape
    rotmats = np.tile(np.eye(3, dtype=np.float32), (num_frames_total, K, 1, 1))
    shapes = np.zeros((num_frames_total, S), np.float32)
    if not clips:
        return rotmats, shapes
    x = np.stack([normalize_clip(keypoints[idx])[0] for idx in clips])
    rot, shape = predict_windows(model, x, [], "independent", batch_clips, device, seed)
    track_id = np.zeros(num_frames_total, np.int64) if track_id is None else np.asarray(track_id)
    real, tracks = [], []
    for c, idx in enumerate(clips):
        frames, first = np.unique(idx, return_index=True)
        rotmats[frames] = rot[c, first]
        real.append(len(frames))
        tracks.append(track_id[idx[0]])
    person = person_shapes(shape, np.array(real), np.array(tracks))
    for idx in clips:
        shapes[idx] = person[int(track_id[idx[0]])]
    return rotmats, shapes


# Human3.6M joints (T, 17, 3) of posed frames, one rest model per person's shape (`body.base.joints_per_shape`)
body_joints = joints_per_shape


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
    parts = body.pose_in_chunks(torch.from_numpy(rotmats), torch.from_numpy(shapes), chunk=256, with_vertices=False)
    return np.concatenate([(posed.bone_heads[:, 0] - posed.joints[:, 0]).numpy() for _, posed in parts])


@torch.inference_mode()
def body_vertices(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray, translation: np.ndarray,
                  valid: np.ndarray, batch: int = 64) -> np.ndarray:
    """Camera-frame vertices (T, V, 3) of the valid frames (NaN elsewhere), root at `translation`."""
    out = np.full((len(rotmats), body.num_vertices, 3), np.nan, np.float32)
    idx = np.where(valid)[0]
    parts = body.pose_in_chunks(torch.from_numpy(rotmats[idx]), torch.from_numpy(shapes[idx]), chunk=batch)
    for part, posed in parts:
        sel = idx[part]
        out[sel] = (posed.vertices - posed.joints[:, :1]).numpy() + translation[sel, None]
    return out


# ---------------------------------------------------------------- 4. camera

def place_body(body: BodyModel, rotmats: np.ndarray, shapes: np.ndarray, keypoints: np.ndarray, presence: Presence,
               camera: Camera, fps: float) -> Motion:
    """The posed joints, root-relative, moved to the translation that reprojects them onto the keypoints."""
    joints = body_joints(body, rotmats, shapes)
    joints = joints - joints[:, :1]
    translation = place_in_camera(joints, keypoints, presence.runs(), camera.focal, camera.principal, fps)
    joints_cam = joints + translation[:, None]
    joints_cam[~presence.valid] = np.nan
    return Motion(rotmats, shapes, translation, joints_cam, presence.valid)


def find_world(body: BodyModel, recovered: list[tuple[np.ndarray, Motion, float | None]], fps: float,
               drift: float = 0.0) -> tuple[World | None, list[Settled | None]]:
    """Stage 4b: the ground and a z-up world frame from everyone's planted feet (`world.py`), for a static camera,
    each person placed in it with planted feet held still on their level (`world.settle_feet`) and their legs
    turned so that those feet stay exactly there (`world.lock_feet`): the world outputs. (None, ...) without enough
    evidence or when the camera moved (`drift`, `video/camera_motion.py`): the outputs then stay in the camera frame."""
    if drift > MOVING_DRIFT:
        return None, [None] * len(recovered)
    people = [(m.joints_cam, keypoints, m.valid, ankle_height(body, m.shapes[m.valid].mean(0)) if m.valid.any()
               else 0.0) for keypoints, m, _ in recovered]
    world = fit_ground([p for p in people if p[2].any()], fps)
    if world is None:
        return None, [None] * len(people)
    return world, [lock_feet(world, body, m.rotmats, m.shapes, m.translation, m.valid, settle_feet(world, *p, fps),
                             p[3]) for (_, m, _), p in zip(recovered, people)]


# ---------------------------------------------------------------- 5. outputs

def make_result(track: PoseTrack, times: np.ndarray, presence: Presence, keypoints: np.ndarray, motion: Motion,
                camera: Camera, info: VideoInfo, body: BodyModel, model: DiffMeshModel, checkpoint: str,
                retarget_error: float | None, save_vertices: bool, world: World | None = None,
                settled: Settled | None = None, drift: float | None = None) -> Result:
    valid, skeleton = motion.valid, body.skeleton()
    vertices = faces = None
    if save_vertices:                                # 256 frames at a time: float32 vertices of long videos are big
        vertices = np.concatenate([
            body_vertices(body, motion.rotmats[i:i + 256], motion.shapes[i:i + 256], motion.translation[i:i + 256],
                          valid[i:i + 256]).astype(np.float16) for i in range(0, len(valid), 256)])
        faces = body.faces.cpu().numpy().astype(np.int32)
    return Result(
        valid=valid, joints3d=motion.joints_cam.astype(np.float32), translation=motion.translation,
        pose_rotmats=np.where(valid[:, None, None, None], motion.rotmats, np.nan).astype(np.float32),
        shape=np.where(valid[:, None], motion.shapes, np.nan).astype(np.float32),
        shape_mean=motion.shapes[valid].mean(0).astype(np.float32),
        keypoints2d=keypoints, landmarks2d=np.concatenate([track.landmarks, track.visibility[..., None]], -1),
        mediapipe_world=track.world, track_id=presence.track_id, timestamps=times, fps=info.fps,
        image_size=np.array([info.width, info.height]), focal=camera.focal, principal=np.array(camera.principal),
        body_model=body.name, body_version=body.version, bone_names=np.array(skeleton.names),
        bone_parents=np.array(skeleton.parents), joint_names=np.array(H36M_JOINT_NAMES),
        checkpoint=Path(checkpoint).name, method=model.cfg.method,
        reprojection=reprojection_error(motion.joints_cam, keypoints, valid, camera.focal, camera.principal),
        retarget_error_mm=retarget_error, vertices=vertices, faces=faces,
        world_from_camera=None if world is None else world.world_from_camera,
        joints3d_world=None if settled is None else settled.joints_world,
        foot_contacts=None if settled is None else settled.contacts,
        camera_height_m=None if world is None else world.camera_height_m, camera_drift=drift)


def _root_translation(body: BodyModel, motion: Motion) -> np.ndarray:
    """(T, 3) the root bone head in the camera (zeros where no body), what the exports place."""
    offset = root_offset(body, motion.rotmats, motion.shapes)
    return np.where(motion.valid[:, None], motion.translation + offset, 0).astype(np.float32)


def write_exports(staging: Path, exports: tuple[str, ...], results: list[Result], ids: list[int], body: BodyModel,
                  motions: list[Motion], fps: float, several: bool = False, world: World | None = None,
                  settled: list[Settled] | None = None) -> list[str]:
    """result.npz, mesh.glb and motion.bvh (those asked for) into `staging`; returns the file names written. One
    person: result.npz version 1, one armature, motion.bvh. Several (`several`): result.npz version 2 with a person
    axis, one armature per person ("person<id>") in mesh.glb, motion_person<id>.bvh each. With a `world`, the GLB
    and BVH are in it (Y up along gravity, the ground at Y = 0) with each body where `settled` (one per motion,
    given with the world) placed it, else in the camera frame."""
    files = []
    if "npz" in exports:
        if several:
            save_people(staging / "result.npz", results, ids)
        else:
            results[0].save(staging / "result.npz")
        files.append("result.npz")
    moved = [(m.rotmats, _root_translation(body, m)) for m in motions]
    if world is not None:                  # frames without a body hold the last pose (export.py): any value does
        moved = [for_exports(world, s.rotmats, root + world.vectors_in_camera(s.shift))
                 for (_, root), s in zip(moved, settled)]
    if "glb" in exports:
        write_glb_people(staging / "mesh.glb", body, [(rotmats, r.shape_mean, root, m.valid) for (rotmats, root), m, r
                                                      in zip(moved, motions, results)], fps,
                         names=[f"person{i}" for i in ids] if several else [""])
        files.append("mesh.glb")
    if "topview" in exports and world is not None:
        top_view(results, ids, settled).save_png(staging / "topview.png")
        files.append("topview.png")
    if "bvh" in exports:
        for i, (rotmats, root), motion, result in zip(ids, moved, motions, results):
            name = f"motion_person{i}.bvh" if several else "motion.bvh"
            write_bvh(staging / name, body, rotmats, result.shape_mean, root, fps, motion.valid)
            files.append(name)
    return files


def top_view(results: list[Result], ids: list[int], settled: list[Settled]) -> TopView:
    """The world from above (`top_view.py`) with everyone's settled path, for topview.png and the overlay's panel."""
    r = results[0]
    return TopView([(i, s.joints_world, res.valid, s.contacts, res.track_id) for i, res, s in zip(ids, results, settled)
                    if s is not None],
                   r.world_from_camera, r.focal, int(r.image_size[0]))


class Stopwatch:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self, on_stage=None):
        self.seconds: dict[str, float] = {}
        self.on_stage = on_stage

    @contextmanager
    def __call__(self, stage: str):
        if self.on_stage is not None:
            self.on_stage(stage)
        t = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t   # summed over people


def recover_person(parts: tuple, track: PoseTrack, presence: Presence, times: np.ndarray, info: VideoInfo,
                   camera: Camera, settings: RunSettings, clock: Stopwatch) -> tuple[np.ndarray, Motion, float | None]:
    """Stages 2-4 for one person: the keypoints (T, 17, 3) in the 2D layout, the body's motion in the camera and
    the retargeting error (None unless the output body is not the checkpoint's)."""
    body, model, model_body, _, rate = parts
    with clock("diffmesh"):
        keypoints = keypoints_h36m(track)
        rotmats, shapes = recover_motion(model, keypoints_h36m(track, model.cfg.keypoint_inputs), times, presence,
                                         info.fps, rate if settings.resample else None, settings.windows,
                                         settings.batch_clips, settings.device, settings.seed)
    retarget_error = None
    if model_body is not body:
        with clock("retarget"):
            rotmats, shapes, retarget_error = to_output_body(model_body, body, rotmats, shapes, presence.valid)
    with clock("body"):
        motion = place_body(body, rotmats, shapes, keypoints, presence, camera, info.fps)
    return keypoints, motion, retarget_error


def run_video(video: str | Path, outdir: str | Path, settings: RunSettings = RunSettings()) -> RunSummary:
    """The whole job (see the module docstring). Raises DiffMeshError with one line for the user's mistakes."""
    unknown = set(settings.exports) - set(EXPORTS)
    if unknown:
        raise DiffMeshError(f"unknown export(s) {sorted(unknown)}; choose from {','.join(EXPORTS)}")
    if settings.windows not in WINDOW_MODES:
        raise DiffMeshError(f"unknown windows {settings.windows!r}; choose from {', '.join(WINDOW_MODES)}")
    if settings.max_people < 0:
        raise DiffMeshError(f"--max-people must be 0 (everyone) or a positive number, got {settings.max_people}")
    t_start = time.perf_counter()
    info = probe_video(video)
    clock, probe = Stopwatch(settings.on_stage), MotionProbe()
    with staged_outdir(outdir, settings.force) as staging:
        with clock("setup"):
            parts = load_run_parts(settings)
        with clock("decode+keypoints"):
            people, ids, times = find_people(video, info, settings, probe)
        if not any(presence.valid.any() for _, presence in people):
            who = f"person {settings.person}" if settings.person is not None else "person"
            raise DiffMeshError(f"no {who} found in {video} (MediaPipe found no plausible body in any of "
                                f"{len(times)} frames); use a video in which one whole person is in view")
        camera = Camera.for_video(info, settings.focal)
        recovered = [recover_person(parts, track, presence, times, info, camera, settings, clock)
                     for track, presence in people]
        body, model, _, checkpoint, _ = parts
        with clock("world"):
            drift = camera_drift(probe.thumbnails(), [track.landmarks for track, _ in people])
            world, settled = find_world(body, recovered, info.fps, drift)
        with clock("export"):
            results = [make_result(track, times, presence, keypoints, motion, camera, info, body, model, checkpoint,
                                   error, settings.save_vertices, world, placed, drift)
                       for (track, presence), (keypoints, motion, error), placed in zip(people, recovered, settled)]
            motions = [motion for _, motion, _ in recovered]
            several = len(people) > 1            # one person kept (one found, or --person): the one-person files
            files = write_exports(staging, settings.exports, results, ids, body, motions, info.fps, several, world,
                                  settled)
        if settings.render:
            with clock("render"):
                panels = top_view(results, ids, settled) if settings.top_view and world is not None else None
                render_overlay(video, staging / "overlay.mp4", info, body, motions, camera, settings.side_view,
                               settings.progress, top_view=panels)
            files.append("overlay.mp4")
    clock.seconds["total"] = time.perf_counter() - t_start
    valid = np.any([m.valid for m in motions], axis=0)
    tracks = people[0][1].num_tracks if not several else len(people)
    return RunSummary(str(video), str(Path(outdir)), len(times), int(valid.sum()), tracks, info.fps, clock.seconds,
                      files, run_warnings(drift, world, settings))


def run_warnings(drift: float, world: World | None, settings: RunSettings) -> list[str]:
    """What a user should be told about the outputs of a run that worked."""
    out = []
    if drift > MOVING_DRIFT:
        out.append(f"the camera moves (the view drifts by {drift:.0%} of the image width): the world frame needs a "
                   "static camera, so the outputs stay in the camera frame (no ground, no foot contacts, no top view)")
    elif world is None and ("topview" in settings.exports or settings.top_view):
        out.append("no ground found (nobody plants a foot long enough): the outputs stay in the camera frame and "
                   "there is no top view")
    return out

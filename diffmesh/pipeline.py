"""A video in, a smooth mesh sequence out: `diffmesh run VIDEO -o OUTDIR`. `run_video` at the bottom of this
file is the whole chain; each stage is one call, in this order:

1. keypoints (`video/detect.py`): PyAV decodes the frames (a background thread, rotation applied) and MediaPipe
   Pose finds one person's 33 landmarks per frame (video mode, two processes on long videos);
   `video/presence.py` decides in which frames a person is really there and where the track jumps to someone else.
2. `cut_clips`: each person's run of valid frames is cut into f-frame clips (the last one padded by repeating
   its last frame); the keypoints, mapped to the 17 Human3.6M joints, are normalized per clip as in training.
3. `recover_meshes`: DiffMesh turns every clip into per-frame bone rotations and one shape (batches of clips);
   `to_output_body` retargets them when the output body (SMPL) is not the one the checkpoint poses.
4. `place_body` (`camera.py`): the body is placed in a pinhole camera (focal length: the image diagonal in pixels
   unless `--focal`, principal point at the centre) by the translation that best reprojects its joints onto
   the keypoints, smoothed over each run of frames.
5. outputs: `make_result` (`result.py`: result.npz), `write_exports` (mesh.glb, motion.bvh) and
   `render_overlay` (overlay.mp4, a second decoding pass), all into a staging folder that replaces OUTDIR only
   when complete (`outdir.py`).
Frames without a person get no body: `valid` is False there and their joints are NaN.
"""

import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .body import H36M_JOINT_NAMES, load_body
from .body.base import BodyModel
from .camera import default_focal, place_in_camera, reprojection_error
from .checkpoint import load_model, read_checkpoint
from .errors import DiffMeshError
from .export import write_bvh, write_glb
from .keypoints import mediapipe_to_h36m, normalize_clip
from .model import DiffMeshModel
from .outdir import commit_outdir, prepare_outdir
from .paths import DEFAULT_CHECKPOINT
from .predict import predict_clips
from .render import MeshRenderer
from .result import Result
from .video.decode import VideoInfo, VideoWriter, iter_frames, probe_video
from .video.detect import detect_keypoints
from .video.pose import PoseTrack
from .video.presence import Presence, decide_presence

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

def find_person(video: str | Path, info: VideoInfo, progress: bool) -> tuple[PoseTrack, np.ndarray, Presence]:
    """MediaPipe on every frame, then presence: the track, the frames' timestamps (T,) and where a person is."""
    track, times = detect_keypoints(video, info, progress)
    if len(times) == 0:
        raise DiffMeshError(f"{video} has no decodable frames; check the file with another player")
    return track, times, decide_presence(track, info.fps, info.height)


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

def load_run_model(settings: RunSettings, body: BodyModel) -> tuple[DiffMeshModel, BodyModel, str]:
    """The checkpoint's model and the body it poses. A checkpoint trained for Anny (the shipped one) also serves
    `--body smpl`: its Anny poses are then retargeted to SMPL (`body/retarget.py`)."""
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


def recover_meshes(model: DiffMeshModel, keypoints: np.ndarray, clips: list[np.ndarray], num_frames_total: int,
                   batch_clips: int = 64, device: str = "cpu", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over the clips: per-frame rotations (T, K, 3, 3) and shapes (T, S) (identity / zeros in frames
    no clip covers). Each frame takes its clip's shape."""
    K, S = model.cfg.num_bones, model.cfg.num_shape
    rotmats = np.tile(np.eye(3, dtype=np.float32), (num_frames_total, K, 1, 1))
    shapes = np.zeros((num_frames_total, S), np.float32)
    if not clips:
        return rotmats, shapes
    x = np.stack([normalize_clip(keypoints[idx])[0] for idx in clips])
    out = predict_clips(model, None, x, batch_size=batch_clips, seed=seed, device=device, with_joints=False)
    rot, shape = out["rotmats"].float().numpy(), out["shape"].float().numpy()
    for c, idx in enumerate(clips):
        rotmats[idx] = rot[c]                         # padded frames write the same frame again: harmless
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


# ---------------------------------------------------------------- 5. outputs

def make_result(track: PoseTrack, times: np.ndarray, presence: Presence, keypoints: np.ndarray, motion: Motion,
                camera: Camera, info: VideoInfo, body: BodyModel, model: DiffMeshModel, checkpoint: str,
                retarget_error: float | None, save_vertices: bool) -> Result:
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
        retarget_error_mm=retarget_error, vertices=vertices, faces=faces)


def write_exports(staging: Path, exports: tuple[str, ...], result: Result, body: BodyModel, motion: Motion,
                  fps: float) -> list[str]:
    """result.npz, mesh.glb and motion.bvh (those asked for) into `staging`; returns the file names written."""
    files = []
    if "npz" in exports:
        result.save(staging / "result.npz")
        files.append("result.npz")
    valid = motion.valid
    root_translation = np.where(valid[:, None], motion.translation + root_offset(body, motion.rotmats, motion.shapes),
                                0).astype(np.float32)
    for name, file, write in (("glb", "mesh.glb", write_glb), ("bvh", "motion.bvh", write_bvh)):
        if name in exports:
            write(staging / file, body, motion.rotmats, result.shape_mean, root_translation, fps, valid)
            files.append(file)
    return files


def render_overlay(video, path: Path, info: VideoInfo, body: BodyModel, motion: Motion, camera: Camera,
                   side_view: bool, progress: bool, chunk: int = 32) -> None:
    """Second decoding pass: the mesh drawn over every frame (frames without a person pass through unchanged).
    Vertices are made `chunk` frames at a time, so memory does not grow with the video's length."""
    renderer = MeshRenderer(info.width, info.height, body.faces.cpu().numpy(), camera.focal, camera.principal)
    valid = motion.valid
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
                vertices = body_vertices(body, motion.rotmats[sl], motion.shapes[sl], motion.translation[sl], valid[sl])
            image = renderer.render(vertices[i - first] if ok else None, frame.rgb)
            if side_view:
                side = (renderer.render_side(vertices[i - first], side_size) if ok
                        else np.zeros((side_size[1], side_size[0], 3), np.uint8))
                image = np.concatenate([image, side], 1)
            writer.write(image)


class Stopwatch:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        t = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - t


def run_video(video: str | Path, outdir: str | Path, settings: RunSettings = RunSettings()) -> RunSummary:
    """The whole job (see the module docstring). Raises DiffMeshError with one line for the user's mistakes."""
    unknown = set(settings.exports) - set(EXPORTS)
    if unknown:
        raise DiffMeshError(f"unknown export(s) {sorted(unknown)}; choose from {','.join(EXPORTS)}")
    t_start = time.perf_counter()
    info = probe_video(video)
    final, staging = prepare_outdir(outdir, settings.force)
    clock = Stopwatch()
    try:
        with clock("setup"):
            body = load_body(settings.body, settings.smpl_path)
            model, model_body, checkpoint = load_run_model(settings, body)
        with clock("decode+keypoints"):
            track, times, presence = find_person(video, info, settings.progress)
        if not presence.valid.any():
            raise DiffMeshError(f"no person found in {video} (MediaPipe found no plausible body in any of "
                                f"{len(times)} frames); use a video in which one whole person is in view")
        with clock("diffmesh"):
            keypoints = keypoints_h36m(track)
            clips = cut_clips(presence, model.cfg.num_frames)
            rotmats, shapes = recover_meshes(model, keypoints, clips, len(times), settings.batch_clips,
                                             settings.device, settings.seed)
        retarget_error = None
        if model_body is not body:
            with clock("retarget"):
                rotmats, shapes, retarget_error = to_output_body(model_body, body, rotmats, shapes, presence.valid)
        with clock("body"):
            camera = Camera.for_video(info, settings.focal)
            motion = place_body(body, rotmats, shapes, keypoints, presence, camera, info.fps)
        with clock("export"):
            result = make_result(track, times, presence, keypoints, motion, camera, info, body, model, checkpoint,
                                 retarget_error, settings.save_vertices)
            files = write_exports(staging, settings.exports, result, body, motion, info.fps)
        if settings.render:
            with clock("render"):
                render_overlay(video, staging / "overlay.mp4", info, body, motion, camera, settings.side_view,
                               settings.progress)
            files.append("overlay.mp4")
        commit_outdir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    clock.seconds["total"] = time.perf_counter() - t_start
    return RunSummary(str(video), str(final), len(times), int(presence.valid.sum()), presence.num_tracks, info.fps,
                      clock.seconds, files)

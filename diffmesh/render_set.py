"""`diffmesh prepare --render`: MediaPipe in the training data. The Anny fits of the CMU sequences are rendered from
random cameras as a clothed person in an empty room, MediaPipe runs on the frames exactly as `diffmesh run` runs
it (`video.pose.PoseEstimator`: the full model, video mode, consecutive frames at the mocap's 30 fps), and what it
returned is stored beside the rendered truth, one file per sequence and camera (layout: `data/renders.py`).

- **Cameras**: `synthetic.sequence_camera`, the camera model of the synthetic clips (`CameraRanges`: distance,
  height, roll, field of view, landscape / portrait / square), one fixed camera per (sequence, camera index),
  seeded by (seed, subject, trial, camera index), so a file can be re-made alone.
- **Resumable**: each file is written atomically (`outdir.write_npz`) with its format, the fit it was made from
  (a digest) and the seed; a rerun skips the files that are complete and current, re-renders unreadable ones,
  and refuses (one line) files of another render format or other fits unless `force`. A lock file keeps a second
  job out of the folder. `render_set.json` records the settings; `report.json` the statistics.
- **Two processes** (one per core, one torch thread each) take (sequence, camera) jobs, longest first; the main
  process shows the progress in frames, with rate and ETA, and keeps `progress.json` current.
"""

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data.prepare import FIT_FORMAT, FitSet, default_cache_dir, load_fits
from .data.renders import (RENDER_FORMAT, check_render_file, comparison_lines, default_render_dir,
                           load_render_set, render_file, render_statistics)
from .data.synthetic import ANNY_MEDIAPIPE, ANNY_NOSE_VERTEX, CameraRanges, build_motion_bank, sequence_camera
from .errors import DataError
from .keypoints import NUM_MP_LANDMARKS, USED_LANDMARKS
from .outdir import write_json, write_npz

SKIN_CHUNK = 32          # frames posed (skinned) at a time


@dataclass
class RenderSettings:
    """cameras per sequence; seed of cameras and scenes; max_frames: only the first frames of each sequence
    (None: all; for tests); ranges: the camera model."""

    cameras: int = 4
    seed: int = 0
    max_frames: int | None = None
    ranges: CameraRanges = field(default_factory=CameraRanges)

    def record(self) -> dict:
        """What a file's content depends on (the camera count does not: each camera is its own file)."""
        return {"format": RENDER_FORMAT, "seed": self.seed, "max_frames": self.max_frames,
                "ranges": json.loads(json.dumps(asdict(self.ranges)))}


@dataclass
class RenderJob:
    """One (sequence, camera): the sequence's fit and where its file goes."""

    path: str
    sequence: str
    subject: str
    camera: int
    seed: int
    seed_list: list        # (seed, subject, trial, camera): the job's own random stream
    fit: dict              # rotmats, translation, shape, glitch (one sequence)
    fit_digest: str
    fps: float

    @property
    def frames(self) -> int:
        return len(self.fit["glitch"])


def fit_digest(fit: dict) -> str:
    h = hashlib.sha1()
    for k in ("rotmats", "translation", "shape"):
        h.update(np.ascontiguousarray(fit[k]).tobytes())
    return h.hexdigest()[:16]


def _sequence_fits(subjects: list[str] | None, fit_cache, mocap_path=None, sequences: list[str] | None = None
                   ) -> dict[str, dict]:
    """{sequence: fit arrays and subject} of every sequence of the subjects (or only the listed sequences), from
    the Anny fit cache."""
    from .data.mocap import CMUMocap

    mocap = CMUMocap(mocap_path) if mocap_path else CMUMocap()
    unknown = [s for s in subjects or [] if s not in mocap.subjects()]
    if unknown:
        raise DataError(f"subject(s) {unknown} are not in {mocap.path}; available: {', '.join(mocap.subjects())}")
    subjects = subjects or mocap.subjects()
    names = [n for s in subjects for n in mocap.sequences_of(s) if sequences is None or n in sequences]
    if not names:
        raise DataError(f"none of the sequences {sequences} belongs to subject(s) {', '.join(subjects)}")
    out = {}
    for split in ("train", "val", "test"):
        if not any(mocap.seq_split[mocap.seq_names.index(n)] == split for n in names):
            continue
        fits = load_fits(split, mocap_path, fit_cache, sequences=names)
        for i, name in enumerate(fits.seq_names):
            a, n = fits.seq_start[i], fits.seq_len[i]
            out[name] = {"rotmats": fits.rotmats[a:a + n], "translation": fits.translation[a:a + n],
                         "shape": fits.shape[a], "glitch": fits.glitch[a:a + n], "subject": fits.seq_subject[i],
                         "split": split, "fps": mocap.fps}
    return {n: out[n] for n in names}


def _job_seed(settings: RenderSettings, sequence: str, camera: int) -> list[int]:
    subject, trial = (int(x) for x in sequence.split("_"))
    return [settings.seed, subject, trial, camera]


def _is_current(path: Path, job: RenderJob) -> bool:
    """True: the file is complete and made from this job; False: unreadable (re-render it); raises DataError when it
    is of another render format or from other fits (re-rendering it needs `force`)."""
    try:
        data = check_render_file(path)
    except DataError as e:
        if "unreadable" in str(e):
            return False
        raise
    if str(data["fit_digest"]) != job.fit_digest or int(data["seed"]) != job.seed:
        raise DataError(f"render cache file {path} was made from other Anny fits or another seed; run "
                        f"`diffmesh prepare --render --force --render-cache {path.parent}` to re-render it")
    return True


def plan_jobs(settings: RenderSettings, cache_dir: Path, subjects=None, fit_cache=None, force: bool = False,
              mocap_path=None, sequences: list[str] | None = None) -> tuple[list[RenderJob], int, int]:
    """The jobs still to do (longest first), how many files are already done, and how many were unreadable."""
    seqs = _sequence_fits(subjects, fit_cache, mocap_path, sequences)
    todo, done, broken = [], 0, 0
    for name, fit in seqs.items():
        if settings.max_frames:
            fit = {k: (v[:settings.max_frames] if k in ("rotmats", "translation", "glitch") else v)
                   for k, v in fit.items()}
        arrays = {k: fit[k] for k in ("rotmats", "translation", "shape", "glitch")}
        digest = fit_digest(arrays)
        for k in range(settings.cameras):
            path = render_file(cache_dir, name, k)
            job = RenderJob(str(path), name, fit["subject"], k, settings.seed, _job_seed(settings, name, k), arrays,
                            digest, fit["fps"])
            if path.exists() and not force:
                current = _is_current(path, job)
                if current:
                    done += 1
                    continue
                broken += 1
            todo.append(job)
    return sorted(todo, key=lambda j: -j.frames), done, broken


# ---------------------------------------------------------------------------------------------------- one job

class Renderer:
    """What a worker keeps between jobs: the body, one coloured MeshRenderer, per-shape rest data."""

    def __init__(self):
        from .body.anny_body import AnnyBody
        from .render import MeshRenderer
        from .render_scene import body_parts

        self.body = AnnyBody()
        model = self.body._anny
        self.faces = self.body.faces.numpy()
        self.parts = body_parts(self.body.bone_labels, model.vertex_bone_indices.numpy(),
                                model.vertex_bone_weights.numpy())
        self.mesh = MeshRenderer(16, 16, self.faces, 10.0, vertex_colors=np.ones((self.body.num_vertices, 3)))
        self._rest: dict[bytes, dict] = {}

    def rest(self, shape: np.ndarray) -> dict:
        """Reference-pose vertices, the visibility points' tolerances, waist height and eye of one shape."""
        import torch

        from .body.anny_body import ANNY_H36M_BONES
        from .render_scene import point_tolerances

        key = np.asarray(shape, np.float32).tobytes()
        if key not in self._rest:
            with torch.no_grad():
                r = self.body.rest_model(torch.as_tensor(shape, dtype=torch.float32)[None])
            v, heads = r["vertices"][0].numpy(), r["heads"][0].numpy()
            labels = list(self.body.bone_labels)
            pts, surface = [heads[labels.index(b)] for b in ANNY_H36M_BONES], [False] * 17
            for mp in USED_LANDMARKS:
                kind, what = ANNY_MEDIAPIPE[mp]
                pts.append(v[what] if kind == "vertex" else heads[labels.index(what)])
                surface.append(kind == "vertex")
            pts = np.array(pts)
            widest = pts[:, 2] > heads[labels.index("neck01")][2] + 0.02             # upper neck and head
            face = {"eye": heads[labels.index("eye.L")], "nose": v[ANNY_NOSE_VERTEX]}
            self._rest[key] = {"vertices": v, "face": face,
                               "waist": float(heads[labels.index("spine04")][2]),
                               "tolerance": point_tolerances(pts, v, self.faces, np.array(surface), widest)}
        return self._rest[key]

    def vertices(self, fit: dict, frames: slice) -> np.ndarray:
        """World vertices (n, V, 3) of some frames of a fit."""
        import torch

        rot = torch.as_tensor(fit["rotmats"][frames])
        shape = torch.as_tensor(fit["shape"], dtype=torch.float32)[None].expand(len(rot), -1)
        with torch.no_grad():
            v = self.body(rot, shape).vertices.numpy()
        return v + fit["translation"][frames][:, None]


def _truth(worker: Renderer, job: RenderJob) -> dict:
    """Joints and landmark points (world), camera, room, clothing and light of one job."""
    from .render_scene import clothing_colors, room_background

    fit, T = job.fit, job.frames
    fs = FitSet(fit["rotmats"], fit["translation"], np.repeat(fit["shape"][None], T, 0), fit["glitch"],
                [job.sequence], np.array([0]), np.array([T]), [job.subject])
    bank = build_motion_bank(worker.body, fs)
    cam_rng = np.random.default_rng(job.seed_list + [0])
    scene_rng = np.random.default_rng(job.seed_list + [1])
    cam = sequence_camera(cam_rng, bank.joints[:, 0])
    sample = np.unique(np.linspace(0, T - 1, min(T, 24)).astype(int))
    lowest = np.concatenate([worker.vertices(fit, slice(int(i), int(i) + 1))[:, :, 2].min(1) for i in sample])
    floor_z = float(np.percentile(lowest, 20))
    rest = worker.rest(fit["shape"])
    colors, outfit = clothing_colors(scene_rng, worker.parts, rest["vertices"],
                                     rest["waist"] + scene_rng.uniform(-0.03, 0.05), rest["face"])
    background, room = room_background(scene_rng, cam.R, cam.position, cam.focal, cam.width, cam.height,
                                       bank.joints[:, 0, :2], floor_z)
    centre = bank.joints[:, 0].mean(0)
    light_dir = cam.R @ (room["light"] - centre)
    light = (scene_rng.uniform(0.25, 0.4), scene_rng.uniform(0.4, 0.65), scene_rng.uniform(0.1, 0.3))
    return {"bank": bank, "cam": cam, "colors": colors, "outfit": outfit, "background": background, "room": room,
            "light_dir": light_dir, "light": light, "rest": rest, "floor_z": floor_z}


def render_job(worker: Renderer, job: RenderJob) -> dict:
    """Render one (sequence, camera), run MediaPipe on it, write its file; returns a few numbers for progress."""
    from .render_scene import point_visibility
    from .video.pose import PoseEstimator

    t0 = time.time()
    s = _truth(worker, job)
    bank, cam, T = s["bank"], s["cam"], job.frames
    mesh = worker.mesh
    mesh.set_camera(cam.width, cam.height, cam.focal)
    mesh.set_vertex_colors(s["colors"])
    mesh.set_light(s["light_dir"], *s["light"])
    lm_idx = list(USED_LANDMARKS)
    points = np.concatenate([bank.joints, bank.landmarks[:, lm_idx]], 1)               # (T, 17 + 13, 3)
    points_cam = (points - cam.position) @ cam.R.T
    inside, unoccluded = np.zeros(points.shape[:2], bool), np.zeros(points.shape[:2], bool)
    t_mp = 0.0
    with PoseEstimator() as pose:
        for a in range(0, T, SKIN_CHUNK):
            verts = worker.vertices(job.fit, slice(a, a + SKIN_CHUNK))
            for i, v in enumerate(verts):
                t = a + i
                img = mesh.render(((v - cam.position) @ cam.R.T).astype(np.float32), s["background"], alpha=1.0)
                inside[t], unoccluded[t] = point_visibility(points_cam[t], mesh.last_depth(), cam.focal,
                                                            s["rest"]["tolerance"])
                tm = time.time()
                pose.process(img)
                t_mp += time.time() - tm
        track = pose.track()
    _write_job(job, s, track, inside, unoccluded, time.time() - t0, t_mp)
    return {"path": job.path, "frames": T, "returned": int(track.returned.sum()), "seconds": time.time() - t0}


def _write_job(job: RenderJob, s: dict, track, inside, unoccluded, seconds: float, mp_seconds: float) -> None:
    import anny

    bank, cam, T = s["bank"], s["cam"], job.frames
    lm_idx = list(USED_LANDMARKS)
    used = np.zeros(NUM_MP_LANDMARKS, bool)
    used[lm_idx] = True

    def full33(x):                     # (T, 13) -> (T, 33), the unused landmarks False
        out = np.zeros((T, NUM_MP_LANDMARKS), bool)
        out[:, lm_idx] = x
        return out

    joints_px, _ = cam.project(bank.joints)
    landmarks_px, _ = cam.project(bank.landmarks)
    landmarks_px[:, ~used] = 0.0
    write_npz(job.path, format=np.int64(RENDER_FORMAT), sequence=np.str_(job.sequence), subject=np.str_(job.subject),
              camera_index=np.int64(job.camera), seed=np.int64(job.seed), fit_digest=np.str_(job.fit_digest),
              fit_format=np.int64(FIT_FORMAT), anny_version=np.str_(anny.__version__), fps=np.float64(job.fps),
              camera_R=cam.R, camera_position=cam.position, focal=np.float64(cam.focal), width=np.int64(cam.width),
              height=np.int64(cam.height), principal=np.array([cam.width / 2, cam.height / 2]),
              rotmats=job.fit["rotmats"], translation=job.fit["translation"], shape=job.fit["shape"],
              glitch=job.fit["glitch"], joints_world=bank.joints, joints_cam=(bank.joints - cam.position) @ cam.R.T,
              joints_px=joints_px, joints_inside=inside[:, :17], joints_unoccluded=unoccluded[:, :17],
              landmarks_world=bank.landmarks, landmarks_cam=np.where(used[:, None], (bank.landmarks - cam.position)
                                                                     @ cam.R.T, 0.0).astype(np.float32),
              landmarks_px=landmarks_px, landmark_used=used, landmarks_inside=full33(inside[:, 17:]),
              landmarks_unoccluded=full33(unoccluded[:, 17:]), mp_landmarks=track.landmarks,
              mp_visibility=track.visibility, mp_world=track.world, mp_returned=track.returned,
              visibility_tolerance=s["rest"]["tolerance"], floor_z=np.float64(s["floor_z"]), light_dir=s["light_dir"],
              outfit=np.str_(json.dumps(s["outfit"])), seconds=np.float64(seconds),
              mediapipe_seconds=np.float64(mp_seconds))


# ---------------------------------------------------------------------------------------------------- workers

_WORKER: Renderer | None = None


def _init_worker() -> None:
    global _WORKER
    import torch

    torch.set_num_threads(1)
    _WORKER = Renderer()


def _run_in_worker(job: RenderJob) -> dict:
    return render_job(_WORKER, job)


def _results(jobs: list[RenderJob], workers: int):
    """Yield each job's result as it finishes: in this process (workers <= 1) or in a pool of spawned processes."""
    if workers <= 1 or len(jobs) <= 1:
        worker = Renderer()
        for job in jobs:
            yield render_job(worker, job)
        worker.mesh.release()
        return
    import multiprocessing as mp

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GLOG_minloglevel": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
            yield from pool.imap_unordered(_run_in_worker, jobs)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _lock(cache_dir: Path):
    f = open(cache_dir / ".render.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DataError(f"another `diffmesh prepare --render` is writing {cache_dir}; wait for it to finish") from None
    return f


def _check_settings(cache_dir: Path, settings: RenderSettings, force: bool) -> None:
    manifest = cache_dir / "render_set.json"
    if manifest.exists() and not force:
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = None
        if old is not None and old.get("settings") != settings.record():
            raise DataError(f"{cache_dir} holds renders made with other settings ({manifest}); pass the same "
                            f"settings, another --render-cache, or --force to re-render")
    write_json({"settings": settings.record(), "cameras": settings.cameras}, manifest)


def run_render_set(subjects: list[str] | None = None, cache_dir=None, fit_cache=None,
                   settings: RenderSettings | None = None, workers: int = 2, force: bool = False,
                   quiet: bool = False, stats: bool = True, mocap_path=None, sequences: list[str] | None = None
                   ) -> dict:
    """Render what is missing (see the module docstring), then the statistics of the requested subjects' files
    (`data.renders.render_statistics`), also written to `report.json` in the cache."""
    from tqdm import tqdm

    settings = settings or RenderSettings()
    cache_dir = Path(cache_dir) if cache_dir else default_render_dir()
    fit_cache = Path(fit_cache) if fit_cache else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the render cache {cache_dir} ({e.strerror}); pass --render-cache DIR") from None
    lock = _lock(cache_dir)
    try:
        for tmp in cache_dir.glob(".*.tmp.npz"):        # left by a killed job: never read, removed
            tmp.unlink()
        _check_settings(cache_dir, settings, force)
        jobs, done, broken = plan_jobs(settings, cache_dir, subjects, fit_cache, force, mocap_path, sequences)
        frames = sum(j.frames for j in jobs)
        t0, rendered, returned = time.time(), 0, 0
        desc = f"rendering ({done} files done, {len(jobs)} to do{f', {broken} unreadable' if broken else ''})"
        with tqdm(total=frames, unit="frame", desc=desc, disable=quiet, smoothing=0.05) as bar:
            for i, r in enumerate(_results(jobs, workers)):
                rendered, returned = rendered + r["frames"], returned + r["returned"]
                bar.update(r["frames"])
                bar.set_postfix(found=f"{returned / max(rendered, 1):.1%}", file=Path(r["path"]).name)
                rate = rendered / max(time.time() - t0, 1e-6)
                write_json({"files_done": done + i + 1, "files_total": done + len(jobs), "frames_done": rendered,
                            "frames_todo": frames, "frames_per_s": rate, "eta_s": (frames - rendered) / rate,
                            "mediapipe_found": returned / max(rendered, 1)}, cache_dir / "progress.json")
    finally:
        lock.close()
    seconds = time.time() - t0
    report = {"cache": str(cache_dir), "files_done_before": done, "files_rendered": len(jobs),
              "frames_rendered": rendered, "seconds": seconds, "frames_per_s": rendered / max(seconds, 1e-6),
              "workers": workers, "settings": settings.record(), "cameras": settings.cameras}
    if stats:
        seqs = list(_sequence_fits(subjects, fit_cache, mocap_path, sequences))
        files = load_render_set(cache_dir, seqs)
        report["statistics"] = render_statistics(files)
        report["table"] = comparison_lines(report["statistics"])
        write_json(report, cache_dir / "report.json")
    return report


def report_lines(report: dict) -> list[str]:
    """What `diffmesh prepare --render` prints: what was rendered, how fast, and the statistics."""
    lines = [f"renders in {report['cache']}: {report['files_rendered']} file(s) rendered now "
             f"({report['frames_rendered']} frames, {report['frames_per_s']:.1f} frames/s, {report['workers']} "
             f"worker(s)), {report['files_done_before']} already there"]
    if "statistics" in report:
        stats = report["statistics"]
        det, world = stats["detection"], stats["mediapipe_world"]
        lines.append(f"MediaPipe found the body in {det['rate']:.1%} of {det['frames']} frames "
                     f"({det['rate_whole_body_inside'] or 0:.1%} where the whole body is in the image); world "
                     f"landmarks PA-MPJPE {world['pa_mpjpe_landmarks_mm']:.1f} mm (the same landmarks' 17 joints), "
                     f"{world['pa_mpjpe_h36m_joints_mm']:.1f} mm (Human3.6M joints)")
        lines += report["table"]
    return lines

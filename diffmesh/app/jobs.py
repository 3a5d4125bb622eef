"""`diffmesh app`'s jobs: one `diffmesh run` at a time in a worker process, the others waiting in order.

The worker is started with the server and loads the model and the body at once, so a job starts as fast as
`diffmesh run` would be after its set-up; it tells each stage as it starts and the files it wrote. The server
process never runs a job itself (it only imports numpy, FastAPI and this module), so it answers while a job runs.
Cancelling the running job sends the worker SIGTERM, which unwinds the run as Ctrl-C does (its staging folder and
keypoint worker go, `outdir.py`); the job's folder is then removed and a fresh worker started. Every job has its
own folder under the app's root (a temporary folder removed when the server stops): `input.video` (the upload,
never under the user's file name) and `out/` (what the run wrote)."""

import multiprocessing
import queue
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

STOP_WAIT_S = 15.0          # a cancelled run unwinds within this, else it is killed


@dataclass
class Job:
    id: str
    folder: Path
    video: Path
    settings: dict               # RunSettings keywords chosen on the page
    name: str                    # what the page shows: the upload's name (text only, never a path)
    state: str = "queued"        # queued | running | done | failed | cancelled
    stages: list[str] = field(default_factory=list)
    error: str | None = None
    files: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)      # frames, seconds per stage, warnings, jitter
    created: float = field(default_factory=time.time)

    @property
    def outdir(self) -> Path:
        return self.folder / "out"


def worker_main(jobs, events, device: str = "cpu") -> None:
    """The worker process: load the model and body for `device`, then run the jobs it is sent until it gets None."""
    from ..errors import DiffMeshError, Terminated, raise_terminated_on_sigterm

    raise_terminated_on_sigterm()
    try:
        from ..pipeline import RunSettings, load_run_parts, run_video

        load_run_parts(RunSettings(device=device))
        events.put(("", "ready", None))
        while (spec := jobs.get()) is not None:
            job_id = spec["id"]
            try:
                settings = RunSettings(**spec["settings"], progress=False,
                                       on_stage=lambda stage: events.put((job_id, "stage", stage)))
                summary = run_video(spec["video"], spec["outdir"], settings)
                report = {"frames": summary.frames, "valid_frames": summary.valid_frames, "fps": summary.fps_video,
                          "seconds": summary.seconds, "warnings": summary.warnings,
                          "jitter": jitter_per_frame(Path(spec["outdir"]) / "result.npz"),
                          "view": glb_view(Path(spec["outdir"]) / "mesh.glb")}
                events.put((job_id, "done", {"files": summary.files, "report": report}))
            except DiffMeshError as e:
                events.put((job_id, "failed", str(e)))
            except Exception as e:                     # a bug: the page gets one line, the log the traceback
                traceback.print_exc()
                events.put((job_id, "failed", f"internal error ({type(e).__name__}: {e}); please report it"))
    except (Terminated, KeyboardInterrupt):
        return


def jitter_per_frame(result_path: Path) -> list[list[float | None]]:
    """Each person's jitter per frame, as the paper's Fig. 7 plots it: the mean over the 17 joints of the
    acceleration |x[t-1] - 2 x[t] + x[t+1]| in mm per frame^2 (frames 1..T-2; None where a person is absent)."""
    import numpy as np

    from ..metrics import acceleration
    from ..result import load_people

    if not result_path.is_file():
        return []
    out = []
    for person in load_people(result_path):
        joints = person.joints3d.astype(np.float64)
        joints = joints - joints[:, :1]                  # pelvis-centred, as the paper's metrics: the body's motion
        acc = np.linalg.norm(acceleration(joints), axis=-1).mean(-1) * 1000
        track = person.track_id
        same = (track[:-2] == track[1:-1]) & (track[1:-1] == track[2:])    # no acceleration across a tracker jump
        out.append([round(float(a), 2) if np.isfinite(a) and ok else None for a, ok in zip(acc, same)])
    return out


def glb_view(glb_path: Path) -> dict | None:
    """Where the 3D view should look: the median of every root bone's animated position in the GLB and a camera
    distance that shows where they go. The viewer frames a skinned mesh by its rest pose at the origin, but the
    bodies stand where the camera saw them, metres away."""
    import numpy as np
    import pygltflib

    if not glb_path.is_file():
        return None
    gltf = pygltflib.GLTF2().load(str(glb_path))
    blob, positions = gltf.binary_blob(), []
    for anim in gltf.animations:
        for channel in anim.channels:
            if channel.target.path == "translation" and gltf.nodes[channel.target.node].name.endswith("root"):
                acc = gltf.accessors[anim.samplers[channel.sampler].output]
                view = gltf.bufferViews[acc.bufferView]
                positions.append(np.frombuffer(blob, np.float32, acc.count * 3,
                                               view.byteOffset + (acc.byteOffset or 0)).reshape(-1, 3))
    if not positions:
        return None
    points = np.concatenate(positions)
    centre = np.median(points, 0)
    spread = float(np.percentile(np.linalg.norm(points - centre, axis=1), 95))
    return {"target": [round(float(v), 3) for v in centre], "distance": round(max(3.0, 1.5 * spread + 2.5), 2)}


class JobQueue:
    """The jobs of one server: `submit`, `status`, `cancel`, `close`. Thread-safe."""

    def __init__(self, root: Path, device: str = "cpu"):
        self.root, self.device = root, device
        self._jobs: dict[str, Job] = {}
        self._waiting: list[str] = []
        self._running: str | None = None
        self._lock = threading.RLock()
        self._context = multiprocessing.get_context("spawn")
        self._closed = threading.Event()
        self.ready = threading.Event()              # the worker has loaded the model
        self._start_worker()
        self._thread = threading.Thread(target=self._loop, name="diffmesh-app-jobs", daemon=True)
        self._thread.start()

    def _start_worker(self) -> None:
        self.ready.clear()
        self._to_worker, self._events = self._context.Queue(), self._context.Queue()
        self._worker = self._context.Process(target=worker_main, args=(self._to_worker, self._events, self.device),
                                             name="diffmesh-app-worker", daemon=True)
        self._worker.start()

    def new_job(self, settings: dict, name: str, video: Path | None = None) -> Job:
        """A job with its folder made; `video` None: the upload goes to its `input.video`."""
        job_id = uuid.uuid4().hex
        folder = self.root / job_id
        folder.mkdir(parents=True)
        return Job(job_id, folder, video or folder / "input.video", settings, name)

    def submit(self, job: Job) -> int:
        """Queue a job; returns its place (0: it runs next or now)."""
        with self._lock:
            self._jobs[job.id] = job
            self._waiting.append(job.id)
            return self.place(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def place(self, job: Job) -> int | None:
        """How many jobs run or wait before it (None once it has started)."""
        with self._lock:
            if job.id not in self._waiting:
                return None
            return self._waiting.index(job.id) + (self._running is not None)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def discard(self, job: Job) -> None:
        """Forget a job that was never queued (a refused upload) and its folder."""
        shutil.rmtree(job.folder, ignore_errors=True)

    def cancel(self, job_id: str) -> bool:
        """Stop a waiting or running job and remove everything it made; False when it had already ended."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return False
            if job.id in self._waiting:
                self._waiting.remove(job.id)
            elif self._running == job.id:
                self._stop_worker()
                self._running = None
                self._start_worker()
            job.state, job.files = "cancelled", []
            shutil.rmtree(job.folder, ignore_errors=True)
            return True

    def _stop_worker(self) -> None:
        self._worker.terminate()                    # SIGTERM: the run unwinds and removes its staging folder
        self._worker.join(STOP_WAIT_S)
        if self._worker.is_alive():
            self._worker.kill()
            self._worker.join()

    def _dispatch(self) -> None:
        with self._lock:
            if self._running is not None or not self._waiting or not self.ready.is_set():
                return
            job = self._jobs[self._waiting.pop(0)]
            job.state, self._running = "running", job.id
            self._to_worker.put({"id": job.id, "video": str(job.video), "outdir": str(job.outdir),
                                 "settings": job.settings})

    def _handle(self, job_id: str, kind: str, payload) -> None:
        with self._lock:
            if kind == "ready":
                self.ready.set()
                return
            job = self._jobs.get(job_id)
            if job is None or job.state != "running":   # a cancelled job's last words
                return
            if kind == "stage":
                if payload not in job.stages:
                    job.stages.append(payload)
                return
            job.state = "done" if kind == "done" else "failed"
            if kind == "done":
                job.files, job.report = payload["files"], payload["report"]
            else:
                job.error = payload
            self._running = None

    def _loop(self) -> None:
        while not self._closed.is_set():
            self._dispatch()
            events = self._events
            try:
                self._handle(*events.get(timeout=0.1))
            except queue.Empty:
                self._check_worker()
            except (EOFError, OSError, ValueError):     # the queue of a worker just replaced
                time.sleep(0.05)

    def _check_worker(self) -> None:
        """A worker that died on its own (out of memory, a crash) fails its job and is replaced."""
        with self._lock:
            if self._closed.is_set() or self._worker.is_alive():
                return
            if self._running is not None:
                job = self._jobs[self._running]
                job.state, job.error = "failed", (f"the run stopped unexpectedly (exit status "
                                                  f"{self._worker.exitcode}); try a shorter or smaller video")
                self._running = None
            self._start_worker()

    def close(self) -> None:
        """Stop the worker and remove every job's folder (the server is stopping)."""
        self._closed.set()
        with self._lock:
            self._stop_worker()
        self._thread.join(5)
        shutil.rmtree(self.root, ignore_errors=True)

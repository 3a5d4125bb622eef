"""`diffmesh batch`: many videos through `diffmesh run` (pipeline.run_video), one output folder each, on a pool of
local worker processes; resumable, and no video can lose or overwrite another's output (docs/batch.md).

1. `find_jobs`: the inputs (files, folders searched recursively for video files, globs, a list file) become
   jobs, each with an output folder named from the video's path relative to the inputs' common root, so two
   videos never share one (`clip.mp4` and `clip.mov` side by side get `clip_mp4` and `clip_mov`).
2. `Manifest` (OUT/manifest.jsonl): one JSON line per video (status, seconds, fps, frames with a body, the
   error line), rewritten atomically whenever a video finishes. A rerun of the same command skips the videos
   whose output folder is complete (outputs appear whole or not at all: `outdir.staged_outdir`) and redoes
   the others.
3. `run_batch`: the jobs on `workers` processes (spawned, each with its share of the cores for torch and one
   MediaPipe process, so N workers do not oversubscribe the machine); a failing video is recorded and the others
   go on. `run_batch_ray`: the same jobs as Ray tasks on a cluster (one task per video with its CPU request,
   retried when its node is lost); the driver writes the manifest, the tasks write their folders under OUT,
   which every node must see at the same path.
"""

import glob
import json
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import DiffMeshError
from .pipeline import RunSettings

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
MANIFEST_NAME = "manifest.jsonl"
MANIFEST_KIND = "diffmesh-batch"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Job:
    video: str          # absolute path
    name: str           # output folder, relative to OUT (POSIX separators)


# ---------------------------------------------------------------- 1. inputs -> jobs

def _expand(item: str) -> list[tuple[Path, Path]]:
    """(video, root) pairs of one input: a file (its root is its folder), a folder (its video files, recursively),
    or a glob pattern (its matches, each as a file)."""
    path = Path(item)
    if path.is_dir():
        videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        return [(v.resolve(), path.resolve()) for v in videos]
    if path.is_file():
        return [(path.resolve(), path.resolve().parent)]
    if glob.has_magic(item):
        matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
        return [pair for m in matches for pair in _expand(str(m))]
    raise DiffMeshError(f"input {item} is neither a file, a folder nor a pattern that matches anything; check the path")


def _list_file(path: str) -> list[str]:
    """The inputs named in a list file: one per line, relative to the file's folder; '#' starts a comment."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DiffMeshError(f"cannot read the list file {path} ({e}); pass a text file with one video per line") from None
    base = Path(path).resolve().parent
    return [str(base / line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def find_jobs(inputs: list[str], list_file: str | None = None) -> list[Job]:
    """Every video of the inputs once (module docstring, step 1)."""
    pairs = [pair for item in list(inputs) + (_list_file(list_file) if list_file else []) for pair in _expand(item)]
    videos = list(dict.fromkeys(v for v, _ in pairs))                # each video once, in input order
    if not videos:
        raise DiffMeshError("no video files in the inputs (looked for " + ", ".join(VIDEO_SUFFIXES) + "); pass "
                            "video files, folders that hold some, or a --list file")
    root = Path(os.path.commonpath([str(r) for _, r in pairs]))
    rel = [v.relative_to(root) for v in videos]
    stems = [r.with_suffix("").as_posix() for r in rel]
    clash = {s for s in stems if stems.count(s) > 1}
    names = [(r.parent / f"{r.stem}_{r.suffix[1:].lower()}").as_posix() if s in clash else s
             for r, s in zip(rel, stems)]
    return [Job(str(v), n) for v, n in zip(videos, names)]


# ---------------------------------------------------------------- 2. the manifest

class Manifest:
    """OUT/manifest.jsonl: a header line, then the latest record of each video (module docstring, step 2)."""

    def __init__(self, out: Path):
        self.path = out / MANIFEST_NAME
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._read()

    def _read(self) -> None:
        try:
            lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DiffMeshError(f"{self.path} is not a diffmesh batch manifest ({type(e).__name__}); choose another "
                                "-o or move the file away") from None
        head = lines[0] if lines else {}
        if not isinstance(head, dict) or head.get("manifest") != MANIFEST_KIND:
            raise DiffMeshError(f"{self.path} is not a diffmesh batch manifest; choose another -o or move it away")
        if head.get("version") != MANIFEST_VERSION:
            raise DiffMeshError(f"{self.path} was written by another version of diffmesh batch (manifest version "
                                f"{head.get('version')}, this one writes {MANIFEST_VERSION}); use another -o")
        self.records = {r["video"]: r for r in lines[1:] if isinstance(r, dict) and "video" in r}

    def record(self, entry: dict) -> None:
        """Store one video's record and rewrite the file atomically (a temporary file, then a rename)."""
        self.records[entry["video"]] = entry
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        head = {"manifest": MANIFEST_KIND, "version": MANIFEST_VERSION}
        tmp.write_text("".join(json.dumps(r) + "\n" for r in [head, *self.records.values()]))
        os.replace(tmp, self.path)


def is_finished(job: Job, out: Path, manifest: Manifest) -> bool:
    """A video is finished when its output folder exists (it appears only whole) and the manifest does not say
    it failed since; a folder without a record (the batch was killed between the two) counts as finished."""
    folder = out / job.name
    return folder.is_dir() and manifest.records.get(job.video, {}).get("status", "done") == "done"


# ---------------------------------------------------------------- 3. the pool

def keypoint_processes(cores: int) -> int | None:
    """MediaPipe processes for a worker with `cores` cores: one on one core; with more, `diffmesh run`'s own
    choice (None: a second process from 150 frames on, where its ~1.5 s start pays off; video/detect.py)."""
    return 1 if cores <= 1 else None


def worker_shares(workers: int, cores: int | None = None) -> tuple[int, int | None]:
    """(torch threads, MediaPipe processes: `keypoint_processes`) for each of `workers` processes on `cores`."""
    cores = cores or os.cpu_count() or 1
    share = max(1, cores // max(workers, 1))
    return share, keypoint_processes(share)


def _init_worker(threads: int) -> None:
    """A worker process: its share of the cores, and SIGTERM turned into `Terminated` as in the command, so that
    a cancelled batch's running videos clean up after themselves (staging folder, keypoint worker)."""
    import torch

    from .errors import raise_terminated_on_sigterm

    raise_terminated_on_sigterm()
    torch.set_num_threads(threads)


def peak_memory_mb() -> float | None:
    """This worker process's peak resident memory so far (its high-water mark), without child processes: a
    worker with one core's share runs MediaPipe in itself and has none. RUSAGE_CHILDREN is no help: a forked
    child inherits its parent's resident size as its own peak. None where `resource` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    unit = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20      # ru_maxrss: KiB on Linux, bytes on macOS
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit, 1)


def _run_one(job: Job, out: str, settings: RunSettings) -> dict:
    """One video in a worker: its record for the manifest (errors become the record's one line)."""
    from .pipeline import run_video

    t0 = time.perf_counter()
    entry = {"video": job.video, "output": job.name}
    try:
        summary = run_video(job.video, Path(out) / job.name, settings)
    except DiffMeshError as e:
        entry.update(status="failed", error=str(e))
    except Exception as e:                           # a bug, but one video's: record it and let the rest go on
        entry.update(status="failed", error=f"internal error: {type(e).__name__}: {str(e)[:200]}")
    else:
        entry.update(status="done", error=None, frames=summary.frames, frames_with_body=summary.valid_frames)
    entry.update(seconds=time.perf_counter() - t0, peak_mb=peak_memory_mb())
    if entry["status"] == "done":
        entry["fps"] = entry["frames"] / max(entry["seconds"], 1e-9)
    return entry


def _prepare_root(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".diffmesh-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise DiffMeshError(f"cannot write to {out} ({e.strerror}); choose a writable -o") from None


@dataclass
class BatchReport:
    total: int
    done: int
    skipped: int
    failed: list[dict]
    seconds: float
    startup_s: float = 0.0     # --ray: connecting to (or starting) the Ray instance, not in `seconds`

    def lines(self) -> list[str]:
        out = [f"{self.total} videos: {self.done} done now, {self.skipped} already done, {len(self.failed)} failed "
               f"({self.seconds:.0f} s)"]
        out += [f"  failed: {r['video']}: {r['error']}" for r in self.failed]
        return out


class _Progress:
    """The driver's side of a batch: which jobs to run, the manifest, the progress bar and the failures."""

    def __init__(self, jobs: list[Job], out: Path, force: bool, progress: bool):
        from tqdm import tqdm

        _prepare_root(out)
        self.jobs, self.manifest = jobs, Manifest(out)
        self.todo = [j for j in jobs if force or not is_finished(j, out, self.manifest)]
        self.failed: list[dict] = []
        self.t0 = time.perf_counter()
        self.bar = tqdm(total=len(self.todo), unit="video", desc="batch", disable=not progress)

    def finished(self, job: Job, entry: dict | None, error: BaseException | None = None) -> None:
        if entry is None:                            # the worker or task died (killed, out of memory, node lost)
            entry = {"video": job.video, "output": job.name, "status": "failed", "seconds": None,
                     "error": f"the worker running it died ({type(error).__name__}); run the batch again"}
        self.manifest.record(entry)
        if entry["status"] != "done":
            self.failed.append(entry)
        self.bar.update(1)

    def report(self, startup_s: float = 0.0) -> BatchReport:
        self.bar.close()
        return BatchReport(len(self.jobs), len(self.todo) - len(self.failed), len(self.jobs) - len(self.todo),
                           self.failed, time.perf_counter() - self.t0, startup_s)


def run_batch(jobs: list[Job], out: str | Path, settings: RunSettings, workers: int = 1, progress: bool = True
              ) -> BatchReport:
    """Every unfinished job (every job with `settings.force`, replacing its folder) on `workers` processes; the
    manifest kept current."""
    from multiprocessing import get_context

    state = _Progress(jobs, Path(out), settings.force, progress)
    threads, keypoint_workers = worker_shares(workers)
    settings = replace(settings, progress=False, keypoint_workers=keypoint_workers)
    pool = ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(threads,))
    try:
        pending = {pool.submit(_run_one, job, str(out), settings): job for job in state.todo}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    state.finished(job, future.result())
                except Exception as e:
                    state.finished(job, None, e)
    except BaseException:                            # Ctrl-C, SIGTERM: the running videos clean up and stop
        _stop_workers(pool)
        raise
    pool.shutdown()
    return state.report()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM to every worker (each removes its video's staging folder), then wait for them; queued videos are
    dropped. The manifest keeps what finished before."""
    processes = list(getattr(pool, "_processes", {}).values())     # the executor exposes no public handle
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=30)
    pool.shutdown(wait=True, cancel_futures=True)


RAY_TASK_RETRIES = 3      # a task lost with its node (or its worker process) is run again, up to this many times


def _ray_task(job: Job, out: str, settings: RunSettings, threads: int) -> dict:
    _init_worker(threads)
    return _run_one(job, out, settings)


def run_batch_ray(jobs: list[Job], out: str | Path, settings: RunSettings, address: str | None,
                  cpus_per_video: int = 1, progress: bool = True) -> BatchReport:
    """The jobs as Ray tasks (module docstring): `ray.init(address)` (None: a Ray instance on this machine),
    `cpus_per_video` CPUs requested by each task, outputs written by the tasks under `out`."""
    try:
        import ray
    except ImportError:
        raise DiffMeshError("--ray needs the ray package: pip install 'ray>=2.9'") from None
    out = Path(out).resolve()
    state = _Progress(jobs, out, settings.force, progress)
    _connect_ray(ray, address)
    startup_s = time.perf_counter() - state.t0
    state.t0 = time.perf_counter()
    try:
        threads = max(1, cpus_per_video)
        settings = replace(settings, progress=False, keypoint_workers=keypoint_processes(threads))
        task = ray.remote(num_cpus=cpus_per_video, max_retries=RAY_TASK_RETRIES)(_ray_task)
        pending = {task.remote(job, str(out), settings, threads): job for job in state.todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    state.finished(job, ray.get(ref))
                except Exception as e:               # lost for good after the retries
                    state.finished(job, None, e)
    finally:
        ray.shutdown()
    return state.report(startup_s)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise DiffMeshError(f"--ray {address}: give the head's address as HOST:PORT (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise DiffMeshError(f"the Ray cluster at {address} does not answer ({e.strerror or type(e).__name__}); start "
                            "it with `ray start --head` there, or check the address and port") from None


def _connect_ray(ray, address: str | None) -> None:
    """ray.init with one clear line when the cluster does not answer. A HOST:PORT address is tried with a plain
    TCP connection first (5 s): Ray itself retries an unreachable head for minutes."""
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, log_to_driver=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        raise DiffMeshError(f"cannot reach the Ray cluster at {address or 'this machine'} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); start it with "
                            "`ray start --head` or pass the head's address as --ray HOST:PORT") from None

"""The batch setting: `diffmesh batch` on eight short clips (< 150 frames, cut from the benchmark video) with one
and two local workers and as Ray tasks on a Ray instance started on this machine; throughput (videos and frames
per second, Ray's start-up excluded and reported apart), each worker's peak memory (as the workers report it in
the manifest: the worker with its keypoint process) and the machine's own gain from one busy process to two,
before and after the batches (the ceiling of the two-worker ratio)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..paths import DEMO_VIDEO
from .measure import Recorder, rounded, target
from .options import TARGETS, BenchOptions

CLIPS, CLIP_FRAMES, QUICK_CLIPS, QUICK_CLIP_FRAMES = 8, 120, 2, 24


def _cut_clips(source: Path, folder: Path, count: int, frames: int) -> list[Path]:
    """`count` clips of `frames` frames, starting evenly through the source (overlapping where it is short)."""
    from ..video.decode import VideoWriter, iter_frames, probe_video

    info = probe_video(source)
    total = info.num_frames or frames
    starts = [round(i * max(total - frames, 0) / max(count - 1, 1)) for i in range(count)]
    paths = [folder / f"clip{i}.mp4" for i in range(count)]
    writers = [VideoWriter(p, info.rate or info.fps) for p in paths]
    for frame in iter_frames(source):
        for s, w in zip(starts, writers):
            if s <= frame.index < s + frames:
                w.write(frame.rgb)
    for w in writers:
        w.close()
    return paths


# A fixed piece of pure-Python work (~0.5 s on one core here): the machine's own scaling from one process to two
# is measured with it, since two vCPUs need not deliver twice one's work (a shared or SMT host).
SPIN_CODE = "x = 0\nfor i in range(6_000_000):\n    x += i"


def machine_scaling(processes: int = 2, repeats: int = 3) -> float:
    """Throughput of `processes` copies of SPIN_CODE at once over that of one alone (median of `repeats`
    alternating rounds): the most any batch of `processes` workers can gain on this machine at this moment."""
    import statistics
    import subprocess
    import sys
    import time

    def round_s(n: int) -> float:
        t = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", SPIN_CODE]) for _ in range(n)]
        for p in procs:
            p.wait()
        return time.perf_counter() - t

    ratios = [processes * round_s(1) / round_s(processes) for _ in range(repeats)]
    return statistics.median(ratios)


def _peak_worker_mb(out: Path) -> float | None:
    """The largest peak memory a worker reported in the batch's manifest (`batch.peak_memory_mb`)."""
    from ..batch import Manifest

    peaks = [r.get("peak_mb") for r in Manifest(out).records.values()]
    return max((p for p in peaks if p is not None), default=None)


def bench_batch(opts: BenchOptions, device: torch.device, rec: Recorder, folder: Path) -> None:
    from ..batch import find_jobs, run_batch, run_batch_ray
    from ..pipeline import RunSettings

    count, frames = (QUICK_CLIPS, QUICK_CLIP_FRAMES) if opts.quick else (CLIPS, CLIP_FRAMES)
    clips = folder / "batch_clips"
    clips.mkdir(parents=True, exist_ok=True)
    _cut_clips(Path(opts.video) if opts.video else DEMO_VIDEO, clips, count, frames)
    jobs = find_jobs([str(clips)])
    settings = RunSettings(render=False, exports=("npz",), device=str(device), progress=False,
                           max_people=1)                          # the single-person path, as the targets were set
    results = {}
    scaling_before = machine_scaling(2, 1 if opts.quick else 3)
    for variant, runner in (("pool-1", lambda out: run_batch(jobs, out, settings, workers=1, progress=False)),
                            ("pool-2", lambda out: run_batch(jobs, out, settings, workers=2, progress=False)),
                            ("ray-local", lambda out: run_batch_ray(jobs, out, settings, None, progress=False))):
        out = folder / f"batch_out_{variant}"
        report = runner(out)
        results[variant] = report
        rec.emit({"setting": "batch", "kind": "throughput", "variant": variant, "videos": count,
                  "frames": count * frames, "failed": len(report.failed), "seconds": rounded(report.seconds, 3),
                  "startup_s": rounded(report.startup_s, 3), "videos_per_s": rounded(count / report.seconds, 4),
                  "fps": rounded(count * frames / report.seconds, 2), "peak_worker_mb": _peak_worker_mb(out)})
    scaling = (scaling_before + machine_scaling(2, 1 if opts.quick else 3)) / 2
    speedup = results["pool-1"].seconds / results["pool-2"].seconds
    ray_vs_pool = results["pool-2"].seconds / results["ray-local"].seconds
    peak = max(line.get("peak_worker_mb") or 0 for line in rec.lines if line.get("setting") == "batch")
    rec.emit({"setting": "batch", "kind": "summary", "pool2_vs_pool1": rounded(speedup, 3),
              "ray_vs_pool2": rounded(ray_vs_pool, 3), "machine_2proc_scaling": rounded(scaling, 3),
              "targets": [target("batch_pool2_vs_pool1", speedup, TARGETS["batch_pool2_vs_pool1"], ">="),
                          target("batch_ray_vs_pool2", ray_vs_pool, TARGETS["batch_ray_vs_pool2"], ">="),
                          target("batch_peak_worker_mb", peak, TARGETS["batch_peak_worker_mb"], "<")]})

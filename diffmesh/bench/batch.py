"""The batch setting: `diffmesh batch` on eight short clips (< 150 frames, cut from the benchmark video) with one
and two local workers and as Ray tasks on a Ray instance started on this machine; throughput (videos and frames
per second, Ray's start-up excluded and reported apart) and each worker's peak memory (the worker with its
keypoint process, sampled)."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from ..paths import DEMO_VIDEO
from .measure import Recorder, _descendants, _rss_mb, rounded, target
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


class _WorkerPeaks:
    """Samples, in a thread, the resident memory of each child process of this one together with its own
    children (a batch worker and its keypoint process); `peak_mb` is the largest such sum seen."""

    def __init__(self, interval: float = 0.1):
        import os

        self.root, self.interval, self.peak_mb = os.getpid(), interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for child in _descendants(self.root)[1:]:
                tree = [_rss_mb(p) for p in _descendants(child)]
                self.peak_mb = max(self.peak_mb, sum(v for v in tree if v))
            self._stop.wait(self.interval)

    def __enter__(self) -> _WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def bench_batch(opts: BenchOptions, device: torch.device, rec: Recorder, folder: Path) -> None:
    from ..batch import find_jobs, run_batch, run_batch_ray
    from ..pipeline import RunSettings

    count, frames = (QUICK_CLIPS, QUICK_CLIP_FRAMES) if opts.quick else (CLIPS, CLIP_FRAMES)
    clips = folder / "batch_clips"
    clips.mkdir(parents=True, exist_ok=True)
    _cut_clips(Path(opts.video) if opts.video else DEMO_VIDEO, clips, count, frames)
    jobs = find_jobs([str(clips)])
    settings = RunSettings(render=False, exports=("npz",), device=str(device), progress=False)
    results = {}
    for variant, runner in (("pool-1", lambda out: run_batch(jobs, out, settings, workers=1, progress=False)),
                            ("pool-2", lambda out: run_batch(jobs, out, settings, workers=2, progress=False)),
                            ("ray-local", lambda out: run_batch_ray(jobs, out, settings, None, progress=False))):
        with _WorkerPeaks() as peaks:
            report = runner(folder / f"batch_out_{variant}")
        results[variant] = report
        rec.emit({"setting": "batch", "kind": "throughput", "variant": variant, "videos": count,
                  "frames": count * frames, "failed": len(report.failed), "seconds": rounded(report.seconds, 3),
                  "startup_s": rounded(report.startup_s, 3), "videos_per_s": rounded(count / report.seconds, 4),
                  "fps": rounded(count * frames / report.seconds, 2), "peak_worker_mb": rounded(peaks.peak_mb, 1)})
    speedup = results["pool-1"].seconds / results["pool-2"].seconds
    ray_vs_pool = results["pool-2"].seconds / results["ray-local"].seconds
    peak = max(line.get("peak_worker_mb") or 0 for line in rec.lines if line.get("setting") == "batch")
    rec.emit({"setting": "batch", "kind": "summary", "pool2_vs_pool1": rounded(speedup, 3),
              "ray_vs_pool2": rounded(ray_vs_pool, 3),
              "targets": [target("batch_pool2_vs_pool1", speedup, TARGETS["batch_pool2_vs_pool1"], ">="),
                          target("batch_ray_vs_pool2", ray_vs_pool, TARGETS["batch_ray_vs_pool2"], ">="),
                          target("batch_peak_worker_mb", peak, TARGETS["batch_peak_worker_mb"], "<")]})

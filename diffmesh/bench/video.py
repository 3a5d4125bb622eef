"""The video setting: `run_video` on a video without and with the overlay, stage by stage, against decoding alone;
and `VideoCache`, the videos the video and growth settings make (a video cut or looped to n frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DiffMeshError
from ..paths import DEMO_VIDEO
from .measure import (PeakSampler, Recorder, max_or_none, median_stages, paired_ratio, peak_self_mb, round_robin,
                      rounded, target, timing_line)
from .options import QUICK_VIDEO_FRAMES, TARGETS, BenchOptions, timed_rounds, warmup_calls


class VideoCache:
    """Videos the benchmark makes in its temporary folder: the first n frames of a video, looped when it is
    shorter (all lengths written in one decoding pass)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: dict[tuple[str, int], Path] = {}

    def looped(self, source: Path, lengths: tuple[int, ...]) -> dict[int, Path]:
        from ..video.decode import VideoWriter, iter_frames, probe_video

        todo = sorted({n for n in lengths if (str(source), n) not in self.made})
        if todo:
            info = probe_video(source)
            writers = {n: VideoWriter(self.folder / f"{Path(source).stem}_{n}.mp4", info.rate or info.fps)
                       for n in todo}
            try:
                i, longest = 0, max(todo)
                while i < longest:
                    before = i
                    for frame in iter_frames(source):
                        for n, w in writers.items():
                            if i < n:
                                w.write(frame.rgb)
                        i += 1
                        if i >= longest:
                            break
                    if i == before:
                        raise DiffMeshError(f"{source} has no decodable frames")
                for w in writers.values():
                    w.close()
            except BaseException:
                for w in writers.values():
                    w.abort()
                raise
            for n, w in writers.items():
                self.made[(str(source), n)] = w.path
        return {n: self.made[(str(source), n)] for n in lengths}


def bench_video(opts: BenchOptions, device: torch.device, rec: Recorder, cache: VideoCache) -> None:
    from ..pipeline import RunSettings, run_video
    from ..video.decode import iter_frames, probe_video

    source = Path(opts.video) if opts.video else DEMO_VIDEO
    if not source.is_file():
        rec.emit({"setting": "video", "kind": "skipped", "reason": f"video not found: {source} (pass --video)"})
        return
    video = cache.looped(source, (QUICK_VIDEO_FRAMES,))[QUICK_VIDEO_FRAMES] if opts.quick else source
    info = probe_video(video)
    repeats, warmup = timed_rounds(opts, "video"), warmup_calls(opts, "video")
    outdir = cache.folder / "video_out"
    runs: dict[str, list[dict]] = {"no_render": [], "render": [], "two_people": []}
    peaks: dict[str, list[float]] = {"decode_only": [], "no_render": [], "render": [], "two_people": []}
    frames_seen, people_seen = {}, {}
    common = dict(device=str(device), progress=False, force=True, body="anny")

    def decode():
        frames_seen["decode_only"] = sum(1 for _ in iter_frames(video))

    def pipeline(render: bool, people: int = 1):       # 1: the single-person path, whose targets these are
        name = "two_people" if people == 2 else "render" if render else "no_render"

        def call():
            summary = run_video(video, outdir, RunSettings(render=render, max_people=people, **common))
            runs[name].append(dict(summary.seconds))
            people_seen[name] = summary.people
            frames_seen[name] = summary.frames
        return call

    # two_people: `--max-people 2` (the demo has a man on a box and a woman below him): the multi-person path
    items = {"decode_only": decode, "no_render": pipeline(False), "render": pipeline(True),
             "two_people": pipeline(False, 2)}

    def sampled(name, fn):
        def call():
            with PeakSampler(tree=True, interval=0.05) as s:
                fn()
            peaks[name].append(s.peak_mb)
        return call

    for _ in range(warmup):                       # imports, MediaPipe's graph, the model and body caches: untimed
        items["no_render"]()
        items["two_people"]()
    runs["no_render"].clear()
    runs["two_people"].clear()
    samples = round_robin({k: sampled(k, fn) for k, fn in items.items()}, repeats, 0, device)
    T = frames_seen.get("no_render") or info.num_frames
    decode_s = float(np.median(samples["decode_only"]))
    base = {"video": str(video), "source_video": str(source), "resolution": [info.width, info.height],
            "video_fps": info.fps, "cut": f"first {QUICK_VIDEO_FRAMES} frames (--quick)" if opts.quick else None}
    rec.emit(timing_line("video", "decode", "decode_only", samples["decode_only"], frames_seen["decode_only"], repeats,
                         warmup, **base, note="iter_frames alone (PyAV in its thread, RGB conversion): the floor",
                         memory={"kind": "rss_tree_sampled", "peak_mb": rounded(max_or_none(peaks["decode_only"]), 1)}))
    for name in ("no_render", "render", "two_people"):
        line = dict(_pipeline_line(name, runs[name], peaks[name], samples, T, decode_s, base),
                    people=people_seen.get(name))
        rec.emit(timing_line("video", "pipeline", name, samples[name], T, repeats, warmup, **line))


def _pipeline_line(name: str, runs: list[dict], peaks: list, samples: dict, T: int, decode_s: float, base: dict
                   ) -> dict:
    """What the runs of `run_video` without ('no_render') or with ('render') the overlay measured, besides the
    timings: stages, fps, memory, ratios and the targets."""
    stages = median_stages(runs, T)
    totals = [r["total"] for r in runs]
    processing = [r["total"] - r.get("setup", 0.0) for r in runs]
    line = {**base, "stages": stages, "fps_total": T / float(np.median(totals)),
            "fps_without_setup": T / float(np.median(processing)),
            "memory": {"kind": "rss_tree_sampled", "peak_mb": rounded(max_or_none(peaks), 1),
                       "process_peak_mb": round(peak_self_mb(), 1),
                       "note": "peak_mb: this process and its helper processes (the keypoint worker), sampled "
                               "at 20 Hz during the runs; process_peak_mb: this process's peak so far (all "
                               "settings before included)"},
            "ratio_to": {"decode_only": paired_ratio(samples[name], samples["decode_only"])}}
    keyed = "decode+keypoints"
    if keyed in stages:
        line["keypoints_estimate_s"] = stages[keyed]["median_s"] - decode_s
    if name == "no_render":
        shares = [sum(r.get(k, 0.0) for k in ("diffmesh", "retarget", "body")) / r["total"] for r in runs]
        line["model_body_share"] = float(np.median(shares))
        line["targets"] = [target("fps without render (whole run)", line["fps_total"],
                                  TARGETS["video_fps_no_render"], ">="),
                           target("DiffMesh + body share of the run", line["model_body_share"],
                                  TARGETS["video_model_body_share"], "<")]
    elif name == "render":
        line["ratio_to"]["no_render"] = paired_ratio(samples["render"], samples["no_render"])
        line["targets"] = [target("fps with render (whole run)", line["fps_total"], TARGETS["video_fps_render"],
                                  ">=")]
    else:
        line["ratio_to"]["no_render"] = paired_ratio(samples["two_people"], samples["no_render"])
        line["targets"] = [target("fps for two people without render (whole run)", line["fps_total"],
                                  TARGETS["video_fps_two_people"], ">=")]
    return line

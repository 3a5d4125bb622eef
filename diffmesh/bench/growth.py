"""The growth setting: the model and the whole pipeline on ever longer videos, each length in a fresh Python process
(peak resident memory is per process), with a least-squares line through time and memory. `child_main` is what
those processes run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import DiffMeshError
from ..paths import DEFAULT_CHECKPOINT, DEMO_VIDEO
from .measure import (PeakSampler, Recorder, finite, linear_fit, load_1min, max_or_none, median_stages, peak_self_mb,
                      rounded, target, timing_line)
from .options import (GROWTH_LENGTHS, GROWTH_MODEL_REPEATS, QUICK_GROWTH_LENGTHS, QUICK_GROWTH_MODEL_REPEATS, TARGETS,
                      BenchOptions, timed_rounds)
from .video import VideoCache


def _child(spec: dict, timeout: float = 3600) -> tuple[dict, float, float | None]:
    """Runs `child_main(SPEC)` in a fresh Python process; its JSON result, its wall seconds (with the interpreter
    start) and the sampled peak resident memory of it and its descendants (the pipeline's keypoint worker
    included). Started with `-c` so that the process imports only what `diffmesh run` imports."""
    cmd = [sys.executable, "-c", "import sys; from diffmesh.bench.growth import child_main; child_main(sys.argv[1:])",
           json.dumps(spec)]
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    load = load_1min()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    with PeakSampler(proc.pid, tree=True, interval=0.05) as sampler:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise DiffMeshError(f"bench child {spec.get('part')} T={spec.get('frames')} ran past {timeout:.0f} s")
    wall = time.perf_counter() - t
    result = [ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not result:
        tail = " | ".join(err.strip().splitlines()[-3:])
        raise DiffMeshError(f"bench child {spec.get('part')} T={spec.get('frames')} failed (exit {proc.returncode}): "
                            f"{tail}")
    return {**json.loads(result[-1][len("BENCH_RESULT "):]), "load_1min_at_start": load}, wall, sampler.peak_mb


def synthetic_keypoints(T: int, seed: int = 0, inputs: str = "2d+vis") -> np.ndarray:
    """(T, 17, 3) pixels + confidence: a person-sized 2D skeleton in a 1280x720 frame that sways and drifts; for a
    "2d+3d" model (T, 17, 6), with the same skeleton as root-relative metres (flat, 400 px a metre) after it."""
    from ..body import H36M_PARENTS

    rng = np.random.default_rng(seed)
    bones = rng.normal(0, 1, (17, 2)) * [25, 45]
    pose = np.zeros((17, 2))
    for j, p in enumerate(H36M_PARENTS):
        pose[j] = bones[j] if p < 0 else pose[p] + bones[j]
    t = np.arange(T)[:, None, None] / 30.0
    xy = pose[None] + 40 * np.sin(2 * np.pi * 0.5 * t + np.arange(17)[None, :, None]) + [640, 360]
    xy = xy + rng.normal(0, 2, xy.shape)
    conf = np.full((T, 17, 1), 0.9)
    kp = np.concatenate([xy, conf], -1)
    if inputs == "2d+3d":
        kp = np.concatenate([kp, (xy - xy[:, :1]) / 400.0, np.zeros((T, 17, 1))], -1)
    return kp.astype(np.float32)


def _child_model(spec: dict) -> dict:
    """DiffMesh (the shipped checkpoint) + the Anny body's joints on T frames of synthetic keypoints, cut into
    clips as the pipeline cuts them, through the pipeline's own `recover_meshes` and `body_joints`."""
    from ..body import load_body
    from ..checkpoint import load_model
    from ..pipeline import body_joints, cut_clips, recover_meshes
    from ..video.presence import Presence

    T, device = spec["frames"], spec["device"]
    body = load_body("anny")
    model = load_model(DEFAULT_CHECKPOINT, body, expect={"input": "keypoints"}).to(device).eval()
    keypoints = synthetic_keypoints(T, inputs=model.cfg.keypoint_inputs)
    presence = Presence(np.ones(T, bool), np.zeros(T, np.int64), np.full(T, "ok"), np.ones(T, np.float32))
    clips = cut_clips(presence, model.cfg.num_frames)

    def run(kp, cl, n):
        t0 = time.perf_counter()
        rotmats, shapes = recover_meshes(model, kp, cl, n, device=device)
        t1 = time.perf_counter()
        body_joints(body, rotmats, shapes)
        return t1 - t0, time.perf_counter() - t1

    run(keypoints[:32], clips[:2], 32)                         # warm-up: allocator, kernels
    parts = [run(keypoints, clips, T) for _ in range(spec["repeats"])]
    return {"seconds": [a + b for a, b in parts], "diffmesh_s": [a for a, _ in parts], "body_s": [b for _, b in parts],
            "clips": len(clips)}


def _child_pipeline(spec: dict) -> dict:
    """`diffmesh run VIDEO --max-people 1 --no-render --force --quiet` (`run_video` with the same settings)
    once: the single-person path, whose memory growth the targets are about."""
    from ..pipeline import RunSettings, run_video

    summary = run_video(spec["video"], spec["outdir"], RunSettings(render=False, force=True, progress=False,
                                                                   device=spec["device"], max_people=1))
    return {"seconds": [summary.seconds["total"]], "stages": summary.seconds, "frames": summary.frames,
            "valid_frames": summary.valid_frames}


def child_main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    with torch.inference_mode():
        result = _child_model(spec) if spec["part"] == "model" else _child_pipeline(spec)
    result.update(peak_rss_mb=peak_self_mb(), torch_threads=torch.get_num_threads())
    if spec["device"].startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def bench_growth(opts: BenchOptions, device: torch.device, rec: Recorder, cache: VideoCache) -> None:
    lengths = QUICK_GROWTH_LENGTHS if opts.quick else GROWTH_LENGTHS
    rounds = timed_rounds(opts, "growth")
    model_repeats = opts.repeats or (QUICK_GROWTH_MODEL_REPEATS if opts.quick else GROWTH_MODEL_REPEATS)
    base = {"device": str(device), "threads": opts.threads}

    # The model: DiffMesh + body joints, one fresh process per length (its peak memory is then its own).
    medians, mems = [], []
    for T in lengths:
        res, wall, tree_peak = _child({**base, "part": "model", "frames": T, "repeats": model_repeats})
        medians.append(float(np.median(res["seconds"])))
        mems.append(max(res["peak_rss_mb"], tree_peak or 0.0))
        rec.emit(timing_line(
            "growth", "model", f"T={T}", res["seconds"], T, model_repeats, 1, input="synthetic keypoints (T, 17, C)",
            clips=res["clips"], diffmesh_median_s=float(np.median(res["diffmesh_s"])),
            body_median_s=float(np.median(res["body_s"])), subprocess_wall_s=wall,
            load_1min_at_start=res["load_1min_at_start"],
            memory={"kind": "subprocess", "peak_mb": round(mems[-1], 1), "peak_rss_mb": round(res["peak_rss_mb"], 1),
                    "tree_peak_sampled_mb": rounded(tree_peak, 1), "cuda_peak_mb": rounded(res.get("cuda_peak_mb"), 1),
                    "note": "the whole process (interpreter, torch, the Anny body and the model included); "
                            "peak_rss_mb: its VmHWM (exact); tree_peak_sampled_mb: sampled at 20 Hz; "
                            "peak_mb: the larger"}))
    _emit_fit(rec, "model", lengths, medians, mems, "DiffMesh (shipped tiny checkpoint, batches of 64 clips) + "
              "Anny joints, through pipeline.recover_meshes and pipeline.body_joints; memory: peak_mb")

    # The pipeline: `diffmesh run --no-render` on looped demo videos, one fresh process per length and round.
    source = Path(opts.video) if opts.video else DEMO_VIDEO
    if not source.is_file():
        rec.emit({"setting": "growth", "kind": "skipped", "method": "pipeline",
                  "reason": f"video not found: {source} (pass --video or set DIFFMESH_SHARED)"})
        return
    t = time.perf_counter()
    videos = cache.looped(source, lengths)
    made_s = time.perf_counter() - t
    results: dict[int, list[tuple[dict, float, float | None]]] = {T: [] for T in lengths}
    for r in range(rounds):
        for T in (lengths if r % 2 == 0 else lengths[::-1]):
            results[T].append(_child({**base, "part": "pipeline", "frames": T, "video": str(videos[T]),
                                      "outdir": str(cache.folder / f"growth_out_{T}")}))
    medians, mems, mains = [], [], []
    for T in lengths:
        runs = results[T]
        mains.append(max(res["peak_rss_mb"] for res, _, _ in runs))
        secs = [res["seconds"][0] for res, _, _ in runs]
        peak = max(max(res["peak_rss_mb"], tree or 0.0) for res, _, tree in runs)
        medians.append(float(np.median(secs)))
        mems.append(peak)
        stages = median_stages([res["stages"] for res, _, _ in runs], runs[0][0]["frames"])
        rec.emit(timing_line(
            "growth", "pipeline", f"T={T}", secs, runs[0][0]["frames"], rounds, 0,
            input=f"{source.name} looped to {T} frames (re-encoded, H.264)", stages=stages,
            valid_frames=runs[0][0]["valid_frames"],
            subprocess_wall_s=[w for _, w, _ in runs], videos_written_s=made_s,
            load_1min_at_start=[res["load_1min_at_start"] for res, _, _ in runs],
            memory={"kind": "subprocess", "peak_mb": round(peak, 1),
                    "peak_rss_mb": round(max(res["peak_rss_mb"] for res, _, _ in runs), 1),
                    "tree_peak_sampled_mb": rounded(max_or_none([p for _, _, p in runs]), 1),
                    "cuda_peak_mb": rounded(max_or_none([res.get("cuda_peak_mb") for res, _, _ in runs]), 1),
                    "note": "peak_rss_mb: the run's main process (VmHWM, exact); tree_peak_sampled_mb: the sum over "
                            "it and its helper processes (the keypoint worker), sampled at 20 Hz; peak_mb: the "
                            "larger"}))
    targets = ([target("peak resident memory at 4096 frames (MB)", mems[lengths.index(4096)],
                       TARGETS["growth_peak_rss_mb_4096"], "<")] if 4096 in lengths else [])
    _emit_fit(rec, "pipeline", lengths, medians, mems, "run_video(render=False) in a fresh process per length; "
              "time: summary.seconds['total'] (without the interpreter start); memory: peak_mb (all its processes); "
              "memory_fit_main_process: the main process alone (VmHWM)", targets, mains)


def _per_1000(slope: float | None, digits: int) -> float | None:
    """A fitted slope per 1000 frames (per frame: ms from s), rounded; None stays None."""
    return rounded(slope * 1000 if slope is not None else None, digits)


def _emit_fit(rec: Recorder, method: str, lengths, seconds, mems, note: str, targets: list | None = None,
              main_mems: list | None = None) -> dict:
    tf, mf = linear_fit(lengths, seconds), linear_fit(lengths, mems)
    line = {"setting": "growth", "kind": "fit", "method": method, "variant": "linear_fit", "frames_list": list(lengths),
            "median_s": seconds, "peak_rss_mb": mems,
            "time_fit": {**tf, "slope_ms_per_frame": _per_1000(tf["slope"], 4)},
            "memory_fit": {**mf, "slope_mb_per_1000_frames": _per_1000(mf["slope"], 2)},
            "note": note}
    if main_mems is not None:
        mm = linear_fit(lengths, main_mems)
        line["peak_rss_main_mb"] = main_mems
        line["memory_fit_main_process"] = {**mm, "slope_mb_per_1000_frames": _per_1000(mm["slope"], 2)}
    if targets:
        line["targets"] = targets
    rec.emit(finite(line))
    return line

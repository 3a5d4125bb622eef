"""The bench's options and fixed tables: which settings exist, how many rounds each runs, the paper's figures and
the targets each setting is judged against; `check_options` validates the options before anything heavy runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DeviceError, DiffMeshError, SettingsError

SCHEMA = "diffmesh-bench/1"
SETTINGS = ("table4", "table9", "video", "growth", "batch", "app")
DEFAULT_SETTINGS = ("table4", "table9", "video", "growth")   # batch (a Ray instance) and app (servers) on request
TABLE4_METHODS = ("diffmesh", "baseline1", "baseline2")
GROWTH_LENGTHS = (64, 256, 1024, 4096)
QUICK_GROWTH_LENGTHS = (64, 256)
QUICK_VIDEO_FRAMES = 64
TABLE9_FRAMES, TABLE9_CLIPS = 64, 4

# Timed rounds per setting (`--repeats` overrides all); warm-up calls per item before them.
REPEATS = {"table4": 10, "table9": 5, "video": 3, "growth": 1, "app": 3}
QUICK_REPEATS = {"table4": 3, "table9": 1, "video": 1, "growth": 1, "app": 1}
GROWTH_MODEL_REPEATS, QUICK_GROWTH_MODEL_REPEATS = 3, 1
WARMUP = {"table4": 2, "table9": 1, "video": 1, "growth": 1}
QUICK_WARMUP = {"table4": 1, "table9": 1, "video": 1, "growth": 1}

# The paper's figures (one NVIDIA RTX A5000), seconds.
PAPER = {
    "table4": {"diffmesh": 0.2231, "baseline1": 2.1684},
    "table9": {"diffmesh": 0.34, "mpsnet": 1.04, "glot": 1.17},
}
# The speed and memory targets this package is held to (2 CPU cores; ratios from one run).
TARGETS = {
    "table4_vs_baseline1": 1 / 8,   # DiffMesh time / Baseline 1 time
    "table4_vs_baseline2": 1.0,     # DiffMesh time / Baseline 2 time
    "table9_vs_fastest_peer": 0.25,  # DiffMesh (with body) / fastest peer (with body)
    "video_fps_no_render": 45.0,
    "video_fps_render": 20.0,
    "video_fps_two_people": 25.0,   # `--max-people 2` on the demo, no render
    "video_model_body_share": 0.05,
    "growth_peak_rss_mb_4096": 2048.0,
    "batch_pool2_vs_pool1": 1.5,    # eight short clips: 2 local workers' throughput / 1 worker's
    "batch_ray_vs_pool2": 0.85,     # Ray on a local instance (start-up excluded) within 15 % of the 2-worker pool
    "batch_peak_worker_mb": 1200.0,
    "app_page_s": 3.0,              # `diffmesh app` started -> its page served
    "app_vs_run_speed": 0.9,        # `diffmesh run` wall time / the app's job wall time, same video and options
}


@dataclass
class BenchOptions:
    settings: tuple[str, ...] = DEFAULT_SETTINGS
    quick: bool = False
    device: str = "cpu"
    repeats: int | None = None      # None: REPEATS / QUICK_REPEATS per setting
    out: str | None = None
    video: str | None = None        # None: the demo video in the shared data folder
    smpl_path: str | None = None    # None: SMPL-layout random buffers (SMPLBody.from_random) for table9
    threads: int | None = None      # None: torch's default
    presets: tuple[str, ...] | None = None  # table4 model sizes; None: tiny,paper (quick: tiny)


def timed_rounds(opts: BenchOptions, setting: str) -> int:
    """Timed rounds of `setting`: --repeats, else the setting's default (quick or full)."""
    return opts.repeats or (QUICK_REPEATS if opts.quick else REPEATS)[setting]


def warmup_calls(opts: BenchOptions, setting: str) -> int:
    """Untimed calls of every item of `setting` before its timed rounds."""
    return (QUICK_WARMUP if opts.quick else WARMUP)[setting]


def parse_list(text: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in (text or "").split(",") if s.strip())
    if not items:
        raise SettingsError(f"no {what} given; choose from {','.join(allowed)}")
    unknown = [s for s in items if s not in allowed]
    if unknown:
        raise SettingsError(f"unknown {what} {','.join(unknown)}; choose from {','.join(allowed)}")
    return tuple(dict.fromkeys(items))


def check_options(opts: BenchOptions) -> torch.device:
    """Validate the options before anything heavy runs; the device to use. Raises a DiffMeshError (SettingsError,
    DeviceError) with one line."""
    from ..model import PRESETS

    parse_list(",".join(opts.settings), SETTINGS, "setting")
    if opts.presets is not None:
        parse_list(",".join(opts.presets), tuple(PRESETS), "preset")
    if opts.repeats is not None and opts.repeats < 1:
        raise SettingsError(f"--repeats must be at least 1, got {opts.repeats}")
    if opts.threads is not None and opts.threads < 1:
        raise SettingsError(f"--threads must be at least 1, got {opts.threads}")
    if opts.video is not None and not Path(opts.video).is_file():
        raise DiffMeshError(f"--video {opts.video}: no such file")
    if opts.device == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise DeviceError(f"--device cuda: CUDA is not available ({why}, torch {torch.__version__}); "
                              "run with --device cpu")
        return torch.device("cuda")
    if opts.device != "cpu":
        raise SettingsError(f"--device must be cpu or cuda, got '{opts.device}'")
    return torch.device("cpu")

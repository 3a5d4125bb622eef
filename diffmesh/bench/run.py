"""The whole bench run: the options checked, the chosen settings run one after another, every line recorded."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .app import bench_app
from .batch import bench_batch
from .growth import bench_growth
from .measure import Recorder, hardware_info
from .options import SCHEMA, BenchOptions, check_options
from .table4 import bench_table4
from .table9 import bench_table9
from .video import VideoCache, bench_video


def run_bench(opts: BenchOptions, echo: Callable[[str], None] | None = None) -> list[dict]:
    """Run the chosen settings; returns the JSON lines (also printed, and written to opts.out)."""
    device = check_options(opts)
    threads_before = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    try:
        return _run_settings(opts, device, echo)
    finally:
        torch.set_num_threads(threads_before)


def _run_settings(opts: BenchOptions, device: torch.device, echo: Callable[[str], None] | None = None) -> list[dict]:
    common = {"schema": SCHEMA, "run_id": time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}",
              "hardware": hardware_info(device), "torch": torch.__version__, "device": str(device),
              "quick": opts.quick}
    rec = Recorder(opts.out, common, echo)
    with tempfile.TemporaryDirectory(prefix="diffmesh-bench-") as tmp:
        cache = VideoCache(Path(tmp))
        for setting in opts.settings:
            print(f"diffmesh bench: {setting} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            if setting == "table4":
                bench_table4(opts, device, rec)
            elif setting == "table9":
                bench_table9(opts, device, rec)
            elif setting == "video":
                bench_video(opts, device, rec, cache)
            elif setting == "batch":
                bench_batch(opts, device, rec, Path(tmp))
            elif setting == "app":
                bench_app(opts, rec, Path(tmp))
            else:
                bench_growth(opts, device, rec, cache)
            print(f"diffmesh bench: {setting} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return rec.lines

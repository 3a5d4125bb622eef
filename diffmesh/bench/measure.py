"""Timing and memory tools of the bench: the machine's description, resident-memory readings and a sampler,
round-robin timing, the statistics reported (medians, paired ratios, a least-squares line) and the JSON-lines
`Recorder` every setting writes through."""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import DiffMeshError

# ---------------------------------------------------------------- hardware

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024)
    except (OSError, IndexError, ValueError):
        pass
    return None


def hardware_info(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_mb": memory_total_mb(), "gpu": gpu, "platform": platform.platform()}


def load_1min() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# ---------------------------------------------------------------- memory

_PAGE_MB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / 2 ** 20


def _ru_maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set (MB) of this process (RUSAGE_SELF) or of its largest waited-for child (RUSAGE_CHILDREN)."""
    rss = resource.getrusage(who).ru_maxrss
    return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def _hwm_mb(pid: int | str = "self") -> float | None:
    """Peak resident set (MB) of a process's current memory map (VmHWM; Linux). Unlike `ru_maxrss`, it starts
    afresh at exec, so a subprocess's figure does not include the RSS of the process that started it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def peak_self_mb() -> float:
    hwm = _hwm_mb()
    return hwm if hwm is not None else _ru_maxrss_mb()


def _rss_mb(pid: int | str = "self") -> float | None:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_MB
    except (OSError, IndexError, ValueError):
        return None


def _descendants(root: int) -> list[int]:
    """`root` and every process below it (Linux /proc; just `root` elsewhere)."""
    if not Path("/proc/self/stat").exists():
        return [root]
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class PeakSampler:
    """Samples resident memory in a background thread: the process `pid` alone or with its descendants (`tree`,
    the process list rescanned once a second, cheap on a small machine). `peak_mb` is the largest sample (None
    without /proc). Sampling misses spikes shorter than `interval`."""

    def __init__(self, pid: int | None = None, tree: bool = False, interval: float = 0.02):
        self.pid, self.tree, self.interval = pid or os.getpid(), tree, interval
        self.peak_mb: float | None = None
        self._pids, self._scanned = [self.pid], 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="diffmesh-bench-rss", daemon=True)

    def sample(self) -> None:
        if self.tree and time.monotonic() - self._scanned > 1.0:
            self._pids, self._scanned = _descendants(self.pid), time.monotonic()
        values = [_rss_mb(p) for p in self._pids]
        rss = sum(v for v in values if v is not None) if any(v is not None for v in values) else None
        if rss is not None and rss > 0:
            self.peak_mb = rss if self.peak_mb is None else max(self.peak_mb, rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def call_memory(fn: Callable[[], object], device: torch.device) -> dict:
    """Peak memory of one call of `fn` (outside the timed rounds): CUDA's max allocated bytes on a GPU; on the CPU
    this process's resident memory sampled every 2 ms during the call (its increase over the resident memory before
    the call understates the call's need when the allocator reuses pages freed earlier) and the process's peak so
    far (VmHWM or `ru_maxrss`, process-wide: it includes everything this process ran before)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {"kind": "cuda_max_allocated", "peak_mb": round(peak / 2 ** 20, 1),
                "increase_mb": round((peak - base) / 2 ** 20, 1)}
    before = _rss_mb()
    with PeakSampler(interval=0.002) as sampler:
        fn()
    peak = sampler.peak_mb
    return {"kind": "rss_sampled", "peak_mb": rounded(peak, 1),
            "increase_mb": rounded(peak - before, 1) if peak is not None and before is not None else None,
            "process_peak_mb": round(peak_self_mb(), 1)}


# ---------------------------------------------------------------- timing

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin(items: dict[str, Callable[[], object]], repeats: int, warmup: int, device: torch.device
                ) -> dict[str, list[float]]:
    """Seconds of each item per round: `warmup` untimed calls of every item, then `repeats` rounds in which every
    item runs once, in an order that rotates by one each round."""
    names = list(items)
    for _ in range(warmup):
        for name in names:
            items[name]()
    _sync(device)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        gc.collect()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            _sync(device)
            t = time.perf_counter()
            items[name]()
            _sync(device)
            samples[name].append(time.perf_counter() - t)
    return samples


def stats(samples: list[float]) -> dict:
    return {"median_s": float(np.median(samples)), "min_s": float(min(samples)), "max_s": float(max(samples)),
            "samples_s": [float(s) for s in samples]}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r] (items timed in the same round)."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def linear_fit(x, y) -> dict:
    """Least-squares y = intercept + slope * x; R^2 and the largest |fit - y| / y as linearity checks."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2:
        return {"intercept": float(y[0]) if len(y) else None, "slope": None, "r2": None, "max_rel_dev": None}
    slope, intercept = np.polyfit(x, y, 1)
    fit = intercept + slope * x
    ss_res, ss_tot = float(((y - fit) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    return {"intercept": float(intercept), "slope": float(slope),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
            "max_rel_dev": float(np.max(np.abs(fit - y) / np.abs(y)))}


def rounded(x, n):
    return None if x is None else round(float(x), n)


def max_or_none(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


def median_stages(runs: list[dict[str, float]], frames: int) -> dict:
    """Each stage's median seconds over the runs that have it, with ms per frame and fps."""
    keys = list(dict.fromkeys(k for r in runs for k in r))
    out = {}
    for k in keys:
        med = float(np.median([r[k] for r in runs if k in r]))
        out[k] = {"median_s": med, "ms_per_frame": 1000 * med / frames, "fps": frames / med if med > 0 else None}
    return out


def target(name: str, value: float | None, limit: float, op: str) -> dict:
    met = None if value is None else (value <= limit if op == "<=" else value >= limit if op == ">=" else
                                      value < limit)
    return {"name": name, "value": rounded(value, 4), "op": op, "limit": round(limit, 4), "met": met}


# ---------------------------------------------------------------- output

class Recorder:
    """Prints each line as JSON and keeps `out` (if given) a complete JSON-lines file after every line: its earlier
    lines, then this run's, written to a temporary file in the same folder and renamed over it."""

    def __init__(self, out: str | None, common: dict, echo: Callable[[str], None] | None = None):
        self.out = Path(out) if out else None
        self.common = common
        self.lines: list[dict] = []
        self.echo = echo or (lambda s: print(s, flush=True))
        self._previous = ""
        if self.out is not None:
            if not self.out.parent.is_dir():
                raise DiffMeshError(f"--out {self.out}: folder {self.out.parent} does not exist")
            if self.out.exists():
                self._previous = self.out.read_text()
                if self._previous and not self._previous.endswith("\n"):
                    self._previous += "\n"

    def emit(self, line: dict) -> dict:
        line = {**self.common, "load_1min": load_1min(), **line}
        self.lines.append(line)
        text = json.dumps(line, allow_nan=False, default=_json_default)
        self.echo(text)
        if self.out is not None:
            tmp = self.out.with_name(f".{self.out.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with open(tmp, "w") as fh:
                    fh.write(self._previous + "".join(json.dumps(x, allow_nan=False, default=_json_default) + "\n"
                                                      for x in self.lines))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.out)
            finally:
                tmp.unlink(missing_ok=True)
        return line


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def finite(x):
    """JSON has no NaN/inf: map them to None, recursively."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def timing_line(setting: str, method: str, variant: str, samples: list[float], frames: int, repeats: int,
                warmup: int, **extra) -> dict:
    s = stats(samples)
    line = {"setting": setting, "kind": "timing", "method": method, "variant": variant, "repeats": repeats,
            "warmup": warmup, **s, "frames": frames,
            "ms_per_frame": 1000 * s["median_s"] / frames, "fps": frames / s["median_s"]}
    line.update(extra)
    return finite(line)

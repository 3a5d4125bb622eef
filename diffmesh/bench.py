"""`diffmesh bench`: the paper's speed claims measured side by side on this machine, and the pipeline's cost as
videos grow. One JSON object per line on stdout (and in `--out`); docs/performance.md has a full run.

Settings (`--settings`, default all four):
- table4: one clip (f=16, batch 1) of 2D keypoints through DiffMesh, Baseline 1 and Baseline 2 (the paper's
  Table 4): the whole forward, and the forward without the input adapter (conditional-feature generation, the
  reverse chain and the mesh head on precomputed adapter tokens). Baseline 1 twice: as this package runs it (its
  f chains batched as one chain of batch f) and as the paper counts it (the f chains one after another).
- table9: a 64-frame video of 2048-d features (the paper's Table 9): DiffMesh (paper size, feature input) on
  [4, 16, 2048] and the SMPL-layout body on its 64 frames, against the temporal heads of TCMR, MPS-Net and GLoT
  (`peers.py`) on 64 edge-padded sliding windows [64, 16, 2048] and the same body model; every method outputs
  vertices [64, 6890, 3]. Besides (not --quick): the peers with the bodies their released code poses per window
  (MPS-Net 17, GLoT 2) and with the 64 windows run one at a time (batch 1).
- video: `run_video` on the demo video without and with the overlay, stage by stage, and decoding alone.
- growth: the model (DiffMesh + body joints, synthetic keypoints) and the whole pipeline (a video made by looping
  the demo's frames) on 64, 256, 1024 and 4096 frames, each length in a fresh subprocess (peak resident memory is
  per process), with a least-squares line through time and memory.

Timing: warm-up calls first; then rounds in which every compared item runs once (round-robin, the starting item
rotating from round to round), so ratios come from one run under the same load; medians over rounds. Ratios
(`ratio_to`) are the median over rounds of this item's time divided by the other's in the same round.
"""

from __future__ import annotations

import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import DiffMeshError
from .paths import DEMO_VIDEO

SCHEMA = "diffmesh-bench/1"
SETTINGS = ("table4", "table9", "video", "growth")
TABLE4_METHODS = ("diffmesh", "baseline1", "baseline2")
GROWTH_LENGTHS = (64, 256, 1024, 4096)
QUICK_GROWTH_LENGTHS = (64, 256)
QUICK_VIDEO_FRAMES = 64
TABLE9_FRAMES, TABLE9_CLIPS = 64, 4

# Timed rounds per setting (`--repeats` overrides all); warm-up calls per item before them.
REPEATS = {"table4": 10, "table9": 5, "video": 3, "growth": 1}
QUICK_REPEATS = {"table4": 3, "table9": 1, "video": 1, "growth": 1}
GROWTH_MODEL_REPEATS, QUICK_GROWTH_MODEL_REPEATS = 3, 1
WARMUP = {"table4": 2, "table9": 1, "video": 1, "growth": 1}
QUICK_WARMUP = {"table4": 1, "table9": 1, "video": 1, "growth": 1}

# The paper's figures (one NVIDIA RTX A5000), seconds.
PAPER = {
    "table4": {"diffmesh": 0.2231, "baseline1": 2.1684},
    "table9": {"diffmesh": 0.34, "mpsnet": 1.04, "glot": 1.17},
}
# The targets (2 CPU cores; ratios from one run).
TARGETS = {
    "table4_vs_baseline1": 1 / 8,   # DiffMesh time / Baseline 1 time
    "table4_vs_baseline2": 1.0,     # DiffMesh time / Baseline 2 time
    "table9_vs_fastest_peer": 0.25,  # DiffMesh (with body) / fastest peer (with body)
    "video_fps_no_render": 45.0,
    "video_fps_render": 20.0,
    "video_model_body_share": 0.05,
    "growth_peak_rss_mb_4096": 2048.0,
}


@dataclass
class BenchOptions:
    settings: tuple[str, ...] = SETTINGS
    quick: bool = False
    device: str = "cpu"
    repeats: int | None = None      # None: REPEATS / QUICK_REPEATS per setting
    out: str | None = None
    video: str | None = None        # None: the demo video in the shared data folder
    smpl_path: str | None = None    # None: SMPL-layout random buffers (SMPLBody.from_random) for table9
    threads: int | None = None      # None: torch's default
    presets: tuple[str, ...] | None = None  # table4 model sizes; None: tiny,paper (quick: tiny)


# ---------------------------------------------------------------- options and environment

def parse_list(text: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in (text or "").split(",") if s.strip())
    if not items:
        raise ValueError(f"no {what} given; choose from {','.join(allowed)}")
    unknown = [s for s in items if s not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {','.join(unknown)}; choose from {','.join(allowed)}")
    return tuple(dict.fromkeys(items))


def check_options(opts: BenchOptions) -> torch.device:
    """Validate the options before anything heavy runs; the device to use. Raises DiffMeshError/ValueError with
    one line."""
    from .model import PRESETS

    parse_list(",".join(opts.settings), SETTINGS, "setting")
    if opts.presets is not None:
        parse_list(",".join(opts.presets), tuple(PRESETS), "preset")
    if opts.repeats is not None and opts.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {opts.repeats}")
    if opts.threads is not None and opts.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {opts.threads}")
    if opts.video is not None and not Path(opts.video).is_file():
        raise DiffMeshError(f"--video {opts.video}: no such file")
    if opts.device == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise DiffMeshError(f"--device cuda: CUDA is not available ({why}, torch {torch.__version__}); "
                                "run with --device cpu")
        return torch.device("cuda")
    if opts.device != "cpu":
        raise ValueError(f"--device must be cpu or cuda, got '{opts.device}'")
    return torch.device("cpu")


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


def _load1() -> float | None:
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


def _peak_self_mb() -> float:
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

    def __enter__(self) -> "PeakSampler":
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
    return {"kind": "rss_sampled", "peak_mb": _round(peak, 1),
            "increase_mb": _round(peak - before, 1) if peak is not None and before is not None else None,
            "process_peak_mb": round(_peak_self_mb(), 1)}


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


def _round(x, n):
    return None if x is None else round(float(x), n)


def target(name: str, value: float | None, limit: float, op: str) -> dict:
    met = None if value is None else (value <= limit if op == "<=" else value >= limit if op == ">=" else
                                      value < limit)
    return {"name": name, "value": _round(value, 4), "op": op, "limit": round(limit, 4), "met": met}


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
        line = {**self.common, "load_1min": _load1(), **line}
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


def _finite(x):
    """JSON has no NaN/inf: map them to None, recursively."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
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
    return _finite(line)


# ---------------------------------------------------------------- Table 4

class _FixedTokens(torch.nn.Module):
    """Stands in for the input adapter: returns tokens computed beforehand."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.tokens = tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens


@contextmanager
def adapter_replaced(model, tokens: torch.Tensor):
    """`model` with its input adapter replaced by precomputed `tokens` (B, f, T, d): the model's own forward then
    times the conditional-feature generation, the reverse chain and the mesh head only."""
    adapter = model.adapter
    model.adapter = _FixedTokens(tokens)
    try:
        yield model
    finally:
        model.adapter = adapter


def baseline1_sequential(model, x: torch.Tensor, generator: torch.Generator | None = None,
                         tokens: torch.Tensor | None = None):
    """Baseline 1 as the paper runs it: the f per-frame Gaussian chains one after another (batch B each), not side
    by side as a batch of B*f (what `DiffMeshModel.forward` does). Same noise draw, same arithmetic, same result
    (up to float rounding); returns a ModelOutput. `tokens` skips the adapter (precomputed adapter output)."""
    from . import diffusion
    from .model import ModelOutput

    cfg = model.cfg
    if cfg.method != "baseline1":
        raise ValueError(f"baseline1_sequential needs a baseline1 model, got method '{cfg.method}'")
    model.check_input(x)
    B, f, T, d = x.shape[0], cfg.num_frames, cfg.num_tokens, cfg.token_dim
    tokens = model.adapter(x) if tokens is None else tokens
    b = tokens.reshape(B, f, T * d)
    c = model.generator(b)
    noise = torch.randn(B * f, T, d, generator=generator, device=x.device)
    cond = c[:, :f].reshape(B * f, T, d)
    chain = torch.empty_like(noise)
    for j in range(f):                                         # frame j of every clip: rows j, f + j, 2f + j, ...
        rows = torch.arange(B, device=x.device) * f + j
        chain[rows] = diffusion.gaussian_reverse(noise[rows], cond[rows], model.noise_step, model.betas)
    feats = model.out(chain.view(B, f, T * d)) + b
    rotmats, pose6d, shape, camera = model.head(feats)
    return ModelOutput(rotmats, pose6d, shape, camera, feats, denoiser_calls=f * cfg.num_steps)


def _table4_models(preset: str, device: torch.device):
    from .body import load_body
    from .checkpoint import load_model
    from .model import build_model, model_config
    from .paths import WEIGHTS_DIR

    body = load_body("anny")  # the shipped models' pose/shape layout (K=24, S=6); the body itself is not run
    models, weights = {}, {}
    for method in TABLE4_METHODS:
        path = WEIGHTS_DIR / f"{method}_tiny_anny.pt"
        if preset == "tiny" and path.is_file():
            models[method] = load_model(path, body, expect={"method": method, "input": "keypoints"})
            weights[method] = f"shipped {path.name}"
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                models[method] = build_model(model_config(preset, method=method), body)
            weights[method] = "random init (timing does not depend on the weights)"
        models[method].eval().to(device)
    return models, weights


@torch.inference_mode()
def bench_table4(opts: BenchOptions, device: torch.device, rec: Recorder) -> None:
    presets = opts.presets or (("tiny",) if opts.quick else ("tiny", "paper"))
    repeats = opts.repeats or (QUICK_REPEATS if opts.quick else REPEATS)["table4"]
    warmup = (QUICK_WARMUP if opts.quick else WARMUP)["table4"]
    for preset in presets:
        models, weights = _table4_models(preset, device)
        cfg = models["diffmesh"].cfg
        f = cfg.num_frames
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(1, f, cfg.num_keypoints, 3, generator=torch.Generator().manual_seed(1)).to(device)
        tokens = {m: models[m].adapter(x) for m in TABLE4_METHODS}
        steps = {m: models[m](x, generator=g).denoiser_calls for m in TABLE4_METHODS}
        steps["baseline1_sequential"] = baseline1_sequential(models["baseline1"], x, g).denoiser_calls

        def full(m):
            return lambda: models[m](x, generator=g)

        def no_adapter(m):
            def call():
                with adapter_replaced(models[m], tokens[m]) as model:
                    return model(x, generator=g)
            return call

        items = {}
        for m in TABLE4_METHODS:
            items[(m, "batched", "full")] = full(m)
            items[(m, "batched", "no_adapter")] = no_adapter(m)
        items[("baseline1", "sequential", "full")] = lambda: baseline1_sequential(models["baseline1"], x, g)
        items[("baseline1", "sequential", "no_adapter")] = lambda: baseline1_sequential(
            models["baseline1"], x, g, tokens=tokens["baseline1"])
        items[("adapter", "-", "adapter_only")] = lambda: models["diffmesh"].adapter(x)
        samples = round_robin(items, repeats, warmup, device)

        for key, s in samples.items():
            method, variant, scope = key
            step_key = "baseline1_sequential" if variant == "sequential" else method
            ratio_to = {}
            if scope != "adapter_only":
                for other in items:
                    if other != key and other[2] == scope:
                        name = other[0] if other[1] == "batched" else f"{other[0]}_{other[1]}"
                        ratio_to[name] = paired_ratio(s, samples[other])
            line = timing_line(
                "table4", method, variant, s, f, repeats, warmup, scope=scope, preset=preset,
                batch=1, input=f"keypoints (1, {f}, {cfg.num_keypoints}, 3)",
                steps=steps.get(step_key) if scope != "adapter_only" else 0,
                weights=weights.get(method, weights["diffmesh"]),
                parameters=sum(p.numel() for p in (models[method] if method in models
                                                   else models["diffmesh"].adapter).parameters()),
                ratio_to=ratio_to, memory=call_memory(items[key], device))
            if scope == "full" and (method, variant) in (("diffmesh", "batched"), ("baseline1", "sequential")):
                line["paper_s"] = PAPER["table4"][method]      # the paper's chains run one after another
            if method == "diffmesh" and scope != "adapter_only":
                line["targets"] = [
                    target("diffmesh/baseline1 (batched)", ratio_to["baseline1"], TARGETS["table4_vs_baseline1"], "<="),
                    target("diffmesh/baseline1 (sequential, as in the paper)", ratio_to["baseline1_sequential"],
                           TARGETS["table4_vs_baseline1"], "<="),
                    target("diffmesh/baseline2", ratio_to["baseline2"], TARGETS["table4_vs_baseline2"], "<=")]
            if method == "adapter":
                line["note"] = "the input adapter alone (DSTformer-style, the same size in all three methods)"
            rec.emit(line)
        del models, tokens
        gc.collect()


# ---------------------------------------------------------------- Table 9

def _table9_body(opts: BenchOptions):
    from .body import load_body
    from .body.smpl import SMPLBody

    if opts.smpl_path:
        return load_body("smpl", opts.smpl_path), f"SMPL from {opts.smpl_path}"
    return SMPLBody.from_random(), "SMPL layout with random buffers (SMPLBody.from_random: 6890 vertices, 24 bones)"


def _pose_vertices(body, rotmats: torch.Tensor, betas: torch.Tensor, copies: int = 1, chunk: int = 64
                   ) -> torch.Tensor:
    """Vertices of the posed bodies, `copies` times over (the extra copies stand for bodies a released model poses
    besides the output frame; their values do not matter for timing), `chunk` bodies per call. Returns the first
    copy (B, V, 3)."""
    first = None
    for _ in range(copies):
        parts = [body(rotmats[i:i + chunk], betas[i:i + chunk]).vertices for i in range(0, len(rotmats), chunk)]
        if first is None:
            first = torch.cat(parts)
    return first


@torch.inference_mode()
def bench_table9(opts: BenchOptions, device: torch.device, rec: Recorder) -> None:
    from .model import build_model, model_config
    from .peers import PEER_NAMES, SEQLEN, build_peer, count_parameters, sliding_windows

    repeats = opts.repeats or (QUICK_REPEATS if opts.quick else REPEATS)["table9"]
    warmup = (QUICK_WARMUP if opts.quick else WARMUP)["table9"]
    body, body_desc = _table9_body(opts)
    body = body.eval().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(model_config("paper", input="features", feature_dim=2048), body).eval().to(device)
    peers = {name: build_peer(name).to(device) for name in PEER_NAMES}
    T, f = TABLE9_FRAMES, model.cfg.num_frames
    features = torch.randn(T, 2048, generator=torch.Generator().manual_seed(2)).to(device)
    clips = features.view(TABLE9_CLIPS, f, 2048)
    windows = sliding_windows(features, SEQLEN, pad="edge")             # (64, 16, 2048)

    def diffmesh():
        out = model(clips)
        return _pose_vertices(body, out.rotmats.flatten(0, 1), out.shape.repeat_interleave(f, 0))

    def peer(name, copies):
        def call():
            out = peers[name](windows)
            return _pose_vertices(body, out["rotmats"], out["betas"], copies)
        return call

    def peer_one_by_one(name):
        def call():
            outs = [peers[name](windows[i:i + 1]) for i in range(T)]
            return _pose_vertices(body, torch.cat([o["rotmats"] for o in outs]), torch.cat([o["betas"] for o in outs]))
        return call

    items = {("diffmesh", "bodies_per_frame"): diffmesh}
    for name in PEER_NAMES:
        items[(name, "bodies_per_frame")] = peer(name, 1)
    if not opts.quick:
        for name in PEER_NAMES:
            if peers[name].smpl_bodies_per_window > 1:
                items[(name, "bodies_released")] = peer(name, peers[name].smpl_bodies_per_window)
        for name in PEER_NAMES:
            items[(name, "windows_one_by_one")] = peer_one_by_one(name)
    rest_rot = torch.eye(3, device=device).expand(T, 24, 3, 3).contiguous()
    rest_shape = torch.zeros(T, body.num_shape, device=device)
    items[("diffmesh_model_only", "-")] = lambda: model(clips)
    items[("body_only", "-")] = lambda: _pose_vertices(body, rest_rot, rest_shape)
    shapes = {key: tuple(fn().shape) for key, fn in items.items() if key[1] != "-"}
    if any(s != (T, body.num_vertices, 3) for s in shapes.values()):
        raise RuntimeError(f"table9: outputs {shapes} are not all ({T}, {body.num_vertices}, 3)")
    samples = round_robin(items, repeats, warmup, device)

    peers_per_frame = [(n, "bodies_per_frame") for n in PEER_NAMES]
    fastest = min(peers_per_frame, key=lambda k: float(np.median(samples[k])))
    for key, s in samples.items():
        name, variant = key
        line = {"input": f"{TABLE9_CLIPS} clips [{TABLE9_CLIPS}, {f}, 2048]" if name.startswith("diffmesh") else
                f"{T} sliding windows [{T}, {SEQLEN}, 2048], edge-padded, centre frame kept"
                + (", one window per call (batch 1), bodies posed together" if variant == "windows_one_by_one" else ""),
                "body": body_desc, "output": [T, body.num_vertices, 3] if variant != "-" else None}
        if name in PEER_NAMES:
            k = peers[name].smpl_bodies_per_window if variant == "bodies_released" else 1
            line.update(parameters=count_parameters(peers[name]), bodies_posed=k * T, bodies_per_window=k,
                        weights="random init (compact re-implementation, released sizes; peers.py)")
        elif name == "diffmesh":
            line.update(parameters=sum(p.numel() for p in model.parameters()), bodies_posed=T,
                        steps=model.cfg.num_steps, weights="random init, paper preset, feature input (2048)")
        elif name == "body_only":
            line.update(bodies_posed=T, note="the body model alone on 64 frames (vertices)")
        else:
            line.update(note="DiffMesh alone on the 4 clips, without the body model")
        if variant != "-":
            line["ratio_to"] = {o[0] + ("" if o[1] == "bodies_per_frame" else f"_{o[1]}"): paired_ratio(s, samples[o])
                                for o in items if o != key and o[1] != "-"}
        if name == "diffmesh":
            ratio = paired_ratio(s, samples[fastest])
            line["fastest_peer"] = fastest[0]
            line["targets"] = [target(f"diffmesh/fastest peer ({fastest[0]}), 64 bodies each", ratio,
                                      TARGETS["table9_vs_fastest_peer"], "<=")]
            one = [(n, "windows_one_by_one") for n in PEER_NAMES if (n, "windows_one_by_one") in samples]
            if one:  # not the target's setting (the issue asks for the batched windows): a diagnostic
                first = min(one, key=lambda k: float(np.median(samples[k])))
                line["fastest_peer_one_by_one"] = first[0]
                line["ratio_to_fastest_peer_one_by_one"] = paired_ratio(s, samples[first])
        if variant == "bodies_per_frame" and name in PAPER["table9"]:
            line["paper_s"] = PAPER["table9"][name]
        rec.emit(timing_line("table9", name, variant, s, T, repeats, warmup, **line,
                             memory=call_memory(items[key], device)))
    del peers, model
    gc.collect()


# ---------------------------------------------------------------- videos for the video and growth settings

class VideoCache:
    """Videos the benchmark makes in its temporary folder: the first n frames of a video, looped when it is
    shorter (all lengths written in one decoding pass)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.made: dict[tuple[str, int], Path] = {}

    def looped(self, source: Path, lengths: tuple[int, ...]) -> dict[int, Path]:
        from .video.decode import VideoWriter, iter_frames, probe_video

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


# ---------------------------------------------------------------- video

def _median_stages(runs: list[dict[str, float]], frames: int) -> dict:
    keys = list(dict.fromkeys(k for r in runs for k in r))
    out = {}
    for k in keys:
        med = float(np.median([r[k] for r in runs if k in r]))
        out[k] = {"median_s": med, "ms_per_frame": 1000 * med / frames, "fps": frames / med if med > 0 else None}
    return out


def bench_video(opts: BenchOptions, device: torch.device, rec: Recorder, cache: VideoCache) -> None:
    from .pipeline import RunSettings, run_video
    from .video.decode import iter_frames, probe_video

    source = Path(opts.video) if opts.video else DEMO_VIDEO
    if not source.is_file():
        rec.emit({"setting": "video", "kind": "skipped", "reason": f"video not found: {source} (pass --video)"})
        return
    video = cache.looped(source, (QUICK_VIDEO_FRAMES,))[QUICK_VIDEO_FRAMES] if opts.quick else source
    info = probe_video(video)
    repeats = opts.repeats or (QUICK_REPEATS if opts.quick else REPEATS)["video"]
    warmup = (QUICK_WARMUP if opts.quick else WARMUP)["video"]
    outdir = cache.folder / "video_out"
    runs: dict[str, list[dict]] = {"no_render": [], "render": []}
    peaks: dict[str, list[float]] = {"decode_only": [], "no_render": [], "render": []}
    frames_seen = {}
    common = dict(device=str(device), progress=False, force=True, body="anny")

    def decode():
        frames_seen["decode_only"] = sum(1 for _ in iter_frames(video))

    def pipeline(render: bool):
        name = "render" if render else "no_render"

        def call():
            summary = run_video(video, outdir, RunSettings(render=render, **common))
            runs[name].append(dict(summary.seconds))
            frames_seen[name] = summary.frames
        return call

    items = {"decode_only": decode, "no_render": pipeline(False), "render": pipeline(True)}

    def sampled(name, fn):
        def call():
            with PeakSampler(tree=True, interval=0.05) as s:
                fn()
            peaks[name].append(s.peak_mb)
        return call

    for _ in range(warmup):                       # imports, MediaPipe's graph, the model and body caches: untimed
        items["no_render"]()
    runs["no_render"].clear()
    samples = round_robin({k: sampled(k, fn) for k, fn in items.items()}, repeats, 0, device)
    T = frames_seen.get("no_render") or info.num_frames
    decode_s = float(np.median(samples["decode_only"]))
    base = {"video": str(video), "source_video": str(source), "resolution": [info.width, info.height],
            "video_fps": info.fps, "cut": f"first {QUICK_VIDEO_FRAMES} frames (--quick)" if opts.quick else None}
    rec.emit(timing_line("video", "decode", "decode_only", samples["decode_only"], frames_seen["decode_only"], repeats,
                         warmup, **base, note="iter_frames alone (PyAV in its thread, RGB conversion): the floor",
                         memory={"kind": "rss_tree_sampled", "peak_mb": _round(_max(peaks["decode_only"]), 1)}))
    for name in ("no_render", "render"):
        stages = _median_stages(runs[name], T)
        totals = [r["total"] for r in runs[name]]
        processing = [r["total"] - r.get("setup", 0.0) for r in runs[name]]
        line = {**base, "stages": stages, "fps_total": T / float(np.median(totals)),
                "fps_without_setup": T / float(np.median(processing)),
                "memory": {"kind": "rss_tree_sampled", "peak_mb": _round(_max(peaks[name]), 1),
                           "process_peak_mb": round(_peak_self_mb(), 1),
                           "note": "peak_mb: this process and its helper processes (the keypoint worker), sampled "
                                   "at 20 Hz during the runs; process_peak_mb: this process's peak so far (all "
                                   "settings before included)"},
                "ratio_to": {"decode_only": paired_ratio(samples[name], samples["decode_only"])}}
        keyed = "decode+keypoints"
        if keyed in stages:
            line["keypoints_estimate_s"] = stages[keyed]["median_s"] - decode_s
        if name == "no_render":
            shares = [sum(r.get(k, 0.0) for k in ("diffmesh", "retarget", "body")) / r["total"] for r in runs[name]]
            line["model_body_share"] = float(np.median(shares))
            line["targets"] = [target("fps without render (whole run)", line["fps_total"],
                                      TARGETS["video_fps_no_render"], ">="),
                               target("DiffMesh + body share of the run", line["model_body_share"],
                                      TARGETS["video_model_body_share"], "<")]
        else:
            line["ratio_to"]["no_render"] = paired_ratio(samples["render"], samples["no_render"])
            line["targets"] = [target("fps with render (whole run)", line["fps_total"], TARGETS["video_fps_render"],
                                      ">=")]
        rec.emit(timing_line("video", "pipeline", name, samples[name], T, repeats, warmup, **line))


def _max(xs):
    xs = [x for x in xs if x is not None]
    return max(xs) if xs else None


# ---------------------------------------------------------------- growth

def _child(spec: dict, timeout: float = 3600) -> tuple[dict, float, float | None]:
    """Runs `child_main(SPEC)` in a fresh Python process; its JSON result, its wall seconds (with the interpreter
    start) and the sampled peak resident memory of it and its descendants (the pipeline's keypoint worker
    included). Started with `-c` so that the process imports only what `diffmesh run` imports."""
    cmd = [sys.executable, "-c", "import sys; from diffmesh.bench import child_main; child_main(sys.argv[1:])",
           json.dumps(spec)]
    package_root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    load = _load1()
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


def synthetic_keypoints(T: int, seed: int = 0) -> np.ndarray:
    """(T, 17, 3) pixels + confidence: a person-sized 2D skeleton in a 1280x720 frame that sways and drifts."""
    from .body import H36M_PARENTS

    rng = np.random.default_rng(seed)
    bones = rng.normal(0, 1, (17, 2)) * [25, 45]
    pose = np.zeros((17, 2))
    for j, p in enumerate(H36M_PARENTS):
        pose[j] = bones[j] if p < 0 else pose[p] + bones[j]
    t = np.arange(T)[:, None, None] / 30.0
    xy = pose[None] + 40 * np.sin(2 * np.pi * 0.5 * t + np.arange(17)[None, :, None]) + [640, 360]
    xy = xy + rng.normal(0, 2, xy.shape)
    conf = np.full((T, 17, 1), 0.9)
    return np.concatenate([xy, conf], -1).astype(np.float32)


def _child_model(spec: dict) -> dict:
    """DiffMesh (the shipped checkpoint) + the Anny body's joints on T frames of synthetic keypoints, cut into
    clips as the pipeline cuts them, through the pipeline's own `recover_meshes` and `body_joints`."""
    from .body import load_body
    from .checkpoint import load_model
    from .pipeline import body_joints, cut_clips, recover_meshes
    from .video.presence import Presence
    from .paths import DEFAULT_CHECKPOINT

    T, device = spec["frames"], spec["device"]
    body = load_body("anny")
    model = load_model(DEFAULT_CHECKPOINT, body, expect={"input": "keypoints"}).to(device).eval()
    keypoints = synthetic_keypoints(T)
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
    """`diffmesh run VIDEO --no-render --force --quiet` (`run_video` with the same settings) once."""
    from .pipeline import RunSettings, run_video

    summary = run_video(spec["video"], spec["outdir"], RunSettings(render=False, force=True, progress=False,
                                                                   device=spec["device"]))
    return {"seconds": [summary.seconds["total"]], "stages": summary.seconds, "frames": summary.frames,
            "valid_frames": summary.valid_frames}


def child_main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    with torch.inference_mode():
        result = _child_model(spec) if spec["part"] == "model" else _child_pipeline(spec)
    result.update(peak_rss_mb=_peak_self_mb(), torch_threads=torch.get_num_threads())
    if spec["device"].startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("BENCH_RESULT " + json.dumps(result), flush=True)


def bench_growth(opts: BenchOptions, device: torch.device, rec: Recorder, cache: VideoCache) -> None:
    lengths = QUICK_GROWTH_LENGTHS if opts.quick else GROWTH_LENGTHS
    rounds = opts.repeats or (QUICK_REPEATS if opts.quick else REPEATS)["growth"]
    model_repeats = opts.repeats or (QUICK_GROWTH_MODEL_REPEATS if opts.quick else GROWTH_MODEL_REPEATS)
    base = {"device": str(device), "threads": opts.threads}

    # The model: DiffMesh + body joints, one fresh process per length (its peak memory is then its own).
    medians, mems = [], []
    for T in lengths:
        res, wall, tree_peak = _child({**base, "part": "model", "frames": T, "repeats": model_repeats})
        medians.append(float(np.median(res["seconds"])))
        mems.append(max(res["peak_rss_mb"], tree_peak or 0.0))
        rec.emit(timing_line(
            "growth", "model", f"T={T}", res["seconds"], T, model_repeats, 1, input="synthetic keypoints (T, 17, 3)",
            clips=res["clips"], diffmesh_median_s=float(np.median(res["diffmesh_s"])),
            body_median_s=float(np.median(res["body_s"])), subprocess_wall_s=wall,
            load_1min_at_start=res["load_1min_at_start"],
            memory={"kind": "subprocess", "peak_mb": round(mems[-1], 1), "peak_rss_mb": round(res["peak_rss_mb"], 1),
                    "tree_peak_sampled_mb": _round(tree_peak, 1), "cuda_peak_mb": _round(res.get("cuda_peak_mb"), 1),
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
        stages = _median_stages([res["stages"] for res, _, _ in runs], runs[0][0]["frames"])
        rec.emit(timing_line(
            "growth", "pipeline", f"T={T}", secs, runs[0][0]["frames"], rounds, 0,
            input=f"{source.name} looped to {T} frames (re-encoded, H.264)", stages=stages,
            valid_frames=runs[0][0]["valid_frames"],
            subprocess_wall_s=[w for _, w, _ in runs], videos_written_s=made_s,
            load_1min_at_start=[res["load_1min_at_start"] for res, _, _ in runs],
            memory={"kind": "subprocess", "peak_mb": round(peak, 1),
                    "peak_rss_mb": round(max(res["peak_rss_mb"] for res, _, _ in runs), 1),
                    "tree_peak_sampled_mb": _round(_max([p for _, _, p in runs]), 1),
                    "cuda_peak_mb": _round(_max([res.get("cuda_peak_mb") for res, _, _ in runs]), 1),
                    "note": "peak_rss_mb: the run's main process (VmHWM, exact); tree_peak_sampled_mb: the sum over "
                            "it and its helper processes (the keypoint worker), sampled at 20 Hz; peak_mb: the "
                            "larger"}))
    targets = ([target("peak resident memory at 4096 frames (MB)", mems[lengths.index(4096)],
                       TARGETS["growth_peak_rss_mb_4096"], "<")] if 4096 in lengths else [])
    _emit_fit(rec, "pipeline", lengths, medians, mems, "run_video(render=False) in a fresh process per length; "
              "time: summary.seconds['total'] (without the interpreter start); memory: peak_mb (all its processes); "
              "memory_fit_main_process: the main process alone (VmHWM)", targets, mains)


def _emit_fit(rec: Recorder, method: str, lengths, seconds, mems, note: str, targets: list | None = None,
              main_mems: list | None = None) -> dict:
    tf, mf = linear_fit(lengths, seconds), linear_fit(lengths, mems)
    line = {"setting": "growth", "kind": "fit", "method": method, "variant": "linear_fit", "frames_list": list(lengths),
            "median_s": seconds, "peak_rss_mb": mems,
            "time_fit": {**tf, "slope_ms_per_frame": _round(tf["slope"] * 1000 if tf["slope"] is not None else None, 4)},
            "memory_fit": {**mf, "slope_mb_per_1000_frames": _round(mf["slope"] * 1000 if mf["slope"] is not None
                                                                    else None, 2)},
            "note": note}
    if main_mems is not None:
        mm = linear_fit(lengths, main_mems)
        line["peak_rss_main_mb"] = main_mems
        line["memory_fit_main_process"] = {**mm, "slope_mb_per_1000_frames": _round(
            mm["slope"] * 1000 if mm["slope"] is not None else None, 2)}
    if targets:
        line["targets"] = targets
    rec.emit(_finite(line))
    return line


# ---------------------------------------------------------------- the whole run

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
            else:
                bench_growth(opts, device, rec, cache)
            print(f"diffmesh bench: {setting} done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    return rec.lines


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        child_main(sys.argv[2:])
    else:
        print("usage: diffmesh bench [...] (python -m diffmesh.bench child SPEC is internal)", file=sys.stderr)
        sys.exit(2)

"""Table 4 of the paper: one clip of 2D keypoints through DiffMesh, Baseline 1 and Baseline 2, the whole forward
and the forward without the input adapter; Baseline 1 also as the paper runs it (its f chains one after another)."""

from __future__ import annotations

import gc
from contextlib import contextmanager

import torch

from .measure import Recorder, call_memory, paired_ratio, round_robin, target, timing_line
from .options import PAPER, TABLE4_METHODS, TARGETS, BenchOptions, timed_rounds, warmup_calls


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
    from .. import diffusion
    from ..model import ModelOutput

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
    from ..body import load_body
    from ..checkpoint import load_model
    from ..model import build_model, model_config
    from ..paths import WEIGHTS_DIR

    body = load_body("anny")  # the shipped models' pose/shape layout (K=24, S=6); the body itself is not run
    models, weights = {}, {}
    paths = {m: WEIGHTS_DIR / f"{m}_tiny_anny.pt" for m in TABLE4_METHODS}
    shipped = {m: load_model(p, body, expect={"method": m, "input": "keypoints"}) for m, p in paths.items()
               if preset == "tiny" and p.is_file()}
    # Table 4 compares the chains at one architecture: the shipped weights only when all three share their inputs
    # and head (since issue 14 the default DiffMesh reads MediaPipe's 3D and refines an IK pose, the baselines not).
    alike = len(shipped) == len(TABLE4_METHODS) and len({(m.cfg.keypoint_inputs, m.cfg.anchor, m.cfg.refine)
                                                         for m in shipped.values()}) == 1
    for method in TABLE4_METHODS:
        if alike:
            models[method] = shipped[method]
            weights[method] = f"shipped {paths[method].name}"
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                models[method] = build_model(model_config(preset, method=method), body)
            weights[method] = "random init (timing does not depend on the weights)"
        models[method].eval().to(device)
    return models, weights


def _timed_items(models: dict, x: torch.Tensor, g: torch.Generator, tokens: dict) -> dict:
    """The timed callables, keyed (method, variant, scope): each method batched, whole and without its adapter;
    Baseline 1 sequential, both ways; and the adapter alone."""
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
    return items


@torch.inference_mode()
def bench_table4(opts: BenchOptions, device: torch.device, rec: Recorder) -> None:
    presets = opts.presets or (("tiny",) if opts.quick else ("tiny", "paper"))
    for preset in presets:
        _bench_preset(opts, preset, device, rec)
        gc.collect()


def _bench_preset(opts: BenchOptions, preset: str, device: torch.device, rec: Recorder) -> None:
    repeats, warmup = timed_rounds(opts, "table4"), warmup_calls(opts, "table4")
    models, weights = _table4_models(preset, device)
    cfg = models["diffmesh"].cfg
    f = cfg.num_frames
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, f, cfg.num_keypoints, cfg.keypoint_channels,       # the models' inputs (2d+3d: 6 channels)
                    generator=torch.Generator().manual_seed(1)).to(device)
    tokens = {m: models[m].adapter(x) for m in TABLE4_METHODS}
    steps = {m: models[m](x, generator=g).denoiser_calls for m in TABLE4_METHODS}
    steps["baseline1_sequential"] = baseline1_sequential(models["baseline1"], x, g).denoiser_calls
    items = _timed_items(models, x, g, tokens)
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
            line["paper_s"] = PAPER["table4"][method]          # the paper's chains run one after another
        if method == "diffmesh" and scope != "adapter_only":
            line["targets"] = [
                target("diffmesh/baseline1 (batched)", ratio_to["baseline1"], TARGETS["table4_vs_baseline1"], "<="),
                target("diffmesh/baseline1 (sequential, as in the paper)", ratio_to["baseline1_sequential"],
                       TARGETS["table4_vs_baseline1"], "<="),
                target("diffmesh/baseline2", ratio_to["baseline2"], TARGETS["table4_vs_baseline2"], "<=")]
        if method == "adapter":
            line["note"] = "the input adapter alone (DSTformer-style, the same size in all three methods)"
        rec.emit(line)

"""Table 9 of the paper: a 64-frame video of 2048-d features through DiffMesh and the temporal heads of TCMR,
MPS-Net and GLoT (`peers`), each posing the same SMPL-layout body on every frame."""

from __future__ import annotations

import gc

import numpy as np
import torch

from .measure import Recorder, call_memory, paired_ratio, round_robin, target, timing_line
from .options import PAPER, TABLE9_CLIPS, TABLE9_FRAMES, TARGETS, BenchOptions, timed_rounds, warmup_calls
from .peers import PEER_NAMES, SEQLEN, build_peer, count_parameters, sliding_windows


def _table9_body(opts: BenchOptions):
    from ..body import load_body
    from ..body.smpl import SMPLBody

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
        parts = [out.vertices for _, out in body.pose_in_chunks(rotmats, betas, chunk=chunk, with_vertices=True)]
        if first is None:
            first = torch.cat(parts)
    return first


def _timed_items(opts: BenchOptions, body, model, peers: dict, device: torch.device) -> dict:
    """The timed callables, keyed (method, variant): DiffMesh on the clips and each peer on the sliding windows,
    each posing the body on every frame; besides (not --quick) the peers with the bodies their released code poses
    and fed one window at a time; and, variant '-', DiffMesh alone and the body alone."""
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
    return items


def _describe(key: tuple[str, str], body, body_desc: str, model, peers: dict) -> dict:
    """What one timed item ran: its input, body, output and size."""
    name, variant = key
    T, f = TABLE9_FRAMES, model.cfg.num_frames
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
    return line


@torch.inference_mode()
def bench_table9(opts: BenchOptions, device: torch.device, rec: Recorder) -> None:
    from ..model import build_model, model_config

    repeats, warmup = timed_rounds(opts, "table9"), warmup_calls(opts, "table9")
    body, body_desc = _table9_body(opts)
    body = body.eval().to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(model_config("paper", input="features", feature_dim=2048), body).eval().to(device)
    peers = {name: build_peer(name).to(device) for name in PEER_NAMES}
    T = TABLE9_FRAMES
    items = _timed_items(opts, body, model, peers, device)
    shapes = {key: tuple(fn().shape) for key, fn in items.items() if key[1] != "-"}
    if any(s != (T, body.num_vertices, 3) for s in shapes.values()):
        raise RuntimeError(f"table9: outputs {shapes} are not all ({T}, {body.num_vertices}, 3)")
    samples = round_robin(items, repeats, warmup, device)

    peers_per_frame = [(n, "bodies_per_frame") for n in PEER_NAMES]
    fastest = min(peers_per_frame, key=lambda k: float(np.median(samples[k])))
    for key, s in samples.items():
        name, variant = key
        line = _describe(key, body, body_desc, model, peers)
        if variant != "-":
            line["ratio_to"] = {o[0] + ("" if o[1] == "bodies_per_frame" else f"_{o[1]}"): paired_ratio(s, samples[o])
                                for o in items if o != key and o[1] != "-"}
        if name == "diffmesh":
            ratio = paired_ratio(s, samples[fastest])
            line["fastest_peer"] = fastest[0]
            line["targets"] = [target(f"diffmesh/fastest peer ({fastest[0]}), 64 bodies each", ratio,
                                      TARGETS["table9_vs_fastest_peer"], "<=")]
            one = [(n, "windows_one_by_one") for n in PEER_NAMES if (n, "windows_one_by_one") in samples]
            if one:  # a diagnostic only: the target is set on the batched windows
                first = min(one, key=lambda k: float(np.median(samples[k])))
                line["fastest_peer_one_by_one"] = first[0]
                line["ratio_to_fastest_peer_one_by_one"] = paired_ratio(s, samples[first])
        if variant == "bodies_per_frame" and name in PAPER["table9"]:
            line["paper_s"] = PAPER["table9"][name]
        rec.emit(timing_line("table9", name, variant, s, T, repeats, warmup, **line,
                             memory=call_memory(items[key], device)))
    del peers, model
    gc.collect()

"""`diffmesh eval`: score checkpoints on the CMU test split (subjects 13, 35, 55) with synthetic 2D input.

Protocol (docs/results.md): the non-overlapping f-frame windows of every test sequence (each sequence's
remainder left out); one random camera per sequence, detector noise per window, all seeded (see
`synthetic.fixed_clips`), so every method sees identical inputs. Joints are the 17 Human3.6M joints of the body,
root-relative (pelvis at the origin), in camera axes:
  MPJPE, PA-MPJPE (similarity Procrustes per frame), MPVE (all 13,718 Anny vertices, pelvis-aligned, against the
  fitted Anny mesh), ACC-ERR (mean over joints of the acceleration error, mm/frame^2, over each sequence's
  consecutive windows, so the jumps between windows count), all in mm, glitch frames excluded;
  time: forward pass of the network (no body model) per frame, batch of 32 clips, after one warm-up batch.
"""

import time
from pathlib import Path

import numpy as np
import torch

from ..body.anny_body import AnnyBody
from ..checkpoint import load_model
from ..data.synthetic import DEFAULT_NOISE_MODEL
from ..errors import DataError
from ..metrics import acc_err, mpjpe, mpve, pa_mpjpe
from ..paths import WEIGHTS_DIR
from ..predict import predict_clips

EVAL_SEED = 2024


def default_checkpoints() -> list[Path]:
    """The shipped weights: the default DiffMesh model and the three reference models trained the same way."""
    return sorted(WEIGHTS_DIR.glob("*.pt"), key=lambda p: ("diffmesh" not in p.name, p.name))


def _keypoint_inputs(checkpoint: Path) -> str:
    """What a checkpoint reads per joint; it fails here, in one line, on a bad file or another input."""
    return load_model(checkpoint, AnnyBody(), expect={"input": "keypoints", "num_frames": 16}).cfg.keypoint_inputs


@torch.inference_mode()
def _vertices(body: AnnyBody, rotmats: torch.Tensor, shape: torch.Tensor) -> np.ndarray:
    """(F, K, 3, 3), (F, S) -> pelvis-aligned vertices (F, V, 3) float32."""
    return np.concatenate([(out.vertices - out.joints[:, :1]).numpy().astype(np.float32)
                           for _, out in body.pose_in_chunks(rotmats, shape, chunk=256)])


class TestSet:
    """The evaluation clips of one split, built once and shared by all checkpoints."""

    def __init__(self, body: AnnyBody, split: str = "test", limit: int | None = None, noise: bool = True,
                 mocap_path=None, cache_dir=None, num_frames: int = 16, with_vertices: bool = True,
                 noise_name: str | None = None):
        from ..data.prepare import load_fits
        from ..data.synthetic import ClipMaker, build_motion_bank, fixed_clips, noise_model

        self.bank = build_motion_bank(body, load_fits(split, mocap_path, cache_dir))
        self.starts, rngs, cameras = fixed_clips(self.bank, num_frames, EVAL_SEED, limit)
        self.inputs, self.targets = ClipMaker(self.bank, num_frames,
                                                  noise_model(noise_name or DEFAULT_NOISE_MODEL, noise)).batch(
            self.starts, rngs, cameras)
        self.split, self.noise, self.num_frames = split, noise, num_frames
        # Which sequence each window belongs to, to chain consecutive windows for ACC-ERR.
        seq_of_frame = np.repeat(np.arange(len(self.bank.seq_len)), self.bank.seq_len)
        self.window_seq = seq_of_frame[self.starts]
        self.valid = self.targets.valid.flatten().numpy()
        F = self.valid.size
        self.gt_vertices = None
        if with_vertices:
            self.gt_vertices = _vertices(body, self.targets.rotmats.flatten(0, 1),
                                         self.targets.shape.repeat_interleave(num_frames, 0))
        self.frames = F

    def score(self, pred_joints: np.ndarray, pred_vertices: np.ndarray | None) -> dict[str, float]:
        """pred_joints (C, f, 17, 3) root-relative metres -> metrics in mm."""
        gt = self.targets.joints3d.numpy()
        pj, gj = pred_joints.reshape(-1, 17, 3), gt.reshape(-1, 17, 3)
        v = self.valid
        res = {"mpjpe_mm": float(mpjpe(pj[v], gj[v]).mean() * 1000),
               "pa_mpjpe_mm": float(pa_mpjpe(pj[v], gj[v]).mean() * 1000)}
        if pred_vertices is not None and self.gt_vertices is not None:
            res["mpve_mm"] = float(mpve(pred_vertices[v], self.gt_vertices[v]).mean() * 1000)
        errs, accs = [], []
        for s in np.unique(self.window_seq):
            w = np.where(self.window_seq == s)[0]
            # consecutive windows only (a `limit` may have skipped some)
            runs = np.split(w, np.where(np.diff(self.starts[w]) != self.num_frames)[0] + 1)
            for run in runs:
                p, g = pred_joints[run].reshape(-1, 17, 3), gt[run].reshape(-1, 17, 3)
                ok = self.targets.valid[run].flatten().numpy()
                if len(p) < 3:
                    continue
                e = acc_err(p, g)
                keep = ok[:-2] & ok[1:-1] & ok[2:]
                errs.append(e[keep])
                accs.append(np.linalg.norm(p[:-2] - 2 * p[1:-1] + p[2:], axis=-1).mean(-1)[keep])
        res["acc_err_mm"] = float(np.concatenate(errs).mean() * 1000)
        res["accel_mm"] = float(np.concatenate(accs).mean() * 1000)
        # the same inside each window only (the jumps between independently predicted windows left out)
        inside = [acc_err(p, g)[ok[:-2] & ok[1:-1] & ok[2:]]
                  for p, g, ok in zip(pred_joints, gt, self.targets.valid.numpy())]
        res["acc_err_within_clips_mm"] = float(np.concatenate(inside).mean() * 1000)
        gt_acc = [np.linalg.norm(g[:-2] - 2 * g[1:-1] + g[2:], axis=-1).mean(-1)[ok[:-2] & ok[1:-1] & ok[2:]]
                  for g, ok in zip(gt, self.targets.valid.numpy())]
        res["gt_accel_mm"] = float(np.concatenate(gt_acc).mean() * 1000)
        return res


def evaluate_checkpoint(path: Path, body: AnnyBody, test: TestSet, device: str = "cpu", batch_size: int = 32,
                        with_vertices: bool = True) -> dict:
    model = load_model(path, body, expect={"input": "keypoints", "num_frames": test.num_frames}).to(device).eval()
    x = test.inputs
    if model.cfg.keypoint_inputs == "2d":            # a 2D-only model reads 1 for every returned joint
        x = torch.cat([x[..., :2], torch.ones_like(x[..., 2:3])], -1)
    with torch.inference_mode():                     # warm-up, then time the network alone
        model(x[:batch_size].to(device), generator=torch.Generator(device=device).manual_seed(0))
        t = time.perf_counter()
        calls = 0
        g = torch.Generator(device=device).manual_seed(0)
        for i in range(0, len(x), batch_size):
            calls = model(x[i:i + batch_size].to(device), generator=g).denoiser_calls
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    pred = predict_clips(model, body, x, batch_size=batch_size, seed=EVAL_SEED, device=device)
    verts = None
    if with_vertices:
        verts = _vertices(body, pred["rotmats"].flatten(0, 1), pred["shape"].repeat_interleave(test.num_frames, 0))
    metrics = test.score(pred["joints"].numpy(), verts)
    cfg = model.cfg
    return {"checkpoint": str(path), "method": cfg.method, "preset_dims": f"d={cfg.token_dim} adapter={cfg.adapter_dim}",
            "parameters": sum(p.numel() for p in model.parameters()), "steps": calls,
            "ms_per_frame": seconds * 1000 / test.frames, **metrics}


def run_eval(checkpoints: list[Path] | None = None, split: str = "test", limit: int | None = None, noise: bool = True,
             device: str = "cpu", with_vertices: bool = True, mocap_path=None, cache_dir=None,
             noise_name: str | None = None) -> dict:
    if not checkpoints:                              # the shipped ones that can read this split
        checkpoints = [c for c in default_checkpoints() if _keypoint_inputs(c) != "2d+3d"]
        if not checkpoints:
            raise DataError("no shipped model reads the synthetic split (they read MediaPipe's 3D, which it lacks); "
                            "score them with `diffmesh eval --data renders`, or pass a 2d or 2d+vis CHECKPOINT")
    checkpoints = [Path(c) for c in checkpoints]
    for c in checkpoints:                            # fail on a bad file before building the test set
        if _keypoint_inputs(c) == "2d+3d":
            raise DataError(f"{c} reads MediaPipe's world landmarks (2d+3d inputs), which the synthetic split does "
                            "not have; score it with `diffmesh eval --data renders`, or pass a 2d or 2d+vis "
                            "checkpoint")
    body = AnnyBody().to(device)
    test = TestSet(body.cpu(), split, limit, noise, mocap_path, cache_dir, with_vertices=with_vertices,
                   noise_name=noise_name)
    body.to(device)
    rows = [evaluate_checkpoint(c, body, test, device, with_vertices=with_vertices) for c in checkpoints]
    return {"split": split, "clips": int(len(test.starts)), "frames": int(test.valid.sum()), "noise": noise,
            "noise_model": noise_name or DEFAULT_NOISE_MODEL,
            "seed": EVAL_SEED, "device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "results": rows}


def format_table(report: dict) -> str:
    head = (f"CMU {report['split']} split, {report['clips']} clips of 16 frames ({report['frames']} frames), "
            f"noise {'on' if report['noise'] else 'off'}\n")
    cols = ("method", "MPJPE", "PA-MPJPE", "MPVE", "ACC-ERR", "ACC-ERR in clips", "steps", "ms/frame")
    lines = [head, "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report["results"]:
        mpve_s = f"{r['mpve_mm']:.1f}" if "mpve_mm" in r else "-"
        lines.append(f"| {r['method']} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | {mpve_s} | "
                     f"{r['acc_err_mm']:.2f} | {r['acc_err_within_clips_mm']:.2f} | {r['steps']} | "
                     f"{r['ms_per_frame']:.2f} |")
    return "\n".join(lines)


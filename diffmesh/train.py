"""Training: one optimisation step (used by the tests) and `diffmesh train` (the whole run).

A run trains one method on synthetic 2D clips of the CMU train split (data/synthetic.py), validates on the
val split every epoch, logs to TensorBoard (`OUT/tb`), and writes `OUT/last.pt` (everything needed to resume)
and `OUT/best.pt` (lowest val MPJPE) atomically at the end of every epoch. Batches are drawn from generators
seeded by (seed, rank, step), so a resumed run sees the same data as an uninterrupted one.

Several GPUs: `torchrun --nproc_per_node=G -m diffmesh.cli train ...` (DistributedDataParallel; every rank draws
its own batches, rank 0 validates and writes).
"""

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .body.base import BodyModel
from .checkpoint import read_checkpoint, save_checkpoint
from .errors import CheckpointError, DataError
from .losses import LossTerms, LossWeights, Targets, diffmesh_loss
from .model import DiffMeshModel, build_model, model_config
from .outdir import write_json


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded the same way (for the baselines' noise)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_step(model: DiffMeshModel, body: BodyModel, optimizer: torch.optim.Optimizer, inputs: Tensor,
               targets: Targets, weights: LossWeights = LossWeights(), generator: torch.Generator | None = None,
               max_grad_norm: float | None = 1.0, model_inputs: dict | None = None) -> LossTerms:
    """Forward through the whole reverse chain, loss, backward, clip, step. inputs: (B, f, 17, 3) or (B, f, D);
    `model_inputs`: further keyword inputs of the model (a refining model's init_pose and init_shape)."""
    model.train()
    out = model(inputs, generator=generator, **(model_inputs or {}))
    loss = diffmesh_loss(out, targets, body, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss


@dataclass
class TrainSettings:
    """Everything a run depends on (saved in every checkpoint; `--resume` refuses a different one)."""

    preset: str = "tiny"
    method: str = "diffmesh"
    epochs: int = 10
    steps_per_epoch: int = 250
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    seed: int = 0
    noise: bool = True
    val_clips: int = 96
    max_grad_norm: float = 1.0


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class RunContext:
    """Where a training process runs: its rank among `world` processes (torchrun; 0 of 1 when run directly), its
    local rank (its GPU) and the torch device string it uses ('cpu' or 'cuda:LOCAL_RANK')."""

    rank: int
    world: int
    local_rank: int
    device: str

    def wrap(self, model: torch.nn.Module, static_graph: bool = False) -> torch.nn.Module:
        """The model under DistributedDataParallel when several processes run, else the model itself.
        static_graph: some parameters get no gradient, the same ones every step."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.local_rank] if self.device != "cpu" else None,
                                       static_graph=static_graph)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def finish(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


def resume_run(last: Path, settings_key: str, settings: dict, model, optimizer, scheduler) -> dict:
    """Load `last` (a run's last.pt) into the model, optimizer and scheduler, refusing a run trained with other
    settings (stored under `settings_key`); returns the payload for the caller's own counters."""
    if not last.exists():
        raise DataError(f"nothing to resume in {last.parent} (no last.pt); drop --resume to start a new run")
    payload = read_checkpoint(last)
    if payload.get(settings_key) != settings:
        raise CheckpointError(f"{last} was trained with other settings ({payload.get(settings_key)}); resume with "
                              "the same options or start a new --out")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return payload


def start_run(out_dir: Path, device: str, resume: bool) -> RunContext:
    """The checks every training command makes before any work (the device exists; OUT holds no run unless
    resuming), then torchrun's process group (NCCL on GPUs, gloo on CPU) when several processes run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if (out_dir / "last.pt").exists() and not resume:
        raise DataError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose another --out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(local_rank)
    return RunContext(rank, world, local_rank, f"cuda:{local_rank}" if device == "cuda" else device)


@torch.inference_mode()
def predict_clips(model: DiffMeshModel, body: BodyModel, inputs: Tensor, batch_size: int = 64, seed: int = 0,
                  device: str = "cpu") -> dict[str, Tensor]:
    """Run the model on clips (C, f, 17, 3) in batches: rotmats (C, f, K, 3, 3), shape (C, S), joints (C, f, 17, 3)
    root-relative, camera (C, f, 3). The baselines' noise comes from a generator seeded with `seed`."""
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    outs = {"rotmats": [], "shape": [], "joints": [], "camera": []}
    for i in range(0, len(inputs), batch_size):
        out = model(inputs[i:i + batch_size].to(device), generator=g)
        joints = body.clip_joints(out.rotmats, out.shape)
        outs["rotmats"].append(out.rotmats.cpu())
        outs["shape"].append(out.shape.cpu())
        outs["joints"].append((joints - joints[:, :, :1]).cpu())
        outs["camera"].append(out.camera.cpu())
    return {k: torch.cat(v) for k, v in outs.items()}


def validate(model, body, val_inputs: Tensor, val_targets: Targets, device: str) -> dict[str, float]:
    from .metrics import mpjpe, pa_mpjpe

    pred = predict_clips(model, body, val_inputs, device=device)["joints"].flatten(0, 1).numpy()
    gt = val_targets.joints3d.flatten(0, 1).numpy()
    valid = val_targets.valid.flatten().numpy()
    return {"mpjpe_mm": float(mpjpe(pred[valid], gt[valid]).mean() * 1000),
            "pa_mpjpe_mm": float(pa_mpjpe(pred[valid], gt[valid]).mean() * 1000)}


def run_training(out_dir: str | Path, settings: TrainSettings, device: str = "cpu", resume: bool = False,
                 mocap_path=None, cache_dir=None, threads: int | None = None, quiet: bool = False,
                 splits: tuple[str, str] = ("train", "val"), sequences: list[str] | None = None,
                 stop_after_epochs: int | None = None) -> dict:
    """The whole run (see the module docstring). Returns a summary (also written to OUT/summary.json).
    `splits` and `sequences` choose other data and `stop_after_epochs` stops early as an interruption would
    (the tests use them)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from .body.anny_body import AnnyBody
    from .data.prepare import load_fits
    from .data.synthetic import ClipMaker, NoiseModel, build_motion_bank, fixed_clips, window_starts

    out_dir = Path(out_dir)
    run = start_run(out_dir, device, resume)
    rank, world, dev = run.rank, run.world, run.device
    if threads:
        torch.set_num_threads(threads)
    last = out_dir / "last.pt"

    body = AnnyBody().to(dev)
    train_bank = build_motion_bank(body.cpu(), load_fits(splits[0], mocap_path, cache_dir, sequences))
    val_bank = build_motion_bank(body, load_fits(splits[1], mocap_path, cache_dir, sequences))
    body.to(dev)
    cfg = model_config(settings.preset, method=settings.method)
    f = cfg.num_frames
    maker = ClipMaker(train_bank, f, NoiseModel(enabled=settings.noise))
    starts = window_starts(train_bank, f, 1)
    if len(starts) == 0:
        raise DataError("the train split has no sequence of at least f frames")
    val_starts, val_rngs, val_cams = fixed_clips(val_bank, f, seed=1234, limit=settings.val_clips)
    val_x, val_t = ClipMaker(val_bank, f, NoiseModel(enabled=settings.noise)).batch(val_starts, val_rngs, val_cams)

    seed_everything(settings.seed)
    model = build_model(cfg, body).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.epochs * settings.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, settings.warmup_steps))
    step, epoch, best, history = 0, 0, float("inf"), []
    if resume:
        payload = resume_run(last, "settings", asdict(settings), model, opt, sched)
        step, epoch, best = payload["step"], payload["epoch"], payload["best_val_mpjpe_mm"]
        history = json.loads(payload["history"])
    net = run.wrap(model)
    writer = SummaryWriter(str(out_dir / "tb")) if rank == 0 else None
    gen = torch.Generator(device=dev)
    t_start = time.time()
    bar = tqdm(total=total, initial=step, desc=f"train {settings.method}", unit="step", disable=quiet or rank > 0)
    stop_at = settings.epochs if stop_after_epochs is None else min(settings.epochs, epoch + stop_after_epochs)
    while epoch < stop_at:
        running: dict[str, float] = {}
        for _ in range(settings.steps_per_epoch - step % settings.steps_per_epoch):
            rng = np.random.default_rng([settings.seed, rank, step])
            x, targets = maker.batch(rng.choice(starts, settings.batch_size), [rng] * settings.batch_size)
            targets = Targets(*(t.to(dev) for t in (targets.rotmats, targets.shape, targets.joints3d,
                                                    targets.keypoints2d, targets.valid)))
            gen.manual_seed(settings.seed * 1_000_003 + step * world + rank)
            loss = train_step(net, body, opt, x.to(dev), targets, generator=gen, max_grad_norm=settings.max_grad_norm)
            sched.step()
            step += 1
            for k, v in {"total": loss.total.item(), **loss.terms}.items():
                running[k] = running.get(k, 0.0) + v
            if writer is not None and step % 10 == 0:
                for k, v in loss.terms.items():
                    writer.add_scalar(f"loss/{k}", v, step)
                writer.add_scalar("loss/total", loss.total.item(), step)
                writer.add_scalar("lr", sched.get_last_lr()[0], step)
            bar.set_postfix(loss=f"{loss.total.item():.3f}", epoch=epoch + 1)
            bar.update(1)
        epoch += 1
        if rank == 0:
            val = validate(model, body, val_x, val_t, dev)
            n = settings.steps_per_epoch
            history.append({"epoch": epoch, "step": step, "train": {k: v / n for k, v in running.items()}, "val": val,
                            "seconds": time.time() - t_start})
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, step)
            writer.flush()
            extra = dict(settings=asdict(settings), step=step, epoch=epoch, history=json.dumps(history),
                         optimizer=opt.state_dict(), scheduler=sched.state_dict())
            if val["mpjpe_mm"] < best:
                best = val["mpjpe_mm"]
                save_checkpoint(out_dir / "best.pt", model, settings=asdict(settings), step=step, epoch=epoch,
                                val=val)
            save_checkpoint(last, model, best_val_mpjpe_mm=best, **extra)
            bar.write(f"epoch {epoch}/{settings.epochs}: val MPJPE {val['mpjpe_mm']:.1f} mm, "
                      f"PA-MPJPE {val['pa_mpjpe_mm']:.1f} mm")
        run.barrier()
    bar.close()
    summary = {"out": str(out_dir), "settings": asdict(settings), "parameters": params, "steps": step,
               "best_val_mpjpe_mm": best, "history": history, "device": str(dev), "world_size": world, "rank": rank}
    if rank == 0:
        writer.close()
        write_json(summary, out_dir / "summary.json")
    run.finish()
    return summary

"""The one training loop: every recipe (diffmesh.train.cmu, diffmesh.train.paper) builds its data, model,
optimiser, scheduler and validation, describes them in a `LoopSpec` and calls `run_loop`.

The loop runs the epochs; each step draws its batch through the recipe's `draw` from a numpy generator seeded by
(seed, rank, step) and seeds the baselines' noise from (seed, step, world, rank), so a resumed run sees the same
data and noise as an uninterrupted one. It logs to TensorBoard (`OUT/tb`), and after every epoch rank 0 validates
and writes `OUT/last.pt` (everything needed to resume) and `OUT/best.pt` (the best validation score) atomically;
at the end it writes `OUT/summary.json`.

Several GPUs: under torchrun (`torchrun --nproc_per_node=G -m diffmesh.cli train ...`) the model runs under
DistributedDataParallel; every rank draws its own batches, rank 0 validates and writes.
"""

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..body.base import BodyModel
from ..checkpoint import read_checkpoint, save_checkpoint
from ..errors import CheckpointError, DeviceError, MissingFileError, OutputExistsError
from ..losses import LossTerms, LossWeights, Targets, diffmesh_loss
from ..model import DiffMeshModel
from ..outdir import write_json


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


def start_run(out_dir: Path, device: str, resume: bool) -> RunContext:
    """The checks every training command makes before any work (the device exists; OUT holds no run unless
    resuming), then torchrun's process group (NCCL on GPUs, gloo on CPU) when several processes run."""
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if (out_dir / "last.pt").exists() and not resume:
        raise OutputExistsError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it or choose "
                                "another --out")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            torch.cuda.set_device(local_rank)
    return RunContext(rank, world, local_rank, f"cuda:{local_rank}" if device == "cuda" else device)


def resume_run(last: Path, settings_key: str, settings: dict, model, optimizer, scheduler) -> dict:
    """Load `last` (a run's last.pt) into the model, optimizer and scheduler, refusing a run trained with other
    settings (stored under `settings_key`); returns the payload for the caller's own counters."""
    if not last.exists():
        raise MissingFileError(f"nothing to resume in {last.parent} (no last.pt); drop --resume to start a new run")
    payload = read_checkpoint(last)
    if payload.get(settings_key) != settings:
        raise CheckpointError(f"{last} was trained with other settings ({payload.get(settings_key)}); resume with "
                              "the same options or start a new --out")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return payload


@dataclass
class LoopSpec:
    """What a recipe hands the loop.

    draw(rng, epoch) -> (inputs, Targets, further model inputs), on the run's device: one step's batch.
    validate() -> the epoch's validation result (a dict of numbers), called on rank 0 after every epoch.
    report(epoch, result) -> the line printed after it, or None.
    The checkpoints hold `settings` under `settings_key`; best.pt the result under `result_key`, last.pt the best
    `score_key` so far under `best_key` (lower is better), and everything needed to resume.
    """

    model: DiffMeshModel
    body: BodyModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    draw: Callable[[np.random.Generator, int], tuple[Tensor, Targets, dict]]
    validate: Callable[[], dict]
    report: Callable[[int, dict], str | None]
    settings: dict
    settings_key: str                       # 'settings' (CMU) | 'paper_settings'
    result_key: str                         # 'val' (CMU) | 'eval'
    score_key: str                          # the result entry that picks best.pt
    best_key: str                           # 'best_val_mpjpe_mm' (CMU) | 'best_mpjpe_mm'
    epochs: int
    steps_per_epoch: int
    seed: int
    weights: LossWeights = field(default_factory=LossWeights)
    max_grad_norm: float | None = 1.0
    scheduler_per_step: bool = True         # False: the scheduler steps once an epoch
    static_graph: bool = False              # DDP: the same parameters get no gradient every step
    logged: tuple[str, ...] | None = None   # result entries logged to TensorBoard (None: all of them)
    log_total_and_lr: bool = True           # log loss/total and lr every 10 steps beside the loss terms
    description: str = "train"              # the progress bar's label
    summary_extra: dict = field(default_factory=dict)     # further summary entries, after 'settings'


@dataclass
class _Progress:
    step: int = 0
    epoch: int = 0
    best: float = float("inf")
    history: list = field(default_factory=list)


def run_loop(spec: LoopSpec, run: RunContext, out_dir: Path, resume: bool = False, quiet: bool = False,
             stop_after_epochs: int | None = None) -> dict:
    """Train `spec` to its last epoch (or `stop_after_epochs` more, as an interruption would), resuming OUT/last.pt
    when `resume`. Returns the summary (also written to OUT/summary.json by rank 0)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    state = _Progress()
    if resume:
        payload = resume_run(out_dir / "last.pt", spec.settings_key, spec.settings, spec.model, spec.optimizer,
                             spec.scheduler)
        state = _Progress(payload["step"], payload["epoch"], payload[spec.best_key], json.loads(payload["history"]))
    net = run.wrap(spec.model, static_graph=spec.static_graph)
    writer = SummaryWriter(str(out_dir / "tb")) if run.rank == 0 else None
    gen = torch.Generator(device=run.device)
    t_start = time.time()
    bar = tqdm(total=spec.epochs * spec.steps_per_epoch, initial=state.step, desc=spec.description, unit="step",
               disable=quiet or run.rank > 0)
    stop_at = spec.epochs if stop_after_epochs is None else min(spec.epochs, state.epoch + stop_after_epochs)
    while state.epoch < stop_at:
        running = _train_epoch(spec, run, net, gen, writer, bar, state)
        if not spec.scheduler_per_step:
            spec.scheduler.step()
        state.epoch += 1
        if run.rank == 0:
            _end_epoch(spec, out_dir, writer, bar, state, running, t_start)
        run.barrier()
    bar.close()
    summary = {"out": str(out_dir), "settings": spec.settings, **spec.summary_extra, "steps": state.step,
               spec.best_key: state.best, "history": state.history, "device": str(run.device),
               "world_size": run.world, "rank": run.rank}
    if run.rank == 0:
        writer.close()
        write_json(summary, out_dir / "summary.json")
    run.finish()
    return summary


def _train_epoch(spec: LoopSpec, run: RunContext, net, gen: torch.Generator, writer, bar,
                 state: _Progress) -> dict[str, float]:
    """One epoch of steps; returns the sums of the loss terms."""
    running: dict[str, float] = {}
    for _ in range(spec.steps_per_epoch):
        rng = np.random.default_rng([spec.seed, run.rank, state.step])
        x, targets, model_inputs = spec.draw(rng, state.epoch)
        gen.manual_seed(spec.seed * 1_000_003 + state.step * run.world + run.rank)
        loss = train_step(net, spec.body, spec.optimizer, x, targets, spec.weights, generator=gen,
                          max_grad_norm=spec.max_grad_norm, model_inputs=model_inputs)
        if spec.scheduler_per_step:
            spec.scheduler.step()
        state.step += 1
        for k, v in {"total": loss.total.item(), **loss.terms}.items():
            running[k] = running.get(k, 0.0) + v
        if writer is not None and state.step % 10 == 0:
            for k, v in loss.terms.items():
                writer.add_scalar(f"loss/{k}", v, state.step)
            if spec.log_total_and_lr:
                writer.add_scalar("loss/total", loss.total.item(), state.step)
                writer.add_scalar("lr", spec.scheduler.get_last_lr()[0], state.step)
        bar.set_postfix(loss=f"{loss.total.item():.3f}", epoch=state.epoch + 1)
        bar.update(1)
    return running


def _end_epoch(spec: LoopSpec, out_dir: Path, writer, bar, state: _Progress, running: dict[str, float],
               t_start: float) -> None:
    """Rank 0 after an epoch: validate, log, append to the history, write best.pt (when better) and last.pt."""
    result = spec.validate()
    n = spec.steps_per_epoch
    state.history.append({"epoch": state.epoch, "step": state.step, "train": {k: v / n for k, v in running.items()},
                          spec.result_key: result, "seconds": time.time() - t_start})
    for k in spec.logged or result:
        writer.add_scalar(f"{spec.result_key}/{k}", result[k], state.step)
    writer.flush()
    fields = {spec.settings_key: spec.settings, "step": state.step, "epoch": state.epoch}
    if result[spec.score_key] < state.best:
        state.best = result[spec.score_key]
        save_checkpoint(out_dir / "best.pt", spec.model, **fields, **{spec.result_key: result})
    save_checkpoint(out_dir / "last.pt", spec.model, **fields, **{spec.best_key: state.best},
                    history=json.dumps(state.history), optimizer=spec.optimizer.state_dict(),
                    scheduler=spec.scheduler.state_dict())
    line = spec.report(state.epoch, result)
    if line:
        bar.write(line)

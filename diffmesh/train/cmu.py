"""`diffmesh train`: one method trained on clips of the CMU train split, validated on the val split every epoch
(diffmesh.train.loop runs the epochs, logs, writes the checkpoints and resumes). The clips come from the rendered
MediaPipe set (`--data renders`, data/render_clips.py: MediaPipe's real errors, speed and mirror augmentation,
and the "2d" / "2d+vis" / "2d+3d" inputs) or from the synthetic 2D of the fits with a noise model (`--data
synthetic`, data/synthetic.py; the shipped checkpoints').

AdamW with a linear warm-up then cosine decay, stepped every step. Several GPUs: `torchrun --nproc_per_node=G -m
diffmesh.cli train ...`.
"""

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, SettingsError
from ..predict import predict_clips
from ..losses import LossWeights, Targets
from ..metrics import mpjpe, pa_mpjpe
from ..model import build_model, model_config
from .loop import LoopSpec, run_loop, seed_everything, start_run


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
    noise_model: str = "hand-made"      # data/synthetic.py NOISE_MODELS
    val_clips: int = 96
    max_grad_norm: float = 1.0
    motion_form: str = "paper"          # model.MOTION_FORMS: how DiffMesh's reverse steps use beta
    aux: str = "frames"                 # AUX_CHOICES: which conditions the auxiliary loss compares, or off
    camera_model: str = "sequence"      # data/synthetic.py CAMERA_MODELS
    data: str = "synthetic"             # DATA_SOURCES: synthetic 2D clips of the fits, or the rendered MediaPipe set
    keypoint_inputs: str = "2d+vis"     # model.KEYPOINT_CHANNELS; "2d" and "2d+3d" need data="renders"
    synthetic_share: float = 0.0        # data="renders": this share of every batch synthetic (data/mixed_clips.py)
    shape_std: float = 0.0              # synthetic clips: half of them on a random body (synthetic.ShapePool), 0 off
    anchor: str = "none"                # model.ANCHORS: "mediapipe-3d" refines the IK of MediaPipe's world landmarks


DATA_SOURCES = ("synthetic", "renders")


# The auxiliary loss (Eq. 9-10): on the frames' conditions, on all N-1 (the shipped checkpoints), or off (Table 8)
AUX_CHOICES = ("frames", "all", "off")


def loss_weights(settings: TrainSettings) -> LossWeights:
    """The loss weights of a run: the paper's, with the auxiliary loss as `settings.aux` asks."""
    if settings.aux not in AUX_CHOICES:
        raise SettingsError(f"aux must be one of {AUX_CHOICES}, got {settings.aux!r}")
    if settings.aux == "off":
        return LossWeights(aux=0.0)
    return LossWeights(aux_targets=settings.aux)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def validate(model, body, val_inputs: Tensor, val_targets: Targets, device: str) -> dict[str, float]:
    """MPJPE and PA-MPJPE (mm) of `model` on the fixed validation clips, valid frames only."""
    pred = predict_clips(model, body, val_inputs, device=device)["joints"].flatten(0, 1).numpy()
    gt = val_targets.joints3d.flatten(0, 1).numpy()
    valid = val_targets.valid.flatten().numpy()
    return {"mpjpe_mm": float(mpjpe(pred[valid], gt[valid]).mean() * 1000),
            "pa_mpjpe_mm": float(pa_mpjpe(pred[valid], gt[valid]).mean() * 1000)}


def _draw(sample, batch_size: int, device: str, rng: np.random.Generator):
    """One step's batch: `batch_size` random windows of the train split (`sample(rng, batch_size)`), on `device`."""
    x, targets = sample(rng, batch_size)
    targets = Targets(*(t.to(device) for t in (targets.rotmats, targets.shape, targets.joints3d,
                                               targets.keypoints2d, targets.valid)))
    return x.to(device), targets, {}


def _uniform_sampler(maker, starts: np.ndarray):
    """Batches of windows at random `starts` of one clip maker."""
    if len(starts) == 0:
        raise DataError("the train split has no sequence of at least f frames")
    return lambda rng, batch_size: maker.batch(rng.choice(starts, batch_size), [rng] * batch_size)


def _synthetic_maker(settings: TrainSettings, bank, f: int, body):
    """The synthetic training clips of `bank`: the run's noise model and camera model, and shape augmentation when
    `shape_std` > 0."""
    from ..data.synthetic import ClipMaker, ShapePool, noise_model

    shapes = ShapePool(body, settings.shape_std, seed=settings.seed) if settings.shape_std > 0 else None
    return ClipMaker(bank, f, noise_model(settings.noise_model, settings.noise), camera_model=settings.camera_model,
                     shapes=shapes)


def _synthetic_data(settings: TrainSettings, f: int, body, splits: tuple[str, str], paths: dict,
                    sequences: list[str] | None):
    """The synthetic clips of the train split's fits as training data, and fixed validation clips of the val split
    (one camera per sequence, seeded noise)."""
    from ..data.prepare import load_fits
    from ..data.synthetic import ClipMaker, build_motion_bank, fixed_clips, noise_model, window_starts

    if settings.synthetic_share:
        raise SettingsError("--synthetic-share mixes synthetic clips into the renders: use it with --data renders")
    if settings.keypoint_inputs != "2d+vis":
        raise SettingsError(f"--keypoint-inputs {settings.keypoint_inputs} needs MediaPipe's own output: "
                            "train it with --data renders (run `diffmesh prepare --render` first)")
    train_bank, val_bank = (build_motion_bank(body, load_fits(s, paths["mocap"], paths["fits"], sequences))
                            for s in splits)
    sample = _uniform_sampler(_synthetic_maker(settings, train_bank, f, body), window_starts(train_bank, f, 1))
    val_starts, val_rngs, val_cams = fixed_clips(val_bank, f, seed=1234, limit=settings.val_clips)
    val_maker = ClipMaker(val_bank, f, noise_model(settings.noise_model, settings.noise))
    val_x, val_t = val_maker.batch(val_starts, val_rngs, val_cams)
    return sample, val_x, val_t


def _render_data(settings: TrainSettings, f: int, body, splits: tuple[str, str], paths: dict,
                 sequences: list[str] | None):
    """The rendered set as training data (data/render_clips.py): the train split's files with speed and mirror
    augmentation, mixed with synthetic clips of the same split's fits when `synthetic_share` > 0
    (data/mixed_clips.py), and fixed validation clips (non-overlapping windows of the val split's files, no
    augmentation)."""
    from ..data.mocap import CMUMocap
    from ..data.render_clips import Augment, RenderClipMaker
    from ..data.renders import load_render_set

    mocap = CMUMocap(paths["mocap"]) if paths["mocap"] else CMUMocap()
    names = [[n for n in mocap.names(s) if sequences is None or n in sequences] for s in splits]
    train_files, val_files = (load_render_set(paths["renders"], n) for n in names)
    maker = RenderClipMaker(train_files, f, channels=settings.keypoint_inputs, body=body)
    val_maker = RenderClipMaker(val_files, f, channels=settings.keypoint_inputs, augment=Augment.off(), body=body)
    val_starts = val_maker.window_starts(f)
    val_starts = val_starts[np.linspace(0, len(val_starts) - 1, min(settings.val_clips, len(val_starts))).astype(int)]
    val_x, val_t = val_maker.batch(val_starts, [np.random.default_rng([1234, i]) for i in range(len(val_starts))])
    if settings.synthetic_share <= 0:
        return _uniform_sampler(maker, maker.window_starts(1)), val_x, val_t
    from ..data.mixed_clips import MixedSampler, WorldErrors
    from ..data.prepare import load_fits
    from ..data.synthetic import build_motion_bank, window_starts

    bank = build_motion_bank(body, load_fits(splits[0], paths["mocap"], paths["fits"], names[0]))
    synthetic = _synthetic_maker(settings, bank, f, body)
    errors = WorldErrors(train_files, f) if settings.keypoint_inputs == "2d+3d" else None
    mixed = MixedSampler(maker, maker.window_starts(1), synthetic, window_starts(bank, f, 1),
                         settings.synthetic_share, settings.keypoint_inputs, errors)
    return mixed.sample, val_x, val_t


def run_training(out_dir: str | Path, settings: TrainSettings, device: str = "cpu", resume: bool = False,
                 mocap_path=None, cache_dir=None, threads: int | None = None, quiet: bool = False,
                 splits: tuple[str, str] = ("train", "val"), sequences: list[str] | None = None,
                 stop_after_epochs: int | None = None, render_cache=None) -> dict:
    """The whole run (see the module docstring). Returns a summary (also written to OUT/summary.json).
    `splits` and `sequences` choose other data and `stop_after_epochs` stops early as an interruption would
    (the tests use them)."""
    from ..body.anny_body import AnnyBody

    out_dir = Path(out_dir)
    run = start_run(out_dir, device, resume)
    dev = run.device
    if threads:
        torch.set_num_threads(threads)

    body = AnnyBody().to(dev)
    cfg = model_config(settings.preset, method=settings.method, motion_form=settings.motion_form,
                       keypoint_inputs=settings.keypoint_inputs, anchor=settings.anchor)
    weights = loss_weights(settings)
    f = cfg.num_frames
    paths = {"mocap": mocap_path, "fits": cache_dir, "renders": render_cache}
    if settings.data == "renders":
        sample, val_x, val_t = _render_data(settings, f, body.cpu(), splits, paths, sequences)
    elif settings.data == "synthetic":
        sample, val_x, val_t = _synthetic_data(settings, f, body.cpu(), splits, paths, sequences)
    else:
        raise SettingsError(f"data must be one of {DATA_SOURCES}, got {settings.data!r}")
    body.to(dev)

    seed_everything(settings.seed)
    model = build_model(cfg, body).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    total = settings.epochs * settings.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, settings.warmup_steps))
    spec = LoopSpec(
        model=model, body=body, optimizer=opt, scheduler=sched,
        draw=lambda rng, epoch: _draw(sample, settings.batch_size, dev, rng),
        validate=lambda: validate(model, body, val_x, val_t, dev),
        report=lambda epoch, val: (f"epoch {epoch}/{settings.epochs}: val MPJPE {val['mpjpe_mm']:.1f} mm, "
                                   f"PA-MPJPE {val['pa_mpjpe_mm']:.1f} mm"),
        settings=asdict(settings), settings_key="settings", result_key="val", score_key="mpjpe_mm",
        best_key="best_val_mpjpe_mm", epochs=settings.epochs, steps_per_epoch=settings.steps_per_epoch,
        seed=settings.seed, weights=weights, max_grad_norm=settings.max_grad_norm,
        description=f"train {settings.method}",
        summary_extra={"parameters": sum(p.numel() for p in model.parameters())})
    return run_loop(spec, run, out_dir, resume=resume, quiet=quiet, stop_after_epochs=stop_after_epochs)

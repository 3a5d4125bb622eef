"""`diffmesh paper-train`: one of the paper's settings (diffmesh.data.paper_settings) trained with SMPL on the
standard databases, scored every epoch under the setting's protocol (diffmesh.evaluation.paper); the epochs,
logs, checkpoints and resume are diffmesh.train.loop's.

Data path of a training batch (B clips of f frames):
    features setting: database rows (B, f) -> features (B, f, 2048); SMPL pose/shape targets where the file has them
        (3DPW), SPIN-49 3D joints -> the 14 common joints (3DPW, H36M, MPI-INF-3DHP), 2D joints -> the 14 common
        joints normalised to the box (all; InstaVariety has only these). TCMR's batch split: 60 % 2D-only clips.
    keypoint setting: MotionBERT pickle rows (B, f) -> (x, y, confidence) (B, f, 17, 3); targets SMPL pose/shape and
        the H36M-17 joints SMPL regresses from them; half the clips mirrored (body.mirror).
Adam, the learning rate decayed once an epoch.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..body.mirror import flip_keypoints, flip_pose, smpl_rotmats
from ..body.smpl import SMPLBody
from ..data.databases import (FrameDatabase, MeshSplit, chunk_starts, motionbert_clips, normalize_screen,
                              read_database, read_mesh_pickle)
from ..data.paper_settings import Setting, TrainFile, get_setting, require_hybrik
from ..errors import DataError
from ..evaluation.paper import EvalSet
from ..losses import LossWeights, Targets
from ..metrics import H36M_TO_J14, J14_HIPS
from ..model import build_model, model_config
from .loop import LoopSpec, run_loop, seed_everything, start_run


class FeatureClips:
    """Training clips of one VIBE/TCMR database: f consecutive rows of one sequence every `stride` rows."""

    def __init__(self, db: FrameDatabase, f: int, stride: int, use_smpl: bool):
        self.db, self.f = db, f
        self.starts = chunk_starts(db.vid_name, f, stride)
        self.has_smpl = use_smpl and db.pose is not None
        self.has_3d = db.joints3d is not None
        self.only_2d = not (self.has_smpl or self.has_3d)
        if db.features is None:
            raise DataError(f"{db.name} has no 'features'; the ResNet-50 settings need them")

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, picks: np.ndarray) -> dict:
        rows = self.starts[picks][:, None] + np.arange(self.f)                   # (B, f), contiguous
        flat = rows.ravel()
        uniq, inverse = np.unique(flat, return_inverse=True)                      # h5py reads increasing indices only
        feats = np.asarray(self.db.features[uniq], dtype=np.float32)[inverse]
        B, f = rows.shape
        out = {"x": feats.reshape(B, f, -1), "valid": self.db.valid[rows],
               "has_smpl": np.full(B, self.has_smpl), "has_3d": np.full(B, self.has_3d)}
        out["pose"] = self.db.pose[rows] if self.has_smpl else np.zeros((B, f, 72), np.float32)
        out["shape"] = self.db.shape[rows].mean(1) if self.has_smpl else np.zeros((B, 10), np.float32)
        out["joints3d"] = (self.db.joints3d_j14(flat).reshape(B, f, 14, 3) if self.has_3d
                           else np.zeros((B, f, 14, 3), np.float32))
        if self.db.joints2d is not None:
            uv, conf = self.db.keypoints2d_j14(flat)
            out["kp2d"], out["kp2d_conf"] = uv.reshape(B, f, 14, 2), conf.reshape(B, f, 14)
        else:
            out["kp2d"], out["kp2d_conf"] = np.zeros((B, f, 14, 2), np.float32), np.zeros((B, f, 14), np.float32)
        return out


class KeypointClips:
    """Training clips of one MotionBERT mesh split: MotionBERT's clip cutting (stride 8 in training); with `refine`,
    HybrIK's per-frame SMPL predictions ride along as the model's initial pose and shape."""

    def __init__(self, split: MeshSplit, dataset: str, f: int, stride: int, refine: bool = False, name: str = ""):
        if refine:
            require_hybrik(split, name)
        self.split, self.f, self.refine = split, f, refine
        self.clips = motionbert_clips(split.source, f, stride)
        xy = normalize_screen(split.joint_2d, split.resolution(dataset))
        self.inputs = np.concatenate([xy, split.confidence[..., None]], -1).astype(np.float32)   # (N, 17, 3)
        self.only_2d = False

    def __len__(self) -> int:
        return len(self.clips)

    def batch(self, picks: np.ndarray) -> dict:
        rows = self.clips[picks]
        B = len(rows)
        out = {"x": self.inputs[rows], "pose": self.split.smpl_pose[rows], "shape": self.split.smpl_shape[rows].mean(1),
               "valid": np.ones(rows.shape, bool), "has_smpl": np.ones(B, bool), "has_3d": np.ones(B, bool)}
        if self.refine:
            out["init_pose"], out["init_shape"] = self.split.hybrik_pose[rows], self.split.hybrik_shape[rows]
        return out


def to_training_batch(batch: dict, body: SMPLBody, device) -> tuple[Tensor, Targets, dict]:
    """Numpy clip batch -> model input, Targets (features: 14 common joints centred on the hips, 2D; keypoints: the
    H36M-17 joints of the SMPL ground truth, centred on the pelvis) and further model inputs (HybrIK's init_pose
    (B, f, 24, 3, 3) and init_shape (B, f, 10) for a refining model)."""
    t = lambda k, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(batch[k]), dtype=dt, device=device)  # noqa
    rotmats = smpl_rotmats(batch["pose"]).to(device)
    shape = t("shape")
    extra = {}
    if "init_pose" in batch:
        extra = {"init_pose": smpl_rotmats(batch["init_pose"]).to(device), "init_shape": t("init_shape")}
    if "joints3d" in batch:                                                        # features: database joints
        return t("x"), Targets(rotmats, shape, t("joints3d"), t("kp2d"), t("valid", torch.bool),
                               joint_index=torch.as_tensor(H36M_TO_J14, device=device), centre=J14_HIPS,
                               keypoints2d_conf=t("kp2d_conf"), has_smpl=t("has_smpl", torch.bool),
                               has_joints3d=t("has_3d", torch.bool)), extra
    B, f = rotmats.shape[:2]
    with torch.no_grad():
        per_frame_shape = torch.as_tensor(batch["shape"], device=device).repeat_interleave(f, 0)
        joints = body(rotmats.flatten(0, 1), per_frame_shape, with_vertices=False).joints.view(B, f, 17, 3)
    return t("x"), Targets(rotmats, shape, joints, None, t("valid", torch.bool)), extra


@dataclass
class PaperTrainSettings:
    """Everything a paper-mode run depends on (saved in its checkpoints). Defaults: the paper's Sec. 4.1 (Adam,
    lr 5e-5, x0.98 per epoch, batch 64, 60 epochs, f = 16, N = 30) and Eq. 8-10's weights."""

    setting: str = "resnet-3dpw"
    preset: str = "paper"
    method: str = "diffmesh"
    frames: int = 16
    steps: int = 30
    denoiser_design: str = "cross"
    epochs: int = 0                     # 0: the setting's (60; the refinement settings 30, as released)
    steps_per_epoch: int = 0            # 0: the setting's (TCMR: 500; MotionBERT: one pass over the 3D clips)
    batch_size: int = 64
    lr: float = 5e-5
    lr_decay: float = 0.98
    weight_decay: float = 0.0
    aux_weight: float = 0.01
    train_stride: int = 0               # 0: 1 for databases (TCMR's overlap), 8 for MotionBERT pickles
    seed: int = 0
    max_grad_norm: float = 1.0
    eval_limit: int = 0                 # sequences validated each epoch (0 = all)
    flip: bool = True                   # keypoint settings: mirror half the clips in training and average the
                                        # prediction with the mirrored input's at test (as the released code)


class Mixture:
    """Draws training batches from several clip sources: TCMR's split (60 % of each batch from 2D-only sources
    when any exist), each group sampled in proportion to its clip counts."""

    def __init__(self, sources: list[tuple[TrainFile, object]]):
        self.sources = sources

    def active(self, epoch: int) -> list[tuple[TrainFile, object]]:
        return [(tf, s) for tf, s in self.sources if tf.until_epoch is None or epoch < tf.until_epoch]

    def draw(self, rng: np.random.Generator, batch_size: int, epoch: int) -> list[dict]:
        active = self.active(epoch)
        two_d = [s for _, s in active if s.only_2d]
        three_d = [s for _, s in active if not s.only_2d]
        n2 = int(0.6 * batch_size) if two_d and three_d else (batch_size if two_d else 0)
        parts = []
        for group, n in ((two_d, n2), (three_d, batch_size - n2)):
            if n == 0:
                continue
            sizes = np.array([len(s) for s in group], np.float64)
            which = rng.choice(len(group), n, p=sizes / sizes.sum())
            for k in np.unique(which):
                m = int((which == k).sum())
                parts.append(group[k].batch(rng.integers(0, len(group[k]), m)))
        return parts


def _merge(parts: list[dict]) -> dict:
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def build_sources(setting: Setting, data_dir: Path, f: int, stride: int) -> Mixture:
    """The setting's training files as clip sources (each file read once; missing ones stop with their name)."""
    sources = []
    cache: dict[str, dict] = {}
    for tf in setting.train:
        path = data_dir / tf.name
        if tf.kind == "db":
            sources.append((tf, FeatureClips(read_database(path), f, stride or 1, tf.use_smpl)))
        else:
            if tf.name not in cache:
                cache[tf.name] = read_mesh_pickle(path)
            if "train" not in cache[tf.name]:
                raise DataError(f"{path.name} has no 'train' split")
            sources.append((tf, KeypointClips(cache[tf.name]["train"], tf.dataset, f, stride or 8, setting.refine,
                                              tf.name)))
    for tf, s in sources:
        if len(s) == 0:
            raise DataError(f"{tf.name}: no sequence has {f} frames; nothing to train on")
    return Mixture(sources)


def draw_batch(mixture: Mixture, rng: np.random.Generator, batch_size: int, epoch: int, flip: bool, body: SMPLBody,
               device) -> tuple[Tensor, Targets, dict]:
    """One step's batch from the mixture; with `flip`, each clip mirrored with probability 1/2 (its 2D input,
    pose and initial pose alike)."""
    batch = _merge(mixture.draw(rng, batch_size, epoch))
    if flip:
        mirrored = rng.random(len(batch["x"])) < 0.5
        batch["x"][mirrored] = flip_keypoints(batch["x"][mirrored])
        batch["pose"][mirrored] = flip_pose(batch["pose"][mirrored])
        if "init_pose" in batch:
            batch["init_pose"][mirrored] = flip_pose(batch["init_pose"][mirrored])
    return to_training_batch(batch, body, device)


def _init_weights(model, out_dir: Path, init_backbone: str | None, init_released: str | None, rank: int,
                  quiet: bool) -> None:
    """Start from a released DiffMesh checkpoint or MotionBERT's backbone; rank 0 writes OUT/init_report.txt."""
    from .. import released

    if init_released:
        report = released.load_released_diffmesh(model, init_released)
    else:
        report = released.load_motionbert_backbone(model, init_backbone)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "init_report.txt").write_text(report.summary() + "\n")
        if not quiet:
            print(report.summary())


def _report_line(setting: Setting, quiet: bool):
    if quiet:
        return lambda epoch, m: None
    return lambda epoch, m: (f"epoch {epoch}: {setting.protocol} MPJPE {m['mpjpe']:.1f} PA-MPJPE {m['pa_mpjpe']:.1f} "
                             f"ACC-ERR {m['acc_err']:.2f}")


def run_paper_training(out_dir: str | Path, settings: PaperTrainSettings, data_dir: str | Path, smpl_path: str | Path,
                       device: str = "cpu", resume: bool = False, init_backbone: str | None = None,
                       init_released: str | None = None, quiet: bool = False) -> dict:
    """Train one setting; writes OUT/last.pt (resumable), OUT/best.pt (lowest eval MPJPE) and OUT/summary.json
    atomically after every epoch, and TensorBoard logs in OUT/tb.

    Several GPUs: `torchrun --nproc_per_node=G -m diffmesh.cli paper-train ...` (DistributedDataParallel; each
    rank draws its own `batch_size` clips, so the global batch is G x batch_size; rank 0 evaluates and writes)."""
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    setting = get_setting(settings.setting)
    run = start_run(out_dir, device, resume)
    dev = run.device
    body = SMPLBody(smpl_path).to(dev)
    mixture = build_sources(setting, data_dir, settings.frames, settings.train_stride)
    eval_set = EvalSet.from_setting(setting, data_dir, limit=settings.eval_limit or None) if run.rank == 0 else None
    cfg = model_config(settings.preset, method=settings.method, input=setting.input, num_frames=settings.frames,
                       num_steps=settings.steps, denoiser_design=settings.denoiser_design, refine=setting.refine)
    seed_everything(settings.seed)
    model = build_model(cfg, body).to(dev)
    if init_backbone or init_released:
        _init_weights(model, out_dir, init_backbone, init_released, run.rank, quiet)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=settings.lr_decay)
    per_epoch = settings.steps_per_epoch or setting.steps_per_epoch or max(
        1, sum(len(s) for _, s in mixture.sources if not s.only_2d) // (settings.batch_size * run.world))
    flip = settings.flip and setting.input == "keypoints"     # features of mirrored crops do not exist
    spec = LoopSpec(
        model=model, body=body, optimizer=opt, scheduler=sched,
        draw=lambda rng, epoch: draw_batch(mixture, rng, settings.batch_size, epoch, flip, body, dev),
        validate=lambda: eval_set.evaluate(model, body, setting.protocol, setting.joint_set, device=dev,
                                           flip_test=flip).as_dict(),
        report=_report_line(setting, quiet),
        settings=asdict(settings), settings_key="paper_settings", result_key="eval", score_key="mpjpe",
        best_key="best_mpjpe_mm", epochs=settings.epochs or setting.epochs, steps_per_epoch=per_epoch,
        seed=settings.seed, weights=LossWeights(aux=settings.aux_weight, keypoints2d=LossWeights.joints3d),
        max_grad_norm=settings.max_grad_norm, scheduler_per_step=False,
        # keypoint settings have no 2D targets: the camera head gets no gradient, every step alike (a static graph)
        static_graph=setting.input == "keypoints", logged=("mpjpe", "pa_mpjpe", "acc_err"), log_total_and_lr=False,
        description=settings.setting)
    return run_loop(spec, run, out_dir, resume=resume, quiet=quiet)

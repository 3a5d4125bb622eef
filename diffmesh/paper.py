"""Paper mode: train and evaluate with SMPL on the standard databases, as the paper's tables did.

A *setting* (`SETTINGS` below) names the input (SPIN ResNet-50 features, or 2D keypoints for the DSTformer
backbone), the training files and how each is used, the evaluation file, the protocol and the paper's numbers.
`diffmesh paper-train SETTING` and `diffmesh paper-eval CHECKPOINT --setting SETTING [--protocol tcmr|motionbert]`
run them; docs/reproduce.md lists one command per reported number.

Data path of a training batch (B clips of f frames):
    features setting: database rows (B, f) -> features (B, f, 2048); SMPL pose/shape targets where the file has them
        (3DPW), SPIN-49 3D joints -> the 14 common joints (3DPW, H36M, MPI-INF-3DHP), 2D joints -> the 14 common
        joints normalised to the box (all; InstaVariety has only these). TCMR's batch split: 60 % 2D-only clips.
    keypoint setting: MotionBERT pickle rows (B, f) -> (x, y, confidence) (B, f, 17, 3); targets SMPL pose/shape and
        the H36M-17 joints SMPL regresses from them.
Evaluation: per sequence, the TCMR protocol (one 16-frame window per frame, padded TCMR's way, the centre output
kept, whole-sequence ACC-ERR) or the MotionBERT protocol (non-overlapping 16-frame clips, ACC-ERR inside clips).
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .body.base import H36M_FLIP
from .body.smpl import SMPLBody
from .checkpoint import load_model, save_checkpoint
from .data.databases import (H36M17_TO_MPII3D17, MPII3D17_PELVIS, FrameDatabase, MeshSplit, chunk_starts,
                             motionbert_clips, normalise_screen, read_database, read_mesh_pickle, sequence_rows)
from .errors import DataError
from .losses import LossWeights, Targets
from .metrics import H36M_TO_J14, J14_HIPS, Metrics, aggregate, evaluate_joint_set, evaluate_motionbert
from .model import DiffMeshModel, build_model, model_config
from .outdir import write_json
from .rotations import rotvec_to_rotmat
from .train import resume_run, seed_everything, start_run, train_step

PROTOCOLS = ("tcmr", "motionbert")


@dataclass(frozen=True)
class TrainFile:
    """One training file of a setting. kind: 'db' (VIBE/TCMR database) or 'mesh' (MotionBERT pickle, its 'train'
    split; `dataset` picks its 2D normalisation: pw3d | h36m | coco); use_smpl: train pose/shape on it (TCMR: 3DPW
    yes, Human3.6M no); until_epoch: drop the file from this epoch on (the released code drops Human3.6M at 20)."""

    name: str
    kind: str = "db"
    use_smpl: bool = False
    dataset: str = ""
    until_epoch: int | None = None


@dataclass(frozen=True)
class Setting:
    table: str
    input: str                      # features | keypoints
    train: tuple[TrainFile, ...]
    eval_file: str
    eval_kind: str                  # db | mesh
    protocol: str                   # the protocol the paper's number follows
    joint_set: str = "j14"          # j14 (3DPW, H36M) | mpii3d17 (MPI-INF-3DHP)
    eval_dataset: str = ""          # MotionBERT normalisation of the eval pickle
    paper: dict = field(default_factory=dict)   # the paper's values, mm
    steps_per_epoch: int | None = 500           # TCMR's 500 iterations an epoch; None = one pass over the 3D clips
    refine: bool = False                        # the head refines HybrIK's per-frame SMPL ("with refinement")
    epochs: int = 60                            # the paper's 60; the released refinement config trains 30


# The paper (Sec. 4.2) trains on PoseTrack and InstaVariety (2D) and 3DPW, Human3.6M and AMASS (3D). AMASS has no
# images, hence no features: it fed MPS-Net's motion discriminator, which DiffMesh does not have, so it is left out.
# The tables without 3DPW training and on MPI-INF-3DHP follow VIBE/TCMR [5, 46, 56], who add MPI-INF-3DHP there.
_2D = (TrainFile("insta_train_db.h5"), TrainFile("posetrack_train_db.pt"))
_H36M = TrainFile("h36m_train_25fps_db.pt")
_MPII3D = TrainFile("mpii3d_train_scale12_db.pt")
_PW3D_TRAIN = TrainFile("3dpw_train_db.pt", use_smpl=True)
_MB_PW3D = TrainFile("mesh_det_pw3d.pkl", kind="mesh", use_smpl=True, dataset="pw3d")
_MB_H36M = TrainFile("mesh_det_h36m.pkl", kind="mesh", use_smpl=True, dataset="h36m")
# the refinement's files: the same pickles plus HybrIK's predictions (MotionBERT's refine branch, docs/mesh.md)
_MB_PW3D_HYBRIK = TrainFile("mesh_det_pw3d_w_hybrik_pred_hr48_w.pkl", kind="mesh", use_smpl=True, dataset="pw3d")
_MB_H36M_HYBRIK = "mesh_det_h36m_w_hybrik_pred.pkl"

SETTINGS: dict[str, Setting] = {
    "resnet-3dpw": Setting("2 (fixed ResNet-50, 3DPW)", "features", (_PW3D_TRAIN, _H36M, *_2D),
                           "3dpw_test_db.pt", "db", "tcmr",
                           paper=dict(mpve=94.0, mpjpe=77.2, pa_mpjpe=48.5, acc_err=6.3)),
    "resnet-h36m": Setting("2 (fixed ResNet-50, Human3.6M)", "features", (_PW3D_TRAIN, _H36M, *_2D),
                           "h36m_test_25fps_nosmpl_db.pt", "db", "tcmr",
                           paper=dict(mpjpe=65.3, pa_mpjpe=41.9, acc_err=3.3)),
    "resnet-no3dpw": Setting("3 (fixed ResNet-50, no 3DPW training)", "features", (_MPII3D, _H36M, *_2D),
                             "3dpw_test_db.pt", "db", "tcmr",
                             paper=dict(mpve=105.9, mpjpe=88.7, pa_mpjpe=53.0, acc_err=6.5)),
    "resnet-mpii3d": Setting("5 (fixed ResNet-50, MPI-INF-3DHP)", "features", (_MPII3D, _H36M, *_2D),
                             "mpii3d_val_scale12_db.pt", "db", "tcmr", joint_set="mpii3d17",
                             paper=dict(mpjpe=78.9, pa_mpjpe=54.4, acc_err=7.0)),
    "dstformer-3dpw": Setting("2 (DSTformer, 3DPW); 6, 7, 8 (ablations)", "keypoints",
                              (_MB_PW3D, TrainFile(_MB_H36M.name, "mesh", True, "h36m", until_epoch=20)),
                              "mesh_det_pw3d.pkl", "mesh", "motionbert", eval_dataset="pw3d",
                              paper=dict(mpve=86.4, mpjpe=75.7, pa_mpjpe=45.6, acc_err=6.1), steps_per_epoch=None),
    "dstformer-h36m": Setting("2 (DSTformer, Human3.6M)", "keypoints", (_MB_H36M,), "mesh_det_h36m.pkl", "mesh",
                              "motionbert", eval_dataset="h36m", paper=dict(mpve=64.2, mpjpe=52.5, pa_mpjpe=33.5,
                                                                            acc_err=5.5), steps_per_epoch=None),
    "dstformer-3dpw-refine": Setting("2 (DSTformer with HybrIK refinement, 3DPW)", "keypoints",
                                     (_MB_PW3D_HYBRIK, TrainFile(_MB_H36M_HYBRIK, "mesh", True, "h36m", until_epoch=20)),
                                     _MB_PW3D_HYBRIK.name, "mesh", "motionbert", eval_dataset="pw3d",
                                     paper=dict(mpve=78.4, mpjpe=67.8, pa_mpjpe=40.1, acc_err=6.3),
                                     steps_per_epoch=None, refine=True, epochs=30),
    "dstformer-h36m-refine": Setting("2 (DSTformer with HybrIK refinement, Human3.6M)", "keypoints",
                                     (TrainFile(_MB_H36M_HYBRIK, "mesh", True, "h36m"),), _MB_H36M_HYBRIK, "mesh",
                                     "motionbert", eval_dataset="h36m",
                                     paper=dict(mpve=52.1, mpjpe=42.4, pa_mpjpe=27.7, acc_err=5.7),
                                     steps_per_epoch=None, refine=True, epochs=30),
}


def get_setting(name: str) -> Setting:
    if name not in SETTINGS:
        raise DataError(f"unknown setting '{name}'; choose one of {sorted(SETTINGS)}")
    return SETTINGS[name]


# ---------------------------------------------------------------- training clips

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


def _require_hybrik(split: MeshSplit, name: str) -> None:
    if split.hybrik_pose is None:
        raise DataError(f"{name} has no HybrIK predictions ('pred_smpl_pose', 'pred_smpl_shape'); the refinement "
                        "settings need the *_w_hybrik_pred*.pkl files of MotionBERT's refine branch "
                        "(docs/reproduce.md)")


class KeypointClips:
    """Training clips of one MotionBERT mesh split: MotionBERT's clip cutting (stride 8 in training); with `refine`,
    HybrIK's per-frame SMPL predictions ride along as the model's initial pose and shape."""

    def __init__(self, split: MeshSplit, dataset: str, f: int, stride: int, refine: bool = False, name: str = ""):
        if refine:
            _require_hybrik(split, name)
        self.split, self.f, self.refine = split, f, refine
        self.clips = motionbert_clips(split.source, f, stride)
        xy = normalise_screen(split.joint_2d, split.resolution(dataset))
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


# SMPL's left/right joint pairs swapped (MotionBERT's flip_thetas pairs)
SMPL_FLIP = (0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22)


def flip_keypoints(x: np.ndarray | Tensor):
    """Mirror normalised 2D keypoints about the image's vertical centre line: x negated, left and right joints
    swapped. (..., 17, 3) (x, y, confidence) -> (..., 17, 3)."""
    out = x[..., list(H36M_FLIP), :].clone() if isinstance(x, Tensor) else x[..., list(H36M_FLIP), :].copy()
    out[..., 0] = -out[..., 0]
    return out


def flip_pose(pose: np.ndarray) -> np.ndarray:
    """The SMPL pose of the mirrored body: pairs swapped, the y and z axis-angle components negated. (..., 72)."""
    aa = pose.reshape(*pose.shape[:-1], 24, 3)[..., list(SMPL_FLIP), :].copy()
    aa[..., 1:] = -aa[..., 1:]
    return aa.reshape(pose.shape)


def flip_rotmats(R: Tensor) -> Tensor:
    """`flip_pose` on rotation matrices: M R M with M = diag(-1, 1, 1), pairs swapped. (..., 24, 3, 3)."""
    M = torch.diag(R.new_tensor([-1.0, 1.0, 1.0]))
    return M @ R[..., list(SMPL_FLIP), :, :] @ M


def smpl_rotmats(pose: np.ndarray | Tensor) -> Tensor:
    """Axis-angle (..., 72) -> (..., 24, 3, 3)."""
    pose = torch.as_tensor(pose, dtype=torch.float32)
    return rotvec_to_rotmat(pose.reshape(*pose.shape[:-1], 24, 3))


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


def run_paper_training(out_dir: str | Path, settings: PaperTrainSettings, data_dir: str | Path, smpl_path: str | Path,
                       device: str = "cpu", resume: bool = False, init_backbone: str | None = None,
                       init_released: str | None = None, quiet: bool = False) -> dict:
    """Train one setting; writes OUT/last.pt (resumable), OUT/best.pt (lowest eval MPJPE) and OUT/summary.json
    atomically after every epoch, and TensorBoard logs in OUT/tb.

    Several GPUs: `torchrun --nproc_per_node=G -m diffmesh.cli paper-train ...` (DistributedDataParallel; each
    rank draws its own `batch_size` clips, so the global batch is G x batch_size; rank 0 evaluates and writes)."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out_dir, data_dir = Path(out_dir), Path(data_dir)
    setting = get_setting(settings.setting)
    run = start_run(out_dir, device, resume)
    rank, world, dev = run.rank, run.world, run.device
    last = out_dir / "last.pt"
    body = SMPLBody(smpl_path).to(dev)
    mixture = build_sources(setting, data_dir, settings.frames, settings.train_stride)
    eval_set = EvalSet.from_setting(setting, data_dir, limit=settings.eval_limit or None) if rank == 0 else None
    cfg = model_config(settings.preset, method=settings.method, input=setting.input, num_frames=settings.frames,
                       num_steps=settings.steps, denoiser_design=settings.denoiser_design, refine=setting.refine)
    epochs = settings.epochs or setting.epochs
    seed_everything(settings.seed)
    model = build_model(cfg, body).to(dev)
    if init_backbone or init_released:
        from . import released

        if init_released:
            report = released.load_released_diffmesh(model, init_released)
        else:
            report = released.load_motionbert_backbone(model, init_backbone)
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "init_report.txt").write_text(report.summary() + "\n")
            if not quiet:
                print(report.summary())
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=settings.lr_decay)
    per_epoch = settings.steps_per_epoch or setting.steps_per_epoch or max(
        1, sum(len(s) for _, s in mixture.sources if not s.only_2d) // (settings.batch_size * world))
    weights = LossWeights(aux=settings.aux_weight, keypoints2d=LossWeights.joints3d)
    flip = settings.flip and setting.input == "keypoints"     # features of mirrored crops do not exist
    epoch, step, best, history = 0, 0, float("inf"), []
    if resume:
        payload = resume_run(last, "paper_settings", asdict(settings), model, opt, sched)
        epoch, step, best = payload["epoch"], payload["step"], payload["best_mpjpe_mm"]
        history = json.loads(payload["history"])
    # keypoint settings have no 2D targets: the camera head gets no gradient, every step alike (a static graph)
    net = run.wrap(model, static_graph=setting.input == "keypoints")
    writer = SummaryWriter(str(out_dir / "tb")) if rank == 0 else None
    gen = torch.Generator(device=dev)
    t0 = time.time()
    while epoch < epochs:
        bar = tqdm(range(per_epoch), desc=f"{settings.setting} epoch {epoch + 1}/{epochs}",
                   disable=quiet or rank > 0)
        running: dict[str, float] = {}
        for _ in bar:
            rng = np.random.default_rng([settings.seed, rank, step])
            batch = _merge(mixture.draw(rng, settings.batch_size, epoch))
            if flip:
                mirrored = rng.random(len(batch["x"])) < 0.5
                batch["x"][mirrored] = flip_keypoints(batch["x"][mirrored])
                batch["pose"][mirrored] = flip_pose(batch["pose"][mirrored])
                if "init_pose" in batch:
                    batch["init_pose"][mirrored] = flip_pose(batch["init_pose"][mirrored])
            x, targets, model_inputs = to_training_batch(batch, body, dev)
            gen.manual_seed(settings.seed * 1_000_003 + step * world + rank)
            loss = train_step(net, body, opt, x, targets, weights, generator=gen, max_grad_norm=settings.max_grad_norm,
                              model_inputs=model_inputs)
            step += 1
            for k, v in {"total": loss.total.item(), **loss.terms}.items():
                running[k] = running.get(k, 0.0) + v
            if writer is not None and step % 10 == 0:
                for k, v in loss.terms.items():
                    writer.add_scalar(f"loss/{k}", v, step)
            bar.set_postfix(loss=f"{loss.total.item():.3f}")
        sched.step()
        epoch += 1
        if rank == 0:
            metrics = eval_set.evaluate(model, body, setting.protocol, setting.joint_set, device=dev, flip_test=flip)
            history.append({"epoch": epoch, "step": step, "train": {k: v / per_epoch for k, v in running.items()},
                            "eval": metrics.as_dict(), "seconds": time.time() - t0})
            for k in ("mpjpe", "pa_mpjpe", "acc_err"):
                writer.add_scalar(f"eval/{k}", getattr(metrics, k), step)
            writer.flush()
            if metrics.mpjpe < best:
                best = metrics.mpjpe
                save_checkpoint(out_dir / "best.pt", model, paper_settings=asdict(settings), epoch=epoch, step=step,
                                eval=metrics.as_dict())
            save_checkpoint(last, model, paper_settings=asdict(settings), epoch=epoch, step=step, best_mpjpe_mm=best,
                            history=json.dumps(history), optimizer=opt.state_dict(), scheduler=sched.state_dict())
            if not quiet:
                print(f"epoch {epoch}: {setting.protocol} MPJPE {metrics.mpjpe:.1f} PA-MPJPE {metrics.pa_mpjpe:.1f} "
                      f"ACC-ERR {metrics.acc_err:.2f}")
        run.barrier()
    summary = {"out": str(out_dir), "settings": asdict(settings), "steps": step, "best_mpjpe_mm": best,
               "history": history, "device": str(dev), "world_size": world, "rank": rank}
    if rank == 0:
        writer.close()
        write_json(summary, out_dir / "summary.json")
    run.finish()
    return summary


# ---------------------------------------------------------------- evaluation

@dataclass
class EvalSequence:
    """One person-sequence to score: inputs (T, 2048) or (T, 17, 3); ground truth in the joint sets the protocols
    need (None where the file cannot give it); scored (T,) frames that count for MPJPE (MPI-INF-3DHP's valid_i)."""

    name: str
    inputs: np.ndarray
    gt_tcmr: np.ndarray | None          # (T, 14, 3) common joints, or (T, 17, 3) MPI-INF-3DHP joints
    gt_h36m17: np.ndarray | None        # (T, 17, 3) for the MotionBERT protocol
    pose: np.ndarray | None             # (T, 72) SMPL ground truth (for MPVE)
    shape: np.ndarray | None            # (T, 10)
    scored: np.ndarray
    init_pose: np.ndarray | None = None     # (T, 72) HybrIK's pose, for a refining model
    init_shape: np.ndarray | None = None    # (T, 10)


def tcmr_windows(T: int, seqlen: int = 16) -> np.ndarray:
    """TCMR/MPS-Net's evaluation windows: frame t gets frames t-8 .. t+7 when they all exist, else frame t repeated
    `seqlen` times (their `get_sequence`); the prediction is read at position seqlen // 2. (T, seqlen) indices."""
    half = seqlen // 2
    t = np.arange(T)[:, None]
    idx = t + np.arange(seqlen) - half
    inside = (idx[:, :1] >= 0) & (idx[:, -1:] <= T - 1)
    return np.where(inside, idx, t)


class EvalSet:
    def __init__(self, sequences: list[EvalSequence], kind: str, source: str):
        self.sequences, self.kind, self.source = sequences, kind, source

    @classmethod
    def from_setting(cls, setting: Setting, data_dir: Path, limit: int | None = None,
                     eval_file: str | None = None) -> "EvalSet":
        path = Path(data_dir) / (eval_file or setting.eval_file)
        seqs = []
        if setting.eval_kind == "db":
            db = read_database(path)
            if db.features is None:
                raise DataError(f"{path.name} has no 'features' to evaluate a feature model on")
            mpii = setting.joint_set == "mpii3d17"
            for rows in db.sequences():
                if not mpii:                         # TCMR drops invalid frames first (3DPW); MPI scores valid_i only
                    rows = rows[db.valid[rows]]
                if len(rows) == 0:
                    continue
                gt = db.joints3d_mpii3d17(rows) if mpii else db.joints3d_j14(rows)
                gt17 = db.joints3d_h36m17(rows)
                seqs.append(EvalSequence(str(db.vid_name[rows[0]]), np.asarray(db.features[rows], np.float32), gt,
                                         gt17, None if db.pose is None else db.pose[rows],
                                         None if db.shape is None else db.shape[rows],
                                         db.valid[rows] if mpii else np.ones(len(rows), bool)))
        else:
            split = read_mesh_pickle(path).get("test")
            if split is None:
                raise DataError(f"{path.name} has no 'test' split")
            if setting.refine:
                _require_hybrik(split, path.name)
            xy = normalise_screen(split.joint_2d, split.resolution(setting.eval_dataset))
            inputs = np.concatenate([xy, split.confidence[..., None]], -1)
            for rows in sequence_rows(split.source):
                hybrik = (split.hybrik_pose[rows], split.hybrik_shape[rows]) if setting.refine else (None, None)
                seqs.append(EvalSequence(str(split.source[rows[0]]), inputs[rows], None, None, split.smpl_pose[rows],
                                         split.smpl_shape[rows], np.ones(len(rows), bool), *hybrik))
        if limit:
            seqs = seqs[:limit]
        if not seqs:
            raise DataError(f"{path.name}: no sequence to evaluate")
        return cls(seqs, setting.eval_kind, path.name)

    @torch.inference_mode()
    def evaluate(self, model: DiffMeshModel, body: SMPLBody, protocol: str, joint_set: str = "j14",
                 device: str = "cpu", batch_size: int = 64, flip_test: bool = False) -> Metrics:
        """Score `model` on every sequence under `protocol` ('tcmr' | 'motionbert'); the metrics of all sequences
        combined frame-weighted (ACC-ERR weighted by its terms), in mm. flip_test (keypoint models): average the
        joints and vertices with those predicted from the mirrored input, mirrored back (MotionBERT's test)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got '{protocol}'")
        if flip_test and model.cfg.input != "keypoints":
            raise ValueError("the flip test needs a keypoint model (features of mirrored crops do not exist)")
        model.eval()
        f = model.cfg.num_frames
        results = []
        g = torch.Generator(device=device).manual_seed(0)
        for seq in self.sequences:
            T = len(seq.inputs)
            if protocol == "tcmr" and T < f:                                        # TCMR skips these
                continue
            if protocol == "tcmr":
                windows = tcmr_windows(T, f)
                keep = (np.arange(T), np.full(T, f // 2))                                  # centre of each window
            else:
                windows = motionbert_clips(np.zeros(T), f, f)
                keep = None
            preds = []
            for mirrored in ((False, True) if flip_test else (False,)):
                rot, shp = [], []
                for i in range(0, len(windows), batch_size):
                    w = windows[i:i + batch_size]
                    x = torch.as_tensor(seq.inputs[w], device=device)
                    extra = {}
                    if model.cfg.refine:
                        if seq.init_pose is None:
                            raise DataError(f"{self.source}: a refining model needs HybrIK's predictions in the file")
                        pose = flip_pose(seq.init_pose[w]) if mirrored else seq.init_pose[w]
                        extra = {"init_pose": smpl_rotmats(pose).to(device),
                                 "init_shape": torch.as_tensor(seq.init_shape[w], device=device)}
                    out = model(flip_keypoints(x) if mirrored else x, generator=g, **extra)
                    rot.append(flip_rotmats(out.rotmats) if mirrored else out.rotmats)
                    shp.append(out.shape[:, None].expand(-1, f, -1))
                rot, shp = torch.cat(rot), torch.cat(shp)                                   # (W, f, 24, 3, 3)
                if keep is not None:
                    rot, shp, frames = rot[keep], shp[keep], np.arange(T)
                else:
                    rot, shp, frames = rot.flatten(0, 1), shp.flatten(0, 1), windows.ravel()
                preds.append(_smpl_points(body, rot, shp, with_rest_root=protocol == "tcmr"))
            pred = tuple(sum(p[k] for p in preds) / len(preds) for k in range(2))
            gt = None
            if seq.pose is not None:
                gt = _smpl_points(body, smpl_rotmats(seq.pose[frames]).to(device),
                                  torch.as_tensor(seq.shape[frames], device=device), with_rest_root=protocol == "tcmr")
            results.append(_score(seq, frames, pred, gt, protocol, joint_set, f))
        return aggregate(results)


def _smpl_points(body: SMPLBody, rotmats: Tensor, shape: Tensor, with_rest_root: bool, batch: int = 256):
    """H36M-17 joints and vertices (numpy, metres). with_rest_root: place the root joint where SMPL without
    translation puts it (TCMR's MPVE compares such meshes as they are); else the root joint sits at the origin."""
    joints, verts = [], []
    for i in range(0, len(rotmats), batch):
        out = body(rotmats[i:i + batch], shape[i:i + batch])
        offset = 0
        if with_rest_root:
            v_shaped = body.v_template + torch.einsum("bs,vcs->bvc", shape[i:i + batch], body.shapedirs)
            offset = torch.einsum("v,bvc->bc", body.J_regressor[0], v_shaped)[:, None]
        joints.append((out.joints + offset).cpu().numpy())
        verts.append((out.vertices + offset).cpu().numpy())
    return np.concatenate(joints), np.concatenate(verts)


def _score(seq: EvalSequence, frames: np.ndarray, pred, gt, protocol: str, joint_set: str, f: int) -> Metrics:
    pj, pv = pred
    gj, gv = gt if gt is not None else (None, None)
    if protocol == "tcmr":
        if joint_set == "mpii3d17":
            return evaluate_joint_set(pj[:, H36M17_TO_MPII3D17], seq.gt_tcmr[frames], (MPII3D17_PELVIS,),
                                      scored=seq.scored[frames])
        target = seq.gt_tcmr[frames] if seq.gt_tcmr is not None else gj[:, H36M_TO_J14]
        return evaluate_joint_set(pj[:, H36M_TO_J14], target, J14_HIPS, pv if gv is not None else None, gv)
    target = gj if gj is not None else seq.gt_h36m17[frames] if seq.gt_h36m17 is not None else None
    if target is None:
        raise DataError(f"{seq.name}: the MotionBERT protocol needs the pelvis (SMPL ground truth or 49 joints); "
                        "this file has only 14 joints and no SMPL parameters")
    return evaluate_motionbert(pj, target, pv if gv is not None else None, gv, clip_len=f)


def run_paper_eval(checkpoint: str | Path, setting_name: str, data_dir: str | Path, smpl_path: str | Path,
                   protocol: str | None = None, device: str = "cpu", limit: int | None = None,
                   eval_file: str | None = None, flip_test: bool = True) -> dict:
    """Score one checkpoint on a setting's evaluation file; the protocol defaults to the one the paper's number
    follows; keypoint models get the flip test unless `flip_test` is False. Returns a report with the paper's
    values beside ours."""
    setting = get_setting(setting_name)
    protocol = protocol or setting.protocol
    if protocol not in PROTOCOLS:
        raise DataError(f"--protocol must be one of {PROTOCOLS}, got '{protocol}'")
    body = SMPLBody(smpl_path)
    model = load_model(checkpoint, body, expect={"input": setting.input, "refine": setting.refine}).to(device)
    body = body.to(device)
    eval_set = EvalSet.from_setting(setting, Path(data_dir), limit, eval_file)
    flip_test = flip_test and setting.input == "keypoints"
    m = eval_set.evaluate(model, body, protocol, setting.joint_set, device=device, flip_test=flip_test)
    return {"checkpoint": str(checkpoint), "setting": setting_name, "table": setting.table, "protocol": protocol,
            "flip_test": flip_test,
            "eval_file": eval_set.source, "sequences": len(eval_set.sequences), "ours": m.as_dict(),
            "paper": setting.paper if protocol == setting.protocol else {}}


def format_report(r: dict) -> str:
    rows = [f"{r['setting']} (Table {r['table']}), {r['eval_file']}, {r['protocol']} protocol, "
            f"{r['sequences']} sequences, {r['ours']['frames']} frames",
            "| | MPVE | MPJPE | PA-MPJPE | ACC-ERR |", "|---|---|---|---|---|"]
    o = r["ours"]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    rows.append(f"| ours | {fmt(o['mpve'])} | {fmt(o['mpjpe'])} | {fmt(o['pa_mpjpe'])} | {fmt(o['acc_err'])} |")
    if r["paper"]:
        p = r["paper"]
        rows.append(f"| paper | {fmt(p.get('mpve'))} | {fmt(p.get('mpjpe'))} | {fmt(p.get('pa_mpjpe'))} | "
                    f"{fmt(p.get('acc_err'))} |")
    return "\n".join(rows)

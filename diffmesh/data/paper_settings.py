"""The paper's settings: for each table row, the input (SPIN ResNet-50 features, or 2D keypoints for the DSTformer
backbone), the training files and how each is used, the evaluation file, the protocol its number follows and the
paper's values. `diffmesh paper-train SETTING` trains one (diffmesh.train.paper) and `diffmesh paper-eval`
scores it (diffmesh.evaluation.paper); docs/reproduce.md lists one command per reported number.
"""

from dataclasses import dataclass, field

from ..errors import DataError, SettingsError
from .databases import MeshSplit

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
    """One row of the paper's tables: what is trained on what, and scored how."""

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
# the refinement's files: the same pickles plus HybrIK's predictions (MotionBERT's refine branch, docs/reproduce.md)
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
        raise SettingsError(f"unknown setting '{name}'; choose one of {sorted(SETTINGS)}")
    return SETTINGS[name]


def require_hybrik(split: MeshSplit, name: str) -> None:
    """The refinement settings start from HybrIK's per-frame SMPL: stop with the file's name when it lacks them."""
    if split.hybrik_pose is None:
        raise DataError(f"{name} has no HybrIK predictions ('pred_smpl_pose', 'pred_smpl_shape'); the refinement "
                        "settings need the *_w_hybrik_pred*.pkl files of MotionBERT's refine branch "
                        "(docs/reproduce.md)")

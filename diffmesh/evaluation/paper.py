"""Paper mode's scores: the TCMR and MotionBERT protocols on a setting's evaluation file (`diffmesh paper-eval`),
and the report beside the paper's numbers.

Per sequence, the TCMR protocol (one 16-frame window per frame, padded TCMR's way, the centre output kept,
whole-sequence ACC-ERR) or the MotionBERT protocol (non-overlapping 16-frame clips, ACC-ERR inside clips).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..body.mirror import flip_keypoints, flip_pose, flip_rotmats, smpl_rotmats
from ..body.smpl import SMPLBody
from ..checkpoint import load_model
from ..data.databases import (H36M17_TO_MPII3D17, MPII3D17_PELVIS, motionbert_clips, normalize_screen, read_database,
                              read_mesh_pickle, sequence_rows)
from ..data.paper_settings import PROTOCOLS, Setting, get_setting, require_hybrik
from ..errors import DataError, SettingsError
from ..metrics import H36M_TO_J14, J14_HIPS, Metrics, aggregate, evaluate_joint_set, evaluate_motionbert
from ..model import DiffMeshModel

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
                require_hybrik(split, path.name)
            xy = normalize_screen(split.joint_2d, split.resolution(setting.eval_dataset))
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
            raise SettingsError(f"protocol must be one of {PROTOCOLS}, got '{protocol}'")
        if flip_test and model.cfg.input != "keypoints":
            raise SettingsError("the flip test needs a keypoint model (features of mirrored crops do not exist)")
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


def _smpl_points(body: SMPLBody, rotmats: Tensor, shape: Tensor, with_rest_root: bool, chunk: int = 256):
    """H36M-17 joints and vertices (numpy, metres). with_rest_root: place the root joint where SMPL without
    translation puts it (TCMR's MPVE compares such meshes as they are); else the root joint sits at the origin."""
    joints, verts = [], []
    for part, out in body.pose_in_chunks(rotmats, shape, chunk=chunk):
        offset = 0
        if with_rest_root:
            v_shaped = body.v_template + torch.einsum("bs,vcs->bvc", shape[part], body.shapedirs)
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
        raise SettingsError(f"--protocol must be one of {PROTOCOLS}, got '{protocol}'")
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

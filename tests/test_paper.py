"""Paper mode without the licensed data: readers on synthetic files of the real formats, the two evaluation
protocols against independent computations, and a short train + eval run end to end (tiny preset, synthetic SMPL)."""

import json
import os
import pickle

import joblib
import numpy as np
import pytest
import torch

from diffmesh.body.mirror import smpl_rotmats
from diffmesh.body.smpl import SMPLBody
from diffmesh.cli import main
from diffmesh.data.databases import (H36M17_TO_MPII3D17, chunk_starts, motionbert_clips, read_database,
                                     read_mesh_pickle)
from diffmesh.data.paper_settings import SETTINGS
from diffmesh.errors import DataError, MissingFileError, UnsafePickleError
from diffmesh.evaluation.paper import EvalSet, tcmr_windows
from diffmesh.model import build_model, model_config
from paper_files import vibe_db, write_all, write_smpl


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    return write_all(root / "data"), write_smpl(root / "smpl")


# ---------------------------------------------------------------- readers

def test_databases_read_with_real_keys_and_types(files):
    data, _ = files
    db = read_database(data / "3dpw_test_db.pt")
    raw = joblib.load(data / "3dpw_test_db.pt")                        # the library that wrote it, for comparison
    assert len(db) == 69 and db.vid_name.dtype.kind == "U"
    np.testing.assert_array_equal(db.features, raw["features"])
    np.testing.assert_array_equal(db.valid, raw["valid"].astype(bool))
    assert [len(r) for r in db.sequences()] == [36, 21, 12]
    assert db.joints3d_j14(np.arange(3)).shape == (3, 14, 3)
    mpii = read_database(data / "mpii3d_val_scale12_db.pt")
    np.testing.assert_array_equal(mpii.valid, joblib.load(data / "mpii3d_val_scale12_db.pt")["valid_i"][:, 0] > 0)
    assert mpii.joints3d_mpii3d17(np.arange(2)).shape == (2, 17, 3)
    h36m = read_database(data / "h36m_test_25fps_nosmpl_db.pt")
    assert h36m.pose is None                                            # all-zero 'nosmpl' pose is no ground truth
    insta = read_database(data / "insta_train_db.h5")
    assert insta.vid_name[0] == "seq00_0" and insta.features.shape == (52, 2048)   # stays an h5 dataset
    uv, conf = insta.keypoints2d_j14(np.arange(4))
    assert uv.shape == (4, 14, 2) and conf.shape == (4, 14)
    mb = read_mesh_pickle(data / "mesh_det_h36m.pkl")
    assert len(mb["test"]) == 64 and mb["test"].confidence.shape == (64, 17)
    res = mb["test"].resolution("h36m")
    np.testing.assert_array_equal(res[:, 1], np.where(mb["test"].camera_name == "54138969", 1002.0, 1000.0))


def test_compressed_joblib_reads_the_same(tmp_path):
    db = vibe_db([20], 14, 14, True, np.random.default_rng(1))
    for compress in (3, ("gzip", 3), ("bz2", 3), ("xz", 3)):
        joblib.dump(db, tmp_path / "x_db.pt", compress=compress)
        np.testing.assert_array_equal(read_database(tmp_path / "x_db.pt").features, db["features"])


def test_wrong_feature_size_is_one_clear_line(tmp_path):
    joblib.dump(vibe_db([20], 14, 14, True, np.random.default_rng(1), feature_dim=1024), tmp_path / "3dpw_test_db.pt")
    with pytest.raises(DataError, match=r"3dpw_test_db.pt: 'features' has shape \(20, 1024\).*1024-d.*2048-d"):
        read_database(tmp_path / "3dpw_test_db.pt")


def test_missing_key_and_missing_file(tmp_path, files):
    db = vibe_db([20], 14, 14, True, np.random.default_rng(1))
    del db["vid_name"]
    joblib.dump(db, tmp_path / "bad_db.pt")
    with pytest.raises(DataError, match="missing key 'vid_name'"):
        read_database(tmp_path / "bad_db.pt")
    with pytest.raises(MissingFileError, match="database not found: .*nope_db.pt"):
        read_database(tmp_path / "nope_db.pt")
    split = pickle.loads((files[0] / "mesh_det_pw3d.pkl").read_bytes())
    del split["test"]["smpl_shape"]
    (tmp_path / "mesh.pkl").write_bytes(pickle.dumps(split))
    with pytest.raises(DataError, match=r"split 'test' misses key\(s\) \['smpl_shape'\]"):
        read_mesh_pickle(tmp_path / "mesh.pkl")


def test_truncated_files_are_one_clear_line(tmp_path, files):
    data, _ = files
    for name, reader in (("3dpw_test_db.pt", read_database), ("mesh_det_pw3d.pkl", read_mesh_pickle),
                         ("insta_train_db.h5", read_database)):
        blob = (data / name).read_bytes()
        (tmp_path / name).write_bytes(blob[: len(blob) // 2])
        with pytest.raises(DataError, match="truncated|not a readable HDF5"):
            reader(tmp_path / name)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickles_that_import_code_are_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = vibe_db([20], 14, 14, True, np.random.default_rng(1))
    db["payload"] = _Exploit()
    joblib.dump(db, tmp_path / "evil_db.pt")
    db["payload"] = np.array([_Exploit()], dtype=object)              # inside an object array: joblib's inline pickle
    joblib.dump(db, tmp_path / "evil2_db.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"train": _Exploit()}))
    for path, reader in ((tmp_path / "evil_db.pt", read_database), (tmp_path / "evil2_db.pt", read_database),
                         (tmp_path / "evil.pkl", read_mesh_pickle)):
        with pytest.raises(UnsafePickleError, match=r"refusing to load '(posix|os)\.system'"):
            reader(path)
    assert not (tmp_path / "PWNED").exists()


# ---------------------------------------------------------------- clip cutting and protocols

def test_clip_cutting_matches_the_codebases():
    names = np.array(["a"] * 20 + ["b"] * 5 + ["c"] * 17)
    np.testing.assert_array_equal(chunk_starts(names, 16, 1), [0, 1, 2, 3, 4, 25, 26])       # b is skipped
    clips = motionbert_clips(names, 16, 16)
    np.testing.assert_array_equal(clips[0], np.arange(16))                                   # a's tail dropped
    np.testing.assert_array_equal(clips[1], 20 + np.linspace(0, 5, 16, endpoint=False).astype(int))   # b resampled
    np.testing.assert_array_equal(clips[2], 25 + np.arange(16))
    assert len(clips) == 3
    expected = []
    for t in range(20):                                   # TCMR's get_sequence, written out
        expected.append(list(range(t - 8, t + 8)) if 8 <= t <= 20 - 8 else [t] * 16)
    np.testing.assert_array_equal(tcmr_windows(20), expected)


def _by_hand_tcmr(model, body, seq_inputs, gt14):
    """Each frame through its own window, centre output, 14 joints on the hip centre, loops everywhere."""
    T = len(seq_inputs)
    joints = []
    for t in range(T):
        idx = list(range(t - 8, t + 8)) if 8 <= t <= T - 8 else [t] * 16
        out = model(torch.as_tensor(seq_inputs[idx])[None])
        j = body(out.rotmats[0, 8:9], out.shape, with_vertices=False).joints[0].numpy().astype(np.float64)
        joints.append(j[[3, 2, 1, 4, 5, 6, 16, 15, 14, 11, 12, 13, 8, 10]])
    errs, accs = [], []
    centred = []
    for p, g in zip(joints, gt14.astype(np.float64)):
        p, g = p - (p[2] + p[3]) / 2, g - (g[2] + g[3]) / 2
        centred.append((p, g))
        errs.append(np.mean([np.linalg.norm(p[k] - g[k]) for k in range(14)]))
    for t in range(1, T - 1):
        ap = centred[t - 1][0] - 2 * centred[t][0] + centred[t + 1][0]
        ag = centred[t - 1][1] - 2 * centred[t][1] + centred[t + 1][1]
        accs.append(np.mean([np.linalg.norm(ap[k] - ag[k]) for k in range(14)]))
    return errs, accs


def test_tcmr_protocol_matches_an_independent_computation(files):
    data, smpl = files
    body = SMPLBody(smpl)
    torch.manual_seed(0)
    model = build_model(model_config("tiny", input="features"), body).eval()
    eval_set = EvalSet.from_setting(SETTINGS["resnet-3dpw"], data)
    with torch.inference_mode():
        m = eval_set.evaluate(model, body, "tcmr")
        db = read_database(data / "3dpw_test_db.pt")
        errs, accs = [], []
        for rows in db.sequences():
            rows = rows[db.valid[rows]]                                   # invalid frames dropped first
            if len(rows) < 16:
                continue                                                  # as TCMR
            e, a = _by_hand_tcmr(model, body, db.features[rows], db.joints3d[rows])
            errs += e
            accs += a
    assert m.frames == len(errs) and m.acc_frames == len(accs)
    assert m.mpjpe == pytest.approx(np.mean(errs) * 1000, abs=1e-3)
    assert m.acc_err == pytest.approx(np.mean(accs) * 1000, abs=1e-3)


def test_motionbert_protocol_matches_an_independent_computation(files):
    data, smpl = files
    body = SMPLBody(smpl)
    torch.manual_seed(1)
    model = build_model(model_config("tiny", input="keypoints"), body).eval()
    setting = SETTINGS["dstformer-3dpw"]
    with torch.inference_mode():
        m = EvalSet.from_setting(setting, data).evaluate(model, body, "motionbert")
        test = read_mesh_pickle(data / "mesh_det_pw3d.pkl")["test"]
        keep = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)          # MotionBERT's h36m_17_to_14
        errs, accs, verrs = [], [], []
        start = 0
        for n in (35, 20, 9):
            rows = np.arange(start, start + n)
            start += n
            clips = [rows[s:s + 16] for s in range(0, n - 15, 16)] or [rows[np.linspace(0, n, 16, endpoint=False)
                                                                            .astype(int)]]
            for clip in clips:
                x = np.concatenate([test.joint_2d[clip] / 1920 * 2 - 1, test.confidence[clip][..., None]], -1)
                out = model(torch.as_tensor(x, dtype=torch.float32)[None])
                pred = body(out.rotmats[0], out.shape.expand(16, -1))
                gt = body(smpl_rotmats(test.smpl_pose[clip]), torch.as_tensor(test.smpl_shape[clip]))
                pj = (pred.joints - pred.joints[:, :1]).numpy().astype(np.float64)[:, keep]
                gj = (gt.joints - gt.joints[:, :1]).numpy().astype(np.float64)[:, keep]
                pv = (pred.vertices - pred.joints[:, :1]).numpy()
                gv = (gt.vertices - gt.joints[:, :1]).numpy()
                errs += list(np.linalg.norm(pj - gj, axis=-1).mean(-1))
                verrs += list(np.linalg.norm(pv - gv, axis=-1).mean(-1))
                acc = lambda j: j[:-2] - 2 * j[1:-1] + j[2:]  # noqa: E731
                accs += list(np.linalg.norm(acc(pj) - acc(gj), axis=-1).mean(-1))
    assert m.frames == len(errs) == 16 * 4
    assert m.mpjpe == pytest.approx(np.mean(errs) * 1000, abs=1e-3)
    assert m.mpve == pytest.approx(np.mean(verrs) * 1000, abs=1e-2)
    assert m.acc_err == pytest.approx(np.mean(accs) * 1000, abs=1e-3)


def test_mpii3d_joints_come_from_h36m_joints():
    from diffmesh.data.databases import SPIN49_OF_H36M17, SPIN49_OF_MPII3D17

    np.testing.assert_array_equal(SPIN49_OF_H36M17[H36M17_TO_MPII3D17], SPIN49_OF_MPII3D17)


# ---------------------------------------------------------------- end to end through the command line

@pytest.mark.slow
@pytest.mark.parametrize("setting", ["resnet-3dpw", "dstformer-3dpw", "dstformer-3dpw-refine"])
def test_train_then_eval_end_to_end(files, tmp_path, setting, capsys):
    data, smpl = files
    out = tmp_path / "run"
    args = ["paper-train", setting, "--data-dir", str(data), "--smpl-path", str(smpl), "--out", str(out),
            "--preset", "tiny", "--epochs", "2", "--steps-per-epoch", "3", "--batch-size", "8", "--lr", "1e-3",
            "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and len(summary["history"]) == 2
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    before = (out / "last.pt").read_bytes()
    assert main(args) == 2                                            # no silent overwrite of a run
    assert "pass --resume" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == before
    for protocol in ("tcmr", "motionbert"):
        report = tmp_path / f"{protocol}.json"
        assert main(["paper-eval", str(out / "best.pt"), "--setting", setting, "--data-dir", str(data),
                     "--smpl-path", str(smpl), "--protocol", protocol, "--json", str(report)]) == 0
        r = json.loads(report.read_text())
        assert r["protocol"] == protocol and np.isfinite(r["ours"]["mpjpe"]) and np.isfinite(r["ours"]["acc_err"])
        assert 0 < r["ours"]["pa_mpjpe"] <= r["ours"]["mpjpe"] + 1e-6
        assert r["ours"]["mpve"] is not None
        kept = report.read_bytes()
        assert main(["paper-eval", str(out / "best.pt"), "--setting", setting, "--data-dir", str(data),
                     "--smpl-path", str(smpl), "--protocol", protocol, "--json", str(report)]) == 2
        assert "pass --force" in capsys.readouterr().err and report.read_bytes() == kept
    # the default protocol is the paper's, and its number is printed beside ours
    capsys.readouterr()
    assert main(["paper-eval", str(out / "best.pt"), "--setting", setting, "--data-dir", str(data), "--smpl-path",
                 str(smpl)]) == 0
    assert "| paper |" in capsys.readouterr().out


def test_paper_commands_report_bad_input(files, tmp_path, capsys):
    data, smpl = files
    assert main(["paper-train", "resnet-3dpw", "--data-dir", str(tmp_path), "--smpl-path", str(smpl),
                 "--out", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["paper-train", "resnet-3dpw", "--data-dir", str(data), "--smpl-path", str(tmp_path),
                 "--out", str(tmp_path / "r")]) == 2
    assert "SMPL model not found" in capsys.readouterr().err


def test_flip_is_a_mirror_in_both_forms():
    from diffmesh.body.mirror import flip_keypoints, flip_pose, flip_rotmats

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 16, 17, 3)).astype(np.float32)
    np.testing.assert_array_equal(flip_keypoints(flip_keypoints(x)), x)
    assert flip_keypoints(x)[0, 0, 1, 0] == -x[0, 0, 4, 0]                 # right hip <- mirrored left hip
    pose = rng.normal(0, 0.5, (5, 72)).astype(np.float32)
    np.testing.assert_allclose(flip_pose(flip_pose(pose)), pose)
    torch.testing.assert_close(flip_rotmats(smpl_rotmats(pose)), smpl_rotmats(flip_pose(pose)), atol=1e-5, rtol=0)


def test_flip_test_averages_with_the_mirrored_prediction(files):
    from diffmesh.body.mirror import flip_keypoints, flip_rotmats

    data, smpl = files
    body = SMPLBody(smpl)
    torch.manual_seed(2)
    model = build_model(model_config("tiny", input="keypoints"), body).eval()
    eval_set = EvalSet.from_setting(SETTINGS["dstformer-3dpw"], data, limit=1)
    seq = eval_set.sequences[0]
    with torch.inference_mode():
        m = eval_set.evaluate(model, body, "motionbert", flip_test=True)
        x = torch.as_tensor(seq.inputs[:32]).view(2, 16, 17, 3)
        a, b = model(x), model(flip_keypoints(x))
        ja = body(a.rotmats.flatten(0, 1), a.shape.repeat_interleave(16, 0)).joints
        jb = body(flip_rotmats(b.rotmats).flatten(0, 1), b.shape.repeat_interleave(16, 0)).joints
        gt = body(smpl_rotmats(seq.pose[:32]), torch.as_tensor(seq.shape[:32])).joints
    p = ((ja + jb) / 2).numpy().astype(np.float64)
    p, g = p - p[:, :1], (gt - gt[:, :1]).numpy()
    keep = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    assert m.mpjpe == pytest.approx(np.linalg.norm(p[:, keep] - g[:, keep], axis=-1).mean() * 1000, abs=1e-3)


@pytest.mark.slow
def test_paper_train_from_a_released_checkpoint(files, tmp_path):
    """The paper preset (DSTformer 512 x 5) started from a released-format DiffMesh file through the command line."""
    from test_released import _random_state_dict

    data, smpl = files
    ckpt = tmp_path / "best_epoch.bin"
    torch.save({"epoch": 59, "model": _random_state_dict()}, ckpt)
    out = tmp_path / "run"
    assert main(["paper-train", "dstformer-3dpw", "--data-dir", str(data), "--smpl-path", str(smpl), "--out", str(out),
                 "--init-released", str(ckpt), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
                 "--eval-limit", "1", "--no-flip", "--quiet"]) == 0
    report = (out / "init_report.txt").read_text()
    assert "mapped" in report and "denoiser" in report
    assert json.loads((out / "summary.json").read_text())["steps"] == 1


@pytest.mark.slow
def test_paper_train_under_torchrun(files, tmp_path):
    """Two processes (gloo on CPU here; NCCL with --device cuda), rank 0 writing the run."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from diffmesh.checkpoint import read_checkpoint

    data, smpl = files
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "ddp"
    r = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "diffmesh.cli", "paper-train", "dstformer-3dpw",
                        "--data-dir", str(data), "--smpl-path", str(smpl), "--out", str(out), "--preset", "tiny",
                        "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--eval-limit", "1", "--quiet"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    assert read_checkpoint(out / "last.pt")["step"] == 2


def test_a_refining_model_starts_at_the_initial_pose(files):
    data, smpl = files
    body = SMPLBody(smpl)
    model = build_model(model_config("tiny", input="keypoints", refine=True), body).eval()
    split = read_mesh_pickle(data / "mesh_det_pw3d_w_hybrik_pred_hr48_w.pkl")["test"]
    x = torch.as_tensor(np.concatenate([split.joint_2d[:16] / 960 - 1, split.confidence[:16, :, None]], -1))[None]
    init = smpl_rotmats(split.hybrik_pose[:16])[None]
    with torch.inference_mode():
        out = model(x, init_pose=init, init_shape=torch.as_tensor(split.hybrik_shape[:16])[None])
    torch.testing.assert_close(out.rotmats, init, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="refines initial body parameters.*init_pose"):
        model(x)


def test_refinement_without_hybrik_predictions_is_one_line(files, tmp_path, capsys):
    import shutil

    data, smpl = files
    for name in ("mesh_det_h36m_w_hybrik_pred.pkl",):
        shutil.copy(data / name, tmp_path / name)
    shutil.copy(data / "mesh_det_pw3d.pkl", tmp_path / "mesh_det_pw3d_w_hybrik_pred_hr48_w.pkl")   # no predictions
    assert main(["paper-train", "dstformer-3dpw-refine", "--data-dir", str(tmp_path), "--smpl-path", str(smpl),
                 "--out", str(tmp_path / "r")]) == 2
    assert "has no HybrIK predictions ('pred_smpl_pose'" in capsys.readouterr().err

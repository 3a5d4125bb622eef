import subprocess
import sys

import numpy as np
import pytest

from diffmesh.cli import main


def test_demo_writes_npz_and_png(tmp_path, mocap, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "16", "--iterations", "60"]) == 0
    data = np.load(out / "result.npz")
    assert data["joints3d"].shape == (16, 17, 3) and data["rotmats"].shape == (16, 24, 3, 3)
    assert data["vertices"].shape[0] == 16 and data["faces"].shape[1] == 3
    assert str(data["body_model"]) == "anny" and float(data["fps"]) == 30.0
    assert 0 <= data["phenotype"].min() and data["phenotype"].max() <= 1
    assert float(data["fit_error_mm"].mean()) < 40
    # feet near the floor, head up: a real standing body in world metres (z up)
    assert data["joints3d"][:, 10, 2].mean() - data["joints3d"][:, [3, 6], 2].mean() > 1.0
    import matplotlib.image

    img = matplotlib.image.imread(out / "preview.png")
    assert img.shape[0] > 100 and img.shape[1] > 400 and (img[..., :3] < 0.9).any()
    assert "wrote" in capsys.readouterr().out


def test_existing_output_is_kept_without_force(tmp_path, mocap, capsys):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    assert main(["demo", "-o", str(out), "--frames", "16", "--iterations", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--force" in err
    assert (out / "mine.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]           # no staging folder left behind


def test_missing_mocap_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "diffmesh.cli", "demo", "-o", str(tmp_path / "o"), "--mocap",
                        str(tmp_path / "none.npz")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.startswith("diffmesh:")]
    assert len(lines) == 1 and "CMU mocap file not found" in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("frames", ["0", "100000"])
def test_bad_clip_range(tmp_path, mocap, frames, capsys):
    assert main(["demo", "-o", str(tmp_path / "o"), "--frames", frames]) == 2
    assert "out of range" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("diffmesh: error:"), err
    return err


def test_eval_of_a_missing_or_corrupt_checkpoint_is_one_line(tmp_path, capsys, test_split_fits):
    assert main(["eval", str(tmp_path / "none.pt"), "--limit", "2"]) == 2
    assert "not found" in _one_error_line(capsys)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["eval", str(bad), "--limit", "2"]) == 2
    assert "corrupt" in _one_error_line(capsys)


def test_eval_refuses_a_checkpoint_for_another_input(tmp_path, capsys, test_split_fits, anny_body):
    from diffmesh.checkpoint import save_checkpoint
    from diffmesh.model import build_model, model_config

    path = tmp_path / "features.pt"
    save_checkpoint(path, build_model(model_config("tiny", input="features", feature_dim=32), anny_body))
    assert main(["eval", str(path), "--limit", "2", "--no-vertices"]) == 2
    assert "input='features'" in _one_error_line(capsys)


def test_train_refuses_to_overwrite_a_run_and_a_missing_cache(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"mine")
    assert main(["train", "--out", str(run), "--epochs", "1"]) == 2
    assert "--resume" in _one_error_line(capsys)
    assert (run / "last.pt").read_bytes() == b"mine"
    assert main(["train", "--out", str(tmp_path / "new"), "--cache", str(tmp_path / "empty")]) == 2
    assert "diffmesh prepare" in _one_error_line(capsys)


def test_prepare_unknown_subject_is_one_line(tmp_path, capsys, mocap):
    assert main(["prepare", "--subjects", "99", "--cache", str(tmp_path / "c")]) == 2
    assert "not in" in _one_error_line(capsys)

"""The command line's error policy: a user's mistake is one line and exit status 2, nothing is overwritten."""

from diffmesh.cli import main


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


def test_eval_on_the_synthetic_split_says_the_shipped_models_need_the_renders(capsys):
    # every shipped model reads MediaPipe's world landmarks, which the synthetic split has no source for
    assert main(["eval", "--data", "synthetic", "--limit", "2"]) == 2
    assert "--data renders" in _one_error_line(capsys)


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


def test_unknown_bench_setting_is_one_line_that_names_the_choices(capsys):
    """A bad option value is a SettingsError: one line naming what to choose, not a traceback."""
    assert main(["bench", "--settings", "table4,bogus", "--quick"]) == 2
    err = _one_error_line(capsys)
    assert "bogus" in err and "table9" in err

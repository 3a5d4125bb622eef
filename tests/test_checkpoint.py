import pytest
import torch

from diffmesh.checkpoint import load_model, read_checkpoint, save_checkpoint
from diffmesh.errors import CheckpointError, MissingFileError
from diffmesh.model import build_model, model_config


def test_round_trip(tmp_path, anny_body):
    torch.manual_seed(0)
    model = build_model(model_config("tiny"), anny_body).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, epoch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]                 # no temp file left
    loaded = load_model(path, anny_body, expect={"method": "diffmesh"}).eval()
    x = torch.randn(1, 16, 17, 3)
    with torch.no_grad():
        torch.testing.assert_close(model(x).rotmats, loaded(x).rotmats, rtol=0, atol=0)
    assert read_checkpoint(path)["epoch"] == 3


def test_corrupt_and_truncated(tmp_path, anny_body):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or not a diffmesh checkpoint"):
        load_model(path, anny_body)
    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model(model_config("tiny"), anny_body))
    path.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(path, anny_body)
    with pytest.raises(MissingFileError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt", anny_body)


def test_mismatched_method_and_size(tmp_path, anny_body):
    path = tmp_path / "b1.pt"
    save_checkpoint(path, build_model(model_config("tiny", method="baseline1"), anny_body))
    with pytest.raises(CheckpointError, match="trained with method='baseline1' but method='diffmesh'"):
        load_model(path, anny_body, expect={"method": "diffmesh"})
    payload = torch.load(path, weights_only=True)
    payload["config"]["token_dim"] = 64                                       # weights no longer fit the config
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match its own config"):
        load_model(path, anny_body)


def test_pickled_code_is_refused(tmp_path, anny_body):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(), "config": {}}, path)
    with pytest.raises(CheckpointError, match="corrupt or not a diffmesh checkpoint"):
        load_model(path, anny_body)

import pytest
import torch

from diffmesh.body.smpl import SMPLBody
from diffmesh.bench.peers import PEER_NAMES, PEER_PARAMETERS, build_peer, count_parameters, sliding_windows


@pytest.fixture(scope="module", params=PEER_NAMES)
def peer(request):
    return build_peer(request.param, seed=0)


def test_parameter_counts_match_released_models(peer):
    assert count_parameters(peer) == PEER_PARAMETERS[peer.name]
    assert not peer.training


def test_forward_shapes_rotations_and_determinism(peer):
    x = torch.randn(2, 16, 2048, generator=torch.Generator().manual_seed(1))
    twin = build_peer(peer.name, seed=0)
    for a, b in zip(peer.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)  # same seed, same weights, bit for bit
    with torch.inference_mode():
        out, again, other = peer(x), twin(x), build_peer(peer.name, seed=1)(x)
    assert out["rotmats"].shape == (2, 24, 3, 3) and out["betas"].shape == (2, 10) and out["cam"].shape == (2, 3)
    R = out["rotmats"]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(2, 24), atol=1e-5, rtol=0)
    for key in out:
        assert torch.isfinite(out[key]).all()
        torch.testing.assert_close(out[key], again[key], atol=1e-6, rtol=0)  # BLAS paths may differ in the last bit
    assert not torch.equal(out["betas"], other["betas"])
    with pytest.raises(ValueError):
        peer(torch.randn(2, 8, 2048))


def test_build_peer_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown peer"):
        build_peer("vibe")


def test_sliding_windows_follow_the_peers_convention():
    T, L = 40, 16
    feats = torch.arange(T, dtype=torch.float32)[:, None].repeat(1, 3)  # feature of frame t = t
    # The peers' FeatureDataset: windows [i, i+15] for i = 0..T-16 (centred on frames 8..T-8), preceded by
    # frames 0..7 and followed by frames T-7..T-1, each repeated 16 times.
    expected = [[t] * L for t in range(8)] + [list(range(i, i + L)) for i in range(T - L + 1)] + \
               [[t] * L for t in range(T - 7, T)]
    win = sliding_windows(feats, L)
    assert win.shape == (T, L, 3)
    assert win[..., 0].tolist() == expected
    assert win[:, L // 2, 0].tolist() == list(range(T))  # window t is centred on frame t
    assert sliding_windows(torch.randn(64, 2048)).shape == (64, 16, 2048)


def test_sliding_windows_edge_padding():
    T, L = 20, 16
    feats = torch.arange(T, dtype=torch.float32)[:, None]
    expected = [[min(max(t + k - 8, 0), T - 1) for k in range(L)] for t in range(T)]
    win = sliding_windows(feats, L, pad="edge")
    assert win[..., 0].tolist() == expected
    assert win[0, :9, 0].tolist() == [0] * 9 and win[-1, -8:, 0].tolist() == [T - 1] * 8
    with pytest.raises(ValueError):
        sliding_windows(feats, L, pad="zeros")


def test_random_smpl_body():
    body = SMPLBody.from_random(seed=0)
    assert body.version == "random (timing only)"
    assert body.posedirs.shape == (207, 6890 * 3) and body.J_regressor.shape == (24, 6890)
    assert body.faces.shape == (13776, 3) and 0 <= body.faces.min() and body.faces.max() < 6890
    torch.testing.assert_close(body.weights.sum(1), torch.ones(6890))
    assert body.parents.tolist()[:4] == [-1, 0, 0, 0]
    torch.testing.assert_close(SMPLBody.from_random(seed=0).v_template, body.v_template)
    B = 3
    rot = build_peer("mpsnet")(torch.randn(B, 16, 2048))["rotmats"].detach()
    out = body(rot, torch.randn(B, 10))
    assert out.vertices.shape == (B, 6890, 3) and out.joints.shape == (B, 17, 3)
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()
    assert body.skeleton().rest_heads.shape == (24, 3)

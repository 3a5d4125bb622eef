"""Loading MotionBERT / released DiffMesh weights (diffmesh.released) on synthetic checkpoints of the real formats,
and the paper-preset options it needs (pre_logits, LayerNorm eps) plus the Table 7 denoiser designs.

The released key list is tests/data/released_diffmesh_keys.json (names, shapes and dtypes of zczcwh/DiffMesh's
`checkpoint['model']`); every tensor here is random. The reference forwards below are written from the documented
formulas of DSTformer and the released condition generator, independently of diffmesh.model."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from diffmesh.errors import CheckpointError, MissingFileError
from diffmesh.model import METHODS, DiffMeshModel, build_model, model_config
from diffmesh.released import load_motionbert_backbone, load_released_diffmesh
from diffmesh.rotations import rot6d_to_rotmat

MANIFEST = Path(__file__).parent / "data" / "released_diffmesh_keys.json"
GEN = "head.diffmesh_process.entire_process.condition_generator."
EPS = 1e-6


def _released_keys() -> dict[str, tuple[tuple[int, ...], str]]:
    man = json.loads(MANIFEST.read_text())
    out = {}
    for entry in man["keys"]:
        name, shape = entry[0], tuple(entry[1])
        n = entry[2] if len(entry) > 2 else 0
        dtype = entry[3] if len(entry) > 3 else "float32"
        for i in (range(n) if n else [None]):
            out[man["prefix"] + (name.replace("{i}", str(i)) if n else name)] = (shape, dtype)
    assert len(out) == man["count"]
    return out


def _random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, dtype) in _released_keys().items():
        if dtype != "float32":
            sd[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
        elif "norm" in key and key.endswith(".weight"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif "mesh_template" in key or "init_pose" in key:
            sd[key] = 0.3 * torch.randn(shape, generator=g)
        else:
            scale = 0.1 if len(shape) == 1 or "embed" in key or "ts_attn" in key else 0.02
            sd[key] = scale * torch.randn(shape, generator=g)
    return sd


def _paper_model(seed: int = 1, **overrides) -> DiffMeshModel:
    torch.manual_seed(seed)
    cfg = model_config("paper", input="keypoints", body="smpl", num_bones=24, num_shape=10, **overrides)
    return DiffMeshModel(cfg, torch.eye(3).repeat(24, 1, 1), torch.zeros(10)).eval()


@pytest.fixture(scope="module")
def released_sd():
    return _random_state_dict()


@pytest.fixture(scope="module")
def loaded(released_sd):
    model = _paper_model()
    report = load_released_diffmesh(model, {"epoch": 60, "model": released_sd, "best_jpe": 0.0})
    return model, report


def _sd(released_sd, prefix: str) -> dict[str, torch.Tensor]:
    """Their tensors under `prefix`, prefix stripped (module. included)."""
    p = "module." + prefix
    return {k[len(p):]: v for k, v in released_sd.items() if k.startswith(p)}


# ---------------------------------------------------------------- independent reference computations

def _attn_fused(x, w, b, pw, pb, heads):
    """Softmax attention from a fused qkv (3C, C), laid out (3, heads, C/heads) as in timm/DSTformer."""
    N, L, C = x.shape
    c = C // heads
    qkv = (x @ w.T + b).reshape(N, L, 3, heads, c)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))                  # (N, heads, L, c)
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(c), -1)
    return (a @ v).transpose(1, 2).reshape(N, L, C) @ pw.T + pb


def _vit_half(x, sd, pre, s, heads):
    """x + attn{s}(norm1{s} x), then + mlp{s}(norm2{s} .); x: (N, L, C) tokens attending to each other."""
    C = x.shape[-1]
    h = F.layer_norm(x, (C,), sd[f"{pre}.norm1{s}.weight"], sd[f"{pre}.norm1{s}.bias"], EPS)
    x = x + _attn_fused(h, sd[f"{pre}.attn{s}.qkv.weight"], sd[f"{pre}.attn{s}.qkv.bias"],
                        sd[f"{pre}.attn{s}.proj.weight"], sd[f"{pre}.attn{s}.proj.bias"], heads)
    h = F.layer_norm(x, (C,), sd[f"{pre}.norm2{s}.weight"], sd[f"{pre}.norm2{s}.bias"], EPS)
    h = F.gelu(h @ sd[f"{pre}.mlp{s}.fc1.weight"].T + sd[f"{pre}.mlp{s}.fc1.bias"])
    return x + h @ sd[f"{pre}.mlp{s}.fc2.weight"].T + sd[f"{pre}.mlp{s}.fc2.bias"]


def _spatial(x, sd, pre, heads):                      # x (B, F, J, C): attention over the J joints of a frame
    B, Fr, J, C = x.shape
    return _vit_half(x.reshape(B * Fr, J, C), sd, pre, "_s", heads).reshape(B, Fr, J, C)


def _temporal(x, sd, pre, heads):                     # attention over the F frames of a joint
    B, Fr, J, C = x.shape
    y = _vit_half(x.permute(0, 2, 1, 3).reshape(B * J, Fr, C), sd, pre, "_t", heads)
    return y.reshape(B, J, Fr, C).permute(0, 2, 1, 3)


def _dstformer_rep(x, sd, depth=5, heads=8):
    """DSTformer.get_representation: embed, depth x (stage_st | stage_ts, fused by softmax(ts_attn)), norm,
    pre_logits (Linear + Tanh). x (B, F, J, 3) -> (B, F, J, C)."""
    Fr = x.shape[1]
    h = x @ sd["joints_embed.weight"].T + sd["joints_embed.bias"] + sd["pos_embed"][:, None] + sd["temp_embed"][:, :Fr]
    for i in range(depth):
        st = _temporal(_spatial(h, sd, f"blocks_st.{i}", heads), sd, f"blocks_st.{i}", heads)
        ts = _spatial(_temporal(h, sd, f"blocks_ts.{i}", heads), sd, f"blocks_ts.{i}", heads)
        alpha = torch.softmax(torch.cat([st, ts], -1) @ sd[f"ts_attn.{i}.weight"].T + sd[f"ts_attn.{i}.bias"], -1)
        h = st * alpha[..., :1] + ts * alpha[..., 1:]
    h = F.layer_norm(h, (h.shape[-1],), sd["norm.weight"], sd["norm.bias"], EPS)
    return torch.tanh(h @ sd["pre_logits.fc.weight"].T + sd["pre_logits.fc.bias"])


def _released_generator(feat_g, sd, depth=2, heads=8):
    """The released condition generator on its own order of conditions [14 zero pads, 16 frames]: (B, 30, 2176)."""
    h = F.gelu(feat_g @ sd["fc1.0.weight"].T + sd["fc1.0.bias"]) + sd["pos_embed"]
    for j in range(depth):
        pre, C = f"blocks.{j}", h.shape[-1]
        a = F.layer_norm(h, (C,), sd[f"{pre}.norm1.weight"], sd[f"{pre}.norm1.bias"], EPS)
        h = h + _attn_fused(a, sd[f"{pre}.attn.qkv.weight"], sd[f"{pre}.attn.qkv.bias"],
                            sd[f"{pre}.attn.proj.weight"], sd[f"{pre}.attn.proj.bias"], heads)
        a = F.layer_norm(h, (C,), sd[f"{pre}.norm2.weight"], sd[f"{pre}.norm2.bias"], EPS)
        h = h + F.gelu(a @ sd[f"{pre}.mlp.fc1.weight"].T + sd[f"{pre}.mlp.fc1.bias"]) @ sd[f"{pre}.mlp.fc2.weight"].T \
            + sd[f"{pre}.mlp.fc2.bias"]
    h = F.layer_norm(h, (h.shape[-1],), sd["norm.weight"], sd["norm.bias"], EPS)
    return F.gelu(h @ sd["fc2.0.weight"].T + sd["fc2.0.bias"]) + feat_g


# ---------------------------------------------------------------- the released checkpoint

def test_manifest_is_the_released_layout():
    keys = _released_keys()
    assert len(keys) == 389 and all(k.startswith("module.") for k in keys)
    assert sum(k.startswith("module.backbone.") for k in keys) == 260
    assert keys["module.head.diffmesh_process.entire_process.condition_generator.pos_embed"][0] == (1, 30, 256)
    assert keys["module.head.smpl.faces_tensor"][1] == "int64"


def test_every_released_key_is_mapped_or_dropped(loaded, released_sd):
    _, report = loaded
    mapped = {t for t, _ in report.mapped}
    dropped = {k for keys in report.dropped.values() for k in keys}
    assert not mapped & dropped
    assert {"module." + k for k in mapped | dropped} == set(released_sd)
    by_reason = {reason.split(" ")[0]: {k.split(".")[1] if k.startswith("head.") else k.split(".")[0] for k in keys}
                 for reason, keys in report.dropped.items()}
    assert by_reason == {"DSTformer's": {"backbone"}, "released": {"diffmesh_process"}, "SMPL": {"smpl"}}
    denoiser = next(keys for reason, keys in report.dropped.items() if reason.startswith("released denoiser"))
    assert len(denoiser) == 70 and all(".entire_process.diffusion_model." in k for k in denoiser)
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in report.left_at_init} == {
        "denoiser.blocks", "denoiser.time", "denoiser.out_x", "denoiser.out_c", "head.camera"}
    assert report.summary().splitlines()[0].endswith("304 keys mapped onto 344 of our tensors")


def test_backbone_keys_land_where_they_should(loaded, released_sd):
    model, _ = loaded
    ours, theirs = model.state_dict(), _sd(released_sd, "backbone.")
    C = 512
    halves = {"st_spatial": ("blocks_st", "_s"), "st_temporal": ("blocks_st", "_t"),
              "ts_temporal": ("blocks_ts", "_t"), "ts_spatial": ("blocks_ts", "_s")}
    for i in range(5):
        for our_stack, (stack, s) in halves.items():
            o, t = f"adapter.{our_stack}.{i}.", f"{stack}.{i}."
            for p in ("weight", "bias"):
                assert torch.equal(ours[o + f"norm1.{p}"], theirs[t + f"norm1{s}.{p}"])
                assert torch.equal(ours[o + f"norm2.{p}"], theirs[t + f"norm2{s}.{p}"])
                assert torch.equal(ours[o + f"attn.q.{p}"], theirs[t + f"attn{s}.qkv.{p}"][:C])
                assert torch.equal(ours[o + f"attn.kv.{p}"], theirs[t + f"attn{s}.qkv.{p}"][C:])
                assert torch.equal(ours[o + f"attn.proj.{p}"], theirs[t + f"attn{s}.proj.{p}"])
                assert torch.equal(ours[o + f"mlp.0.{p}"], theirs[t + f"mlp{s}.fc1.{p}"])
                assert torch.equal(ours[o + f"mlp.3.{p}"], theirs[t + f"mlp{s}.fc2.{p}"])
        for p in ("weight", "bias"):
            assert torch.equal(ours[f"adapter.fuse.{i}.{p}"], theirs[f"ts_attn.{i}.{p}"])
    assert torch.equal(ours["adapter.spatial_pos"][0, 0], theirs["pos_embed"][0])
    assert torch.equal(ours["adapter.temporal_pos"], theirs["temp_embed"])
    for our_name, their_name in (("joint_embed", "joints_embed"), ("norm", "norm"), ("pre_logits.0", "pre_logits.fc")):
        for p in ("weight", "bias"):
            assert torch.equal(ours[f"adapter.{our_name}.{p}"], theirs[f"{their_name}.{p}"])
    head = _sd(released_sd, "head.")
    assert torch.equal(ours["adapter.to_tokens.0.weight"], head["fc_ds.0.weight"])


def test_qkv_split_equals_fused_attention(loaded, released_sd):
    """Our Attention (q / kv) with the split weights computes the fused-qkv softmax attention, head by head."""
    model, _ = loaded
    theirs = _sd(released_sd, "backbone.blocks_ts.3.attn_t.")
    x = torch.randn(3, 16, 512)
    ref = _attn_fused(x, theirs["qkv.weight"], theirs["qkv.bias"], theirs["proj.weight"], theirs["proj.bias"], heads=8)
    with torch.no_grad():
        got = model.adapter.ts_temporal[3].attn(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    gen = _sd(released_sd, GEN + "blocks.1.attn.")
    x = torch.randn(2, 30, 256)
    with torch.no_grad():
        got = model.generator.blocks[1].attn(x)
    ref = _attn_fused(x, gen["qkv.weight"], gen["qkv.bias"], gen["proj.weight"], gen["proj.bias"], heads=8)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_adapter_equals_a_dstformer_forward(loaded, released_sd):
    model, _ = loaded
    x = torch.randn(2, 16, 17, 3)
    head = _sd(released_sd, "head.")
    ref = F.relu(_dstformer_rep(x, _sd(released_sd, "backbone.")) @ head["fc_ds.0.weight"].T + head["fc_ds.0.bias"])
    with torch.no_grad():
        got = model.adapter(x)
    assert got.shape == (2, 16, 17, 128)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_condition_generator_with_reordered_positions(loaded, released_sd):
    model, _ = loaded
    gen = _sd(released_sd, GEN)
    pos = gen["pos_embed"]
    assert torch.equal(model.generator.pos[:, :16], pos[:, 14:])            # ours: frames first
    assert torch.equal(model.generator.pos[:, 16:], pos[:, :14])            # then the 14 pads
    frames = torch.randn(2, 16, 2176) * 0.5
    ref = _released_generator(torch.cat([torch.zeros(2, 14, 2176), frames], 1), gen)   # [pads, frames]
    with torch.no_grad():
        got = model.generator(frames)                                                  # [frames, pads]
    torch.testing.assert_close(got[:, :16], ref[:, 14:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[:, 16:], ref[:, :14], atol=1e-5, rtol=1e-4)


def test_x_end_is_the_released_template_feature(loaded, released_sd):
    model, _ = loaded
    h = _sd(released_sd, "head.")
    verts = h["mesh_template"][0].double()                                  # (6890, 3)
    rows = torch.stack([verts[1378 * (r % 5):1378 * (r % 5 + 1), r // 5] for r in range(15)])   # row r: axis r // 5
    lin = F.gelu(rows @ h["fc_mesh_temp.0.weight"].double().T + h["fc_mesh_temp.0.bias"].double())   # (15, 128)
    w = h["fc_mesh_temp.2.weight"].double()                                 # (17, 15, 1)
    ref = F.gelu(torch.einsum("oc,cd->od", w[:, :, 0], lin) + h["fc_mesh_temp.2.bias"].double()[:, None])
    assert model.x_end.shape == (17, 128)
    torch.testing.assert_close(model.x_end.double(), ref, atol=1e-6, rtol=1e-5)


def test_output_residual_and_mesh_head(loaded, released_sd):
    model, _ = loaded
    h = _sd(released_sd, "head.")
    y = torch.randn(2, 16, 17, 128)
    ref = F.gelu(y @ h["diffmesh_process.fc1.0.weight"].T + h["diffmesh_process.fc1.0.bias"])   # per token
    with torch.no_grad():
        torch.testing.assert_close(model.out(y.reshape(2, 16, 2176)), ref.reshape(2, 16, 2176), atol=1e-5, rtol=1e-4)
    for ours, theirs in (("pose", "head_pose"), ("shape", "head_shape")):
        assert torch.equal(getattr(model.head, ours).weight, h[f"{theirs}.weight"])
    assert torch.equal(model.head.mean_pose6d, h["init_pose"][0])
    assert torch.equal(model.head.mean_shape, h["init_shape"][0])


def test_our_6d_layout_is_the_released_one():
    """Released rot6d_to_rotmat: view(-1, 3, 2), Gram-Schmidt on the two columns, b3 = b1 x b2, R = [b1 b2 b3]."""
    x = torch.randn(50, 6)
    a = x.view(-1, 3, 2)
    b1 = F.normalize(a[:, :, 0], dim=1)
    b2 = F.normalize(a[:, :, 1] - (b1 * a[:, :, 1]).sum(1, keepdim=True) * b1, dim=1)
    ref = torch.stack([b1, b2, torch.cross(b1, b2, dim=1)], -1)
    torch.testing.assert_close(rot6d_to_rotmat(x), ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- MotionBERT's pretrained file

def test_motionbert_backbone_file(tmp_path, loaded, released_sd):
    mb = {"module." + k: v for k, v in _sd(released_sd, "backbone.").items()}
    path = tmp_path / "latest_epoch.bin"
    torch.save({"epoch": 1, "lr": [1e-4], "model_pos": mb, "min_loss": 1.0}, path)
    model = _paper_model(seed=5)
    before = model.generator.pos.detach().clone()
    report = load_motionbert_backbone(model, path)
    assert list(report.dropped.values()) == [["head.weight", "head.bias"]]
    assert len({t for t, _ in report.mapped}) == 258
    ref, _ = loaded
    for (n, p), (n2, p2) in zip(model.adapter.named_parameters(), ref.adapter.named_parameters()):
        assert n == n2 and (n.startswith("to_tokens") or torch.equal(p, p2)), n
    assert torch.equal(model.generator.pos, before)                       # only the adapter is touched
    assert any(n.startswith("adapter.to_tokens") for n in report.left_at_init)


# ---------------------------------------------------------------- errors

def test_wrong_shape_names_key_and_shapes(released_sd):
    sd = dict(released_sd)
    sd["module.backbone.blocks_ts.2.attn_s.qkv.weight"] = torch.zeros(1536, 256)
    model = _paper_model()
    before = model.adapter.joint_embed.weight.detach().clone()
    with pytest.raises(CheckpointError, match=r"'backbone\.blocks_ts\.2\.attn_s\.qkv\.weight' has shape \(1536, 256\), "
                                              r"the model expects \(1536, 512\)"):
        load_released_diffmesh(model, {"model": sd})
    assert torch.equal(model.adapter.joint_embed.weight, before)            # nothing written


def test_missing_key_is_named(released_sd):
    sd = {k: v for k, v in released_sd.items() if not k.endswith("condition_generator.norm.bias")}
    with pytest.raises(CheckpointError, match=r"key 'head\..*condition_generator\.norm\.bias' is missing "
                                              r"\(expected shape \(256,\)\)"):
        load_released_diffmesh(_paper_model(), {"model": sd})


def test_a_model_of_another_size_is_refused(released_sd):
    tiny = DiffMeshModel(model_config("tiny", body="smpl", num_bones=24, num_shape=10, adapter_rep_dim=64),
                         torch.eye(3).repeat(24, 1, 1), torch.zeros(10))
    with pytest.raises(CheckpointError, match=r"'backbone\.joints_embed\.weight' has shape \(512, 3\), the model "
                                              r"expects \(64, 3\)"):
        load_released_diffmesh(tiny, {"model": released_sd})
    with pytest.raises(CheckpointError, match="5 DSTformer 'backbone.blocks_st' layers, the model has adapter_depth=4"):
        load_released_diffmesh(_paper_model(adapter_depth=4), {"model": released_sd})
    with pytest.raises(CheckpointError, match="num_frames=16, num_steps=40"):
        load_released_diffmesh(_paper_model(num_steps=40), {"model": released_sd})
    with pytest.raises(CheckpointError, match="no pre_logits"):
        load_released_diffmesh(_paper_model(adapter_rep_dim=0), {"model": released_sd})


@pytest.mark.parametrize("content", ["garbage", "list", "other_dict"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.bin"
    if content == "garbage":
        path.write_bytes(b"not a torch file at all")
    elif content == "list":
        torch.save([torch.zeros(3)], path)
    else:
        torch.save({"epoch": 3, "state": {"w": 1}}, path)
    with pytest.raises(CheckpointError, match="not a (released DiffMesh|MotionBERT) checkpoint"):
        load_released_diffmesh(_paper_model(), path)
    with pytest.raises(CheckpointError, match="MotionBERT checkpoint"):
        load_motionbert_backbone(_paper_model(), path)
    with pytest.raises(MissingFileError):
        load_motionbert_backbone(_paper_model(), tmp_path / "absent.bin")


def test_a_diffmesh_file_is_not_a_motionbert_file(released_sd):
    with pytest.raises(CheckpointError, match=r"no 'model_pos' state dict inside .* goes to load_released_diffmesh"):
        load_motionbert_backbone(_paper_model(), {"epoch": 1, "model": released_sd})
    with pytest.raises(CheckpointError, match=r"key 'joints_embed\.weight' is missing"):
        load_motionbert_backbone(_paper_model(), released_sd)         # a bare state dict of the wrong kind


# ---------------------------------------------------------------- paper-preset options and Table 7 designs

def test_paper_preset_has_pre_logits_and_motionbert_eps():
    model = _paper_model()
    assert model.cfg.adapter_rep_dim == 512 and isinstance(model.adapter.pre_logits[1], torch.nn.Tanh)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)
    tiny = DiffMeshModel(model_config("tiny"), torch.eye(3).repeat(24, 1, 1), torch.zeros(6))
    assert tiny.adapter.pre_logits is None
    assert all(m.eps == 1e-5 for m in tiny.modules() if isinstance(m, torch.nn.LayerNorm))


def test_unknown_denoiser_design():
    with pytest.raises(ValueError, match="denoiser_design must be one of"):
        model_config("tiny", denoiser_design="two_cross")


def test_design_parameter_names(anny_body):
    names = {d: {n for n, _ in build_model(model_config("tiny", denoiser_design=d), anny_body)
                 .denoiser.blocks[0].named_parameters()} for d in ("cross", "two_self", "one_self")}
    assert any(n.startswith("cross.") for n in names["cross"]) and any(n.startswith("norm_kv.") for n in names["cross"])
    assert not any(n.startswith(("cross.", "norm_q.", "norm_kv.")) for n in names["two_self"])
    assert any(n.startswith("fuse.") for n in names["two_self"])
    assert {n.split(".")[0] for n in names["one_self"]} == {"norm1", "attn", "norm2", "mlp"}


@pytest.mark.parametrize("design", ["two_self", "one_self"])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "perframe"])
def test_design_shapes_and_gradients(anny_body, design, method):
    from diffmesh.train.loop import seed_everything, train_step
    from test_model import _fake_targets

    g = seed_everything(0)
    cfg = model_config("tiny", method=method, denoiser_design=design)
    model = build_model(cfg, anny_body)
    B, f, K = 2, cfg.num_frames, anny_body.num_bones
    with torch.no_grad():
        out = model.eval()(torch.randn(B, f, 17, 3), generator=torch.Generator().manual_seed(0))
    assert out.rotmats.shape == (B, f, K, 3, 3) and out.shape.shape == (B, anny_body.num_shape)
    if method == "diffmesh":
        assert out.predicted_conditions.shape == (B, cfg.num_steps - 1, cfg.num_tokens * cfg.token_dim)
    assert torch.isfinite(out.rotmats).all()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    train_step(model, anny_body, opt, torch.randn(B, f, 17, 3), _fake_targets(anny_body, B, f), generator=g,
               max_grad_norm=None)
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_the_refinement_checkpoint_is_refused_with_the_reason(released_sd):
    sd = {k: v for k, v in released_sd.items() if not k.startswith(("module.head.init_", "module.head.head_"))}
    sd["module.head.fc2.0.weight"] = torch.zeros(512, 144, 5)
    with pytest.raises(CheckpointError, match="refinement .HybrIK. checkpoint; its head cannot map"):
        load_released_diffmesh(_paper_model(), {"model": sd})

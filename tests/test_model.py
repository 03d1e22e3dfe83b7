"""Model family: variants × fusion ops, backbones, clinical encoder, spatialiser, fusion ops, input checks.

Tiny inputs: 64 px, batch 2, one image with boxes and one without in every batch.
"""

from __future__ import annotations

import math

import pytest
import torch

from mdfnet.model import (
    BACKBONES,
    FUSIONS,
    ClinicalEncoder,
    ModelConfig,
    Spatialiser,
    build_backbone,
    build_fusion,
    build_model,
    loss_names,
)
from mdfnet.model.clinical import spatialiser_channels

S = 64
FUSION_OPS = sorted(FUSIONS)
CASES = [("baseline", "sum"), ("msf1d", "sum")] + [(v, f) for v in ("msf3d", "mdf") for f in FUSION_OPS]


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def make_batch(seed: int = 0, size: int = S, num_numeric: int = 9, num_categorical: int = 1):
    """Two uint8 ``[1, S, S]`` grayscale images as the dataset hands them: the first with two boxes, the second
    with none."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=g) for _ in range(2)]
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]])
    masks = torch.zeros(2, size, size, dtype=torch.uint8)
    masks[0, 6:50, 4:40] = 1
    masks[1, 10:30, 20:60] = 1
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1, 4]), "masks": masks},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, size, size, dtype=torch.uint8)},
    ]
    clinical = {"numeric": torch.randn(2, num_numeric, generator=g),
                "categorical": torch.tensor([[1], [2]])[:, :num_categorical]}
    return images, clinical, targets


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize(("variant", "fusion"), CASES)
def test_variant_trains_and_predicts(variant, fusion):
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, fusion=fusion), num_numeric=9, num_categorical=1, image_size=S)
    images, clinical, targets = make_batch()
    model.train()
    losses = model(images, clinical, targets)
    assert set(losses) == set(loss_names(use_mask=True))
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()

    encoder_params = list(model.clinical_encoder.parameters())
    spatialiser = getattr(model.features, "spatialiser", None)
    if variant == "baseline":
        assert encoder_params == [] and spatialiser is None
        assert all(p.grad is not None for p in model.features.image_backbone.parameters())
    else:
        assert _grad_norm(model.clinical_encoder) > 0
        assert all(p.grad is not None for p in encoder_params)
    if variant in ("msf3d", "mdf"):
        assert _grad_norm(spatialiser) > 0
        assert _grad_norm(model.features.clinical_backbone) > 0
    else:
        assert spatialiser is None and not hasattr(model.features, "clinical_backbone")
    # 1D fusion: fc6 takes the 64-d clinical vector (55 gender embedding + 9 numeric) besides 64·7·7 RoI features
    expected_fc6 = 64 * 7 * 7 + (64 if variant in ("msf1d", "mdf") else 0)
    assert model.roi_heads.box_head.fc6.in_features == expected_fc6

    model.eval()
    with torch.no_grad():
        out = model(images, clinical)
    assert len(out) == 2
    for o in out:
        n = o["boxes"].shape[0]
        assert o["boxes"].shape == (n, 4) and o["labels"].shape == (n,) and o["scores"].shape == (n,)
        assert n <= 10 and (o["scores"] > 0.05).all()
        assert ((o["labels"] >= 1) & (o["labels"] <= 5)).all()
        assert o["masks"].shape == (n, 1, S, S)
        assert (o["boxes"] >= 0).all() and (o["boxes"] <= S).all()


def test_without_mask_head_has_four_losses_and_no_masks():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="mdf", use_mask=False), 9, 1, S)
    images, clinical, targets = make_batch()
    losses = model.train()(images, clinical, targets)
    assert set(losses) == set(loss_names(use_mask=False)) and len(losses) == 4
    out = model.eval()(images, clinical)
    assert all("masks" not in o for o in out)


def test_inference_never_takes_targets_and_ignores_them_for_outputs():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="mdf"), 9, 1, S).eval()
    images, clinical, targets = make_batch()
    with pytest.raises(ValueError, match="eval mode"):
        model(images, clinical, targets)
    with torch.no_grad():
        a, b = model(images, clinical), model(images, clinical)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b, strict=True))


def test_clinical_data_changes_fused_outputs_but_not_baseline():
    torch.manual_seed(0)
    images, clinical, _ = make_batch()
    other = {"numeric": clinical["numeric"] + 3.0, "categorical": 3 - clinical["categorical"]}
    for variant, should_change in (("baseline", False), ("mdf", True)):
        model = build_model(ModelConfig(variant=variant, box_score_thresh=0.0), 9, 1, S).eval()
        with torch.no_grad():
            a = model(images, clinical)[0]["scores"]
            b = model(images, other)[0]["scores"]
        assert (not torch.equal(a, b)) == should_change, variant


def test_baseline_runs_without_clinical_data():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="baseline", use_mask=False), 0, 0, S)
    images, _, targets = make_batch()
    losses = model.train()(images, None, targets)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("variant", ["msf3d", "msf1d", "mdf"])
def test_fusion_variants_refuse_empty_feature_set(variant):
    with pytest.raises(ValueError, match="no clinical feature"):
        build_model(ModelConfig(variant=variant), 0, 0, S)


@pytest.mark.parametrize(("num_numeric", "num_categorical", "dim"), [(9, 1, 64), (0, 1, 55), (2, 1, 57), (2, 0, 2)])
def test_feature_subsets_build_and_train(num_numeric, num_categorical, dim):
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="mdf", use_mask=False), num_numeric, num_categorical, S)
    assert model.clinical_encoder.out_dim == dim
    assert model.roi_heads.box_head.fc6.in_features == 64 * 49 + dim
    images, clinical, targets = make_batch(num_numeric=num_numeric, num_categorical=num_categorical)
    losses = model.train()(images, clinical, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_clinical_encoder_values_and_errors():
    enc = ClinicalEncoder(num_numeric=3, num_categorical=1, embedding_dim=55)
    assert enc.out_dim == 58
    numeric = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 1.0]])
    categorical = torch.tensor([[2], [0]])
    c = enc({"numeric": numeric, "categorical": categorical}, batch_size=2)
    assert c.shape == (2, 58)
    assert torch.equal(c[:, 55:], numeric)
    assert torch.equal(c[0, :55], enc.embeddings[0].weight[2]) and torch.equal(c[1, :55], enc.embeddings[0].weight[0])
    with pytest.raises(ValueError, match=r"numeric.*\(2, 3\)"):
        enc({"numeric": torch.zeros(2, 4), "categorical": categorical}, batch_size=2)
    with pytest.raises(ValueError, match="pass clinical"):
        enc(None, batch_size=2)


@pytest.mark.parametrize("size", [64, 128, 512])
def test_spatialiser_shapes(size):
    sp = Spatialiser(in_dim=64, image_size=size)
    n_blocks = int(math.log2(size))
    assert len(sp.blocks) == n_blocks  # 9 at 512 px
    assert spatialiser_channels(size)[-1] == 3
    assert spatialiser_channels(512) == [64, 32, 16, 8, 8, 8, 8, 8, 3]
    block = sp.blocks[0]
    assert [type(m).__name__ for m in block] == ["ConvTranspose2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU"]
    assert block[0].kernel_size == (2, 2) and block[0].stride == (2, 2) and block[3].kernel_size == (3, 3)
    with torch.no_grad():
        y = sp.eval()(torch.randn(2, 64))
    assert y.shape == (2, 3, size, size)
    assert (y >= 0).all()  # ends with ReLU


def test_spatialiser_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        Spatialiser(64, 96)
    with pytest.raises(ValueError, match="power of two"):
        build_model(ModelConfig(variant="baseline"), 9, 1, 96)


def test_fusion_ops_shapes_and_values():
    torch.manual_seed(0)
    a, b = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    for name in FUSION_OPS:
        assert build_fusion(name, 8)(a, b).shape == (2, 8, 4, 4), name
    assert torch.equal(build_fusion("sum", 8)(a, b), a + b)
    assert torch.equal(build_fusion("hadamard", 8)(a, b), a * b)
    lin = build_fusion("concat_linear", 8)
    w, bias = lin.conv.weight[:, :, 0, 0], lin.conv.bias  # [8, 16]
    expected = torch.einsum("oc,bchw->bohw", w, torch.cat([a, b], 1)) + bias[None, :, None, None]
    assert torch.allclose(lin(a, b), expected, atol=1e-5)
    assert build_fusion("concat_conv", 8).conv.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="equal shapes"):
        build_fusion("sum", 8)(a, b[:, :4])
    with pytest.raises(ValueError, match="unknown fusion"):
        build_fusion("max", 8)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbones_build_and_run_at_64px(name):
    torch.manual_seed(0)
    bb = build_backbone(name, out_channels=64).eval()
    with torch.no_grad():
        y = bb(torch.rand(2, 3, S, S))
    assert bb.out_channels == 64
    assert y.shape == (2, 64, 2, 2)  # stride 32
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("stride", [8, 16])
def test_backbones_cut_at_smaller_strides(name, stride):
    torch.manual_seed(0)
    bb = build_backbone(name, out_channels=32, stride=stride).eval()
    with torch.no_grad():
        y = bb(torch.rand(1, 3, S, S))
    assert y.shape == (1, 32, S // stride, S // stride)
    assert bb.proj.in_channels == BACKBONES[name].cuts[stride][1]  # the documented channel count of the cut
    assert torch.isfinite(y).all()


def test_backbone_stride_reaches_both_backbones_and_rpn_heads():
    from mdfnet.config import ConfigError

    torch.manual_seed(0)
    cfg = ModelConfig(variant="mdf", use_mask=False, backbone_stride=8, anchor_sizes=(8, 16, 32),
                      box_batch_size_per_image=16, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)
    model = build_model(cfg, 9, 1, S)
    images, clinical, _ = make_batch()
    with torch.no_grad():
        fmap = model.features(model.transform(images)[0].tensors, model.clinical_encoder(clinical, 2))
        assert fmap.shape == (2, 64, 8, 8)
        assert model.features.clinical_backbone(torch.rand(1, 3, S, S)).shape == (1, 64, 8, 8)
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    assert (model.rpn._pre_nms_top_n["testing"], model.rpn._post_nms_top_n["testing"]) == (50, 20)
    model.eval()
    with torch.no_grad():
        out = model(images, clinical)
    assert all(len(o["boxes"]) <= 10 for o in out)
    with pytest.raises(ConfigError, match="backbone_stride: expected one of \\[8, 16, 32\\], got 4"):
        ModelConfig(backbone_stride=4).validate()
    with pytest.raises(ConfigError, match="box_batch_size_per_image"):
        ModelConfig(box_batch_size_per_image=0).validate()
    with pytest.raises(ValueError, match="stride 12"):
        build_backbone("resnet18", 8, stride=12)


def test_backbone_feature_map_is_16x16_at_512px():
    bb = build_backbone("mobilenet_v3_small", 64).eval()
    with torch.no_grad():
        assert bb(torch.rand(1, 3, 512, 512)).shape == (1, 64, 16, 16)


def test_backbone_loads_local_weights(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.mobilenet_v3_small(weights=None)
    path = tmp_path / "mnv3.pth"
    torch.save(ref.state_dict(), path)
    torch.manual_seed(2)
    bb = build_backbone("mobilenet_v3_small", 64, weights_path=path)
    for k, v in ref.features.state_dict().items():
        assert torch.equal(bb.trunk.state_dict()[k], v), k
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="not a torchvision 'mobilenet_v3_small' state_dict"):
        build_backbone("mobilenet_v3_small", 64, weights_path=tmp_path / "r18.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_backbone("mobilenet_v3_small", 64, weights_path=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg16", 64)


def test_bad_inputs_raise_clear_errors():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="mdf", use_mask=False), 9, 1, S).train()
    images, clinical, targets = make_batch()
    with pytest.raises(ValueError, match=r"expected \(64, 64\)"):
        model([torch.rand(3, 32, 32), images[1]], clinical, targets)
    bad = [dict(targets[0], boxes=torch.tensor([[10.0, 10.0, 5.0, 30.0], [1.0, 1.0, 9.0, 9.0]])), targets[1]]
    with pytest.raises(ValueError, match="non-positive width"):
        model(images, clinical, bad)
    with pytest.raises(ValueError, match="targets are required"):
        model(images, clinical, None)
    with pytest.raises(ValueError, match=r"categorical.*expected \(2, 1\)"):
        model(images, {"numeric": clinical["numeric"], "categorical": torch.zeros(2, 2, dtype=torch.long)}, targets)


def as_old_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``[1, S, S]`` → float32 ``[3, S, S]`` in [0, 1], as the dataset gave images before (grey on 3 channels)."""
    return image.to(torch.float32).div_(255.0).expand(3, -1, -1).contiguous()


def test_transform_converts_uint8_gray_as_the_old_float_path():
    """uint8 [1,S,S] (and float [1,S,S]) give the batch that float [3,S,S] gave through torchvision's normalize."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    cfg = ModelConfig()
    transform = build_model(ModelConfig(variant="baseline", use_mask=False), 0, 0, S).transform
    images, _, _ = make_batch()
    reference = torch.stack([GeneralizedRCNNTransform.normalize(transform, as_old_float(im)) for im in images])
    assert reference.shape == (2, 3, S, S) and reference.dtype == torch.float32
    for inputs in (images, [as_old_float(im) for im in images], [as_old_float(im)[:1] for im in images]):
        batch, _ = transform(inputs)
        assert batch.tensors.shape == (2, 3, S, S) and batch.tensors.dtype == torch.float32
        assert float((batch.tensors - reference).abs().max()) < 1e-6
        assert batch.image_sizes == [(S, S), (S, S)]
    # the per-channel ImageNet statistics: pixel 0 → -mean/std, pixel 255 → (1 - mean)/std on each channel
    extremes = transform.normalize(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2))
    mean, std = torch.tensor(cfg.image_mean), torch.tensor(cfg.image_std)
    assert torch.allclose(extremes[:, 0, 0], -mean / std, atol=1e-6)
    assert torch.allclose(extremes[:, 0, 1], (1 - mean) / std, atol=1e-6)


def test_model_outputs_equal_for_uint8_and_float_images():
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant="mdf", use_mask=False, box_score_thresh=0.0), 9, 1, S).eval()
    images, clinical, _ = make_batch()
    with torch.no_grad():
        a = model(images, clinical)
        b = model([as_old_float(im) for im in images], clinical)
    assert [len(o["boxes"]) for o in a] == [len(o["boxes"]) for o in b] and all(len(o["boxes"]) for o in a)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["labels"], y["labels"])
        assert float((x["boxes"] - y["boxes"]).abs().max()) < 1e-5
        assert float((x["scores"] - y["scores"]).abs().max()) < 1e-5


@pytest.mark.parametrize(("image", "message"), [
    (torch.zeros(1, S, S, dtype=torch.int32), r"dtype torch.int32 and shape \(1, 64, 64\)"),
    (torch.zeros(3, S, S, dtype=torch.float64), r"dtype torch.float64 and shape \(3, 64, 64\)"),
    (torch.zeros(3, S, S, dtype=torch.uint8), r"dtype torch.uint8 and shape \(3, 64, 64\)"),
    (torch.zeros(2, S, S), r"dtype torch.float32 and shape \(2, 64, 64\)"),
    (torch.zeros(4, S, S), r"dtype torch.float32 and shape \(4, 64, 64\)"),
    (torch.zeros(1, 32, 32, dtype=torch.uint8), r"size \(32, 32\), expected \(64, 64\)"),
])
def test_transform_rejects_other_images_naming_them(image, message):
    model = build_model(ModelConfig(variant="baseline", use_mask=False), 0, 0, S).eval()
    with pytest.raises(ValueError, match=message) as err, torch.no_grad():
        model([image])
    if "dtype" in message:  # and says what it takes
        assert "expected uint8 [1, 64, 64] (grayscale 0..255) or float32 [1 or 3, 64, 64] in [0, 1]" in str(err.value)


def test_model_config_rejects_unknown_backbone():
    from mdfnet.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="unknown backbone 'vgg'"):
        from_dict(ModelConfig, {"backbone": "vgg"})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(ModelConfig, {"fusion": "max"})


def test_anchors_too_large_for_the_image_size_are_reported(caplog):
    caplog.set_level("WARNING", logger="mdfnet.model.build")
    build_model(ModelConfig(variant="baseline", use_mask=False), 0, 0, 64)  # paper anchors 32..512 at 64 px
    assert "model.anchor_sizes=[4, 8, 16, 32, 64]" in caplog.text
    caplog.clear()
    build_model(ModelConfig(variant="baseline", use_mask=False, anchor_sizes=(8, 16, 32, 64)), 0, 0, 64)
    assert caplog.text == ""


# ------------------------------------------------------------------ model.clinical_map (MSF-Net 3D, issue 23)
SMALL = dict(backbone_stride=8, use_mask=False, anchor_sizes=(8, 16, 32, 64))


def test_clinical_map_default_is_the_papers_full_map():
    """``full`` adds no module and no state (earlier checkpoints load); the other values add their op after the
    clinical backbone; variants without 3D fusion record ``none``; bad values are named."""
    from mdfnet.config import ConfigError, from_dict
    from mdfnet.training import config_from_sources

    assert ModelConfig().clinical_map == "full"
    full = build_model(ModelConfig(variant="msf3d", **SMALL), 9, 1, S)
    assert isinstance(full.features.clinical_map, torch.nn.Identity)
    assert not [k for k in full.state_dict() if "clinical_map" in k]
    norm = build_model(ModelConfig(variant="msf3d", clinical_map="mean_norm", clinical_gain_init=0.3, **SMALL), 9, 1, S)
    assert sorted(k for k in norm.state_dict() if "clinical_map" in k) == [
        f"features.clinical_map.norm.{k}" for k in ("bias", "num_batches_tracked", "running_mean", "running_var",
                                                    "weight")]
    assert torch.equal(norm.features.clinical_map.norm.weight, torch.full((64,), 0.3))
    # the rest of the initialisation does not depend on the choice
    torch.manual_seed(0)
    a = build_model(ModelConfig(variant="msf3d", **SMALL), 9, 1, S).state_dict()
    torch.manual_seed(0)
    b = build_model(ModelConfig(variant="msf3d", clinical_map="mean", **SMALL), 9, 1, S).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert config_from_sources(None, ["model.variant=baseline", "model.clinical_map=mean_norm"]).model.clinical_map == "none"
    assert config_from_sources(None, ["model.variant=mdf", "model.clinical_map=mean"]).model.clinical_map == "mean"
    with pytest.raises(ConfigError, match=r"model.clinical_map: value 'constant' is not one of \['full', 'mean', 'mean_norm'\]"):
        from_dict(ModelConfig, {"variant": "msf3d", "clinical_map": "constant"})
    with pytest.raises(ConfigError, match="value 'none' is not one of"):
        from_dict(ModelConfig, {"variant": "mdf", "clinical_map": "none"})
    for key in ("clinical_gain_init", "clinical_lr_scale"):
        with pytest.raises(ConfigError, match=f"model.{key}: expected a positive number, got 0"):
            from_dict(ModelConfig, {key: 0})


def test_spatial_mean_ops_give_every_roi_the_studys_clinical_vector():
    """``mean``: each channel's spatial mean at every position, so RoIAlign on any box returns it; ``mean_norm``:
    that mean standardised over the batch in training (a study-independent pattern is removed), times the gain;
    running statistics in eval and for a batch of one."""
    from mdfnet.model.clinical import SpatialMean, SpatialMeanNorm
    from mdfnet.model.roi_align import SingleMapRoIAlign

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 8, 8, generator=g)
    pattern = 5 * torch.randn(1, 8, 8, 8, generator=g)  # the same for every study
    mean = SpatialMean()(x)
    assert torch.allclose(mean, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    pool = SingleMapRoIAlign("0", output_size=7, sampling_ratio=2)
    boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 10.0, 64.0, 60.0]])] * 4
    pooled = pool({"0": mean}, boxes, [(64, 64)] * 4)  # [8 RoIs, C, 7, 7]
    assert torch.allclose(pooled, x.mean(dim=(2, 3)).repeat_interleave(2, dim=0)[:, :, None, None].expand_as(pooled),
                          atol=1e-6)

    op = SpatialMeanNorm(8, gain=0.2).train()
    y = op(x + pattern)
    assert torch.allclose(y, op(x), atol=1e-5)  # the common pattern is gone
    v = y[:, :, 0, 0]
    assert torch.allclose(v.mean(0), torch.zeros(8), atol=1e-6)
    assert torch.allclose(v.std(0, unbiased=False), torch.full((8,), 0.2), atol=1e-3)  # BatchNorm's eps
    assert torch.equal(y, y[:, :, :1, :1].expand_as(y))
    one = op(x[:1])  # a batch of one in training: running statistics, no error
    op.eval()
    assert torch.allclose(one, op(x[:1]))
    n = op.norm
    expected = (x[:1].mean(dim=(2, 3)) - n.running_mean) / torch.sqrt(n.running_var + n.eps) * 0.2
    assert torch.allclose(one[:, :, 3, 5], expected, atol=1e-6)


def test_clinical_lr_scale_gives_the_clinical_branch_its_own_group():
    msf3d = build_model(ModelConfig(variant="msf3d", clinical_map="mean_norm", **SMALL), 9, 1, S)
    branch = {id(p) for p in msf3d.clinical_branch_parameters()}
    f = msf3d.features
    for part, inside in ((msf3d.clinical_encoder, True), (f.spatialiser, True), (f.clinical_backbone, True),
                         (f.clinical_map, True), (f.image_backbone, False), (msf3d.rpn, False), (msf3d.roi_heads, False)):
        assert all((id(p) in branch) == inside for p in part.parameters()), part
    everything = {id(p) for p in msf3d.parameters()}
    (one,) = msf3d.parameter_groups(0.01)
    assert {id(p) for p in one["params"]} == everything and "lr" not in one
    rest, clinical = msf3d.parameter_groups(0.01, clinical_lr_scale=10)
    assert {id(p) for p in clinical["params"]} == branch and clinical["lr"] == pytest.approx(0.1)
    assert {id(p) for p in rest["params"]} == everything - branch and "lr" not in rest
    baseline = build_model(ModelConfig(variant="baseline", **SMALL), 0, 0, S)
    assert baseline.clinical_branch_parameters() == [] and len(baseline.parameter_groups(0.01, 10)) == 1

"""``SingleMapRoIAlign`` equals torchvision's ``MultiScaleRoIAlign`` on one map: values and gradients, in float32 and
float64; in bfloat16/float16 as close as torchvision's own answer; CUDA features go to torchvision's kernel."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from mdfnet.model.roi_align import SingleMapRoIAlign, compute_dtype, infer_scale, kernel_name, roi_align_cpu

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_boxes(g: torch.Generator, counts: list[int], image: tuple[int, int], dtype) -> list[torch.Tensor]:
    """Boxes partly outside the image, some thinner than one feature pixel, some images without any."""
    h, w = image
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w + 20.0, h + 20.0], dtype=dtype) - 10
        wh = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w / 2, h / 2], dtype=dtype) + 0.1
        out.append(torch.cat([xy, xy + wh], dim=1))
    return out


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize(("feature", "image", "output_size", "sampling"),
                         [((8, 8), (64, 64), 7, 2), ((16, 12), (128, 96), 14, 2), ((2, 2), (64, 64), 7, 3),
                          ((5, 7), (40, 56), 4, 1)])
def test_values_and_gradients_equal_torchvision(dtype, tol, feature, image, output_size, sampling):
    g = torch.Generator().manual_seed(sum(feature) + output_size)
    x = torch.randn(3, 6, *feature, generator=g, dtype=dtype, requires_grad=True)
    boxes = random_boxes(g, [17, 0, 5], image, dtype)
    shapes = [image] * 3
    ref = MultiScaleRoIAlign(["0"], output_size, sampling)({"0": x}, boxes, shapes)
    mine = SingleMapRoIAlign("0", output_size, sampling)({"0": x, "clinical": torch.zeros(3, 2)}, boxes, shapes)
    assert mine.shape == ref.shape == (22, 6, output_size, output_size)
    torch.testing.assert_close(mine, ref, atol=tol, rtol=tol)
    weights = torch.randn(ref.shape, generator=g, dtype=dtype)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    (grad_mine,) = torch.autograd.grad((mine * weights).sum(), x)
    torch.testing.assert_close(grad_mine, grad_ref, atol=tol, rtol=tol)


def test_empty_inputs_scale_and_errors():
    x = torch.randn(2, 4, 8, 8)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    assert SingleMapRoIAlign("0", 7, 2)({"0": x}, empty, [(64, 64)] * 2).shape == (0, 4, 7, 7)
    assert infer_scale((8, 8), [(64, 64), (60, 64)]) == 0.125
    assert infer_scale((16, 16), [(500, 512)]) == 1 / 32  # nearest power of two, as torchvision
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_cpu(x, empty, 7, 0.125, 0)
    with pytest.raises(ValueError, match="1 box tensors for 2"):
        roi_align_cpu(x, empty[:1], 7, 0.125, 2)
    with pytest.raises(ValueError, match="empty"):
        infer_scale((8, 8), [])


# ------------------------------------------------------------------------------------------ low precision
def large_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    """``[n, 4]`` boxes in a 512-px image reaching up to 511 px: coordinates above 256 are where bfloat16
    (8 significant bits) cannot hold a sample position to the pixel."""
    xy = torch.rand(n, 2, generator=g) * 300
    wh = torch.rand(n, 2, generator=g) * (500 - xy) + 4
    return torch.cat([xy, (xy + wh).clamp(max=511)], dim=1)


def relative_error(got: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor) -> float:
    """Max abs difference of ``got`` from ``ref`` as a fraction of ``scale``'s range."""
    return ((got.float() - ref).abs().max() / (scale.max() - scale.min())).item()


@pytest.mark.parametrize(("dtype", "autocast"), [(torch.bfloat16, False), (torch.float16, False),
                                                 (torch.bfloat16, True)])
def test_low_precision_features_are_as_close_as_torchvisions(dtype, autocast):
    """Features ``[2, 8, 64, 64]`` in bfloat16/float16 (stride 8, boxes up to 511 px of 512), against torchvision on
    the float32 features. Measured (max over seeds 0-4, values as a fraction of the feature range / gradients
    of the gradient's range): before the float32
    coordinates, bfloat16 0.075 / 0.11 and float16 0.010 / 0.017; now bfloat16 0.0014 / 0.0022 and float16
    0.0002 / 0.0003, exactly torchvision's autocast answer (its float32 kernel on the rounded features, cast
    back); torchvision's own float16 CPU kernel (float16 boxes): 0.012 / 0.023; its bfloat16 CPU kernel does
    not exist."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 64, 64, generator=g, requires_grad=True)
    boxes = [large_boxes(g, 32), large_boxes(g, 32)]
    ref = tv_roi_align(x, boxes, 7, 1 / 8, 2)
    weights = torch.randn(ref.shape, generator=g)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    low = x.detach().to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        mine = SingleMapRoIAlign("0", 7, 2)({"0": low}, boxes, [(512, 512)] * 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torchvision's autocast: float32 inside, cast back
        theirs = tv_roi_align(low, boxes, 7, 1 / 8, 2)
    assert mine.dtype == theirs.dtype == dtype
    (grad_mine,) = torch.autograd.grad((mine.float() * weights).sum(), low)
    (grad_theirs,) = torch.autograd.grad((theirs.float() * weights).sum(), low)
    bound = 3e-3 if dtype == torch.bfloat16 else 5e-4
    # values as a fraction of the feature range, gradients of the float32 gradient's range
    assert relative_error(mine, ref, x) <= min(bound, 1.5 * relative_error(theirs, ref, x))
    assert (relative_error(grad_mine, grad_ref, grad_ref)
            <= min(2 * bound, 1.5 * relative_error(grad_theirs, grad_ref, grad_ref)))


def test_float32_features_under_bf16_autocast_stay_float32_and_exact():
    """Autocast would run the two products in bfloat16; roi_align_cpu turns it off inside, so float32 features
    give the float32 result (torchvision's autocast wrapper does the same)."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 64, 64, generator=g)
    boxes = [large_boxes(g, 16), large_boxes(g, 16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mine = roi_align_cpu(x, boxes, 7, 1 / 8, 2)
    assert mine.dtype == torch.float32
    assert torch.equal(mine, roi_align_cpu(x, boxes, 7, 1 / 8, 2))
    torch.testing.assert_close(mine, tv_roi_align(x, boxes, 7, 1 / 8, 2), atol=1e-4, rtol=1e-4)
    assert compute_dtype(torch.bfloat16) == compute_dtype(torch.float16) == torch.float32
    assert compute_dtype(torch.float64) == torch.float64


# ------------------------------------------------------------------------------------------ kernel choice
def test_cuda_features_go_to_torchvisions_kernel(monkeypatch):
    """CUDA tensors without a GPU: FakeTensorMode makes shape-only tensors on ``cuda`` and runs torchvision's
    meta kernel; roi_align_cpu is replaced by a failure, so reaching it would fail the test."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mdfnet.model import roi_align

    def not_here(*args, **kwargs):
        raise AssertionError("roi_align_cpu called on CUDA features")

    layer = SingleMapRoIAlign("0", 7, 2)
    assert layer.last_kernel is None
    layer({"0": torch.randn(1, 4, 8, 8)}, [torch.tensor([[0.0, 0.0, 30.0, 40.0]])], [(64, 64)])
    assert layer.last_kernel == kernel_name(torch.zeros(1, device="meta")) == "matmul"
    monkeypatch.setattr(roi_align, "roi_align_cpu", not_here)
    with FakeTensorMode():
        x = torch.empty(2, 4, 8, 8, device="cuda")
        boxes = [torch.zeros(3, 4, device="cuda"), torch.zeros(5, 4, device="cuda")]
        assert kernel_name(x) == "torchvision"
        out = layer({"0": x}, boxes, [(64, 64)] * 2)
    assert layer.last_kernel == "torchvision"
    assert out.shape == (8, 4, 7, 7) and out.device.type == "cuda"


def test_torchvision_branch_gets_the_inferred_scale_and_sampling(monkeypatch):
    """The CUDA branch run on the CPU (kernel_name forced): exactly torchvision's roi_align with the scale that
    infer_scale gives and the module's sampling ratio."""
    from mdfnet.model import roi_align

    monkeypatch.setattr(roi_align, "kernel_name", lambda x: "torchvision")
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 16, 16, generator=g)
    boxes = [large_boxes(g, 4) / 4, large_boxes(g, 2) / 4]
    layer = SingleMapRoIAlign("0", 5, 3)
    out = layer({"0": x}, boxes, [(128, 128)] * 2)
    assert layer.last_kernel == "torchvision"
    assert torch.equal(out, tv_roi_align(x, boxes, 5, 1 / 8, 3))

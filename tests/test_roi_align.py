"""``SingleMapRoIAlign`` equals torchvision's ``MultiScaleRoIAlign`` on one map: values and gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from mdfnet.model.roi_align import SingleMapRoIAlign, infer_scale, roi_align_cpu

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

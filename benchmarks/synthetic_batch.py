"""The synthetic training batch both speed benchmarks time (``bench_train.py``, ``device_check.py``), shaped as the
training loader yields it (:func:`mdfnet.data.collate_detection`)."""

from __future__ import annotations

import torch

Batch = tuple[list[torch.Tensor], dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]


def synthetic_batch(batch: int, size: int, use_mask: bool, seed: int = 0, pin: bool = False) -> Batch:
    """``batch`` uint8 grey images ``[1,S,S]``, clinical ``{"numeric": float [B,9], "categorical": int64 [B,1] in
    1..2}``, targets with 2 boxes per image except the last (none), labels 1..5 and uint8 filled-box masks
    ``[N,S,S]`` when ``use_mask``; host tensors, in pinned memory if ``pin`` (CUDA)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=g) for _ in range(batch)]
    clinical = {"numeric": torch.randn(batch, 9, generator=g), "categorical": torch.randint(1, 3, (batch, 1), generator=g)}
    targets = []
    for i in range(batch):
        n = 0 if i == batch - 1 else 2
        xy = torch.rand(n, 2, generator=g) * size * 0.5
        wh = (torch.rand(n, 2, generator=g) * 0.4 + 0.1) * size
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1)
        t = {"boxes": boxes, "labels": torch.randint(1, 6, (n,), generator=g)}
        if use_mask:
            masks = torch.zeros(n, size, size, dtype=torch.uint8)
            for j, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                masks[j, y0:y1, x0:x1] = 1
            t["masks"] = masks
        targets.append(t)
    if pin:
        images = [im.pin_memory() for im in images]
        clinical = {k: v.pin_memory() for k, v in clinical.items()}
        targets = [{k: v.pin_memory() for k, v in t.items()} for t in targets]
    return images, clinical, targets

"""D-output statistics: how the discriminator scores real-train, fake and held-out real-test data.

Real-train scores well above real-test scores mean D is memorising the training set (overfitting);
all three collapsing together, or fake scores pinned at 0, mean the game has broken down.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gankit.utils import eval_mode


@torch.no_grad()
def d_output_stats(
    D: nn.Module, x: Tensor, labels: Tensor | None = None, batch_size: int = 512
) -> dict[str, float]:
    """Mean and std of sigmoid(D(x)) over x (N, *shape), D in eval mode (train mode restored).

    A packed D (PacGAN) scores whole packs: the last N mod pack samples are left out, and a set
    smaller than one pack is repeated to fill it.
    """
    device = next(D.parameters()).device
    pack = getattr(D, "pack", 1)
    if pack > 1:
        batch_size -= batch_size % pack
        idx = torch.arange(max(pack, x.shape[0] - x.shape[0] % pack)) % x.shape[0]
        x, labels = x[idx], None if labels is None else labels[idx]
    probs = []
    with eval_mode(D):
        for i in range(0, x.shape[0], batch_size):
            lab = None if labels is None else labels[i : i + batch_size].to(device)
            probs.append(torch.sigmoid(D(x[i : i + batch_size].to(device), lab).float()).cpu())
    p = torch.cat(probs)
    return {"mean": p.mean().item(), "std": p.std().item() if len(p) > 1 else 0.0}

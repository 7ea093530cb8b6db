"""Per-sample augmentation of a whole batch at once, on the batch's own device.

torchvision's transforms draw one set of random parameters per call, so on a batch every
image would get the same shift; these draw per image, which is what augmentation needs.
"""

from __future__ import annotations

import torch


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels each way (zero padding, then a random crop)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_hflip(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (clothes are roughly symmetric)."""
    if p <= 0:
        return x
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_erasing(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.02, 0.2),
    ratio: tuple[float, float] = (0.3, 3.3),
) -> torch.Tensor:
    """Zero a random rectangle in each image with probability ``p`` (Zhong et al., 2017)."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=generator) * h * w
    log_ratio = torch.empty(b).uniform_(
        float(torch.log(torch.tensor(ratio[0]))),
        float(torch.log(torch.tensor(ratio[1]))),
        generator=generator,
    )
    aspect = torch.exp(log_ratio)
    eh = torch.sqrt(area * aspect).round().clamp(1, h).long()
    ew = torch.sqrt(area / aspect).round().clamp(1, w).long()
    top = (torch.rand(b, generator=generator) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator) * (w - ew + 1)).long()
    apply = torch.rand(b, generator=generator) < p
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & apply[:, None, None]).to(x.device)
    return x.masked_fill(mask[:, None], 0.0)

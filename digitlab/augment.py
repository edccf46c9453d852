"""Batch augmentation and synthetic negatives (outlier exposure), on whole batches.

Images are float ``(N, 1, 28, 28)`` in ``[0, 1]``, background 0. Every random draw comes from
the generator passed in, so a resumed run augments exactly as the uninterrupted one would.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

def _affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta.view(-1, 2, 3), (n, c, h, w), align_corners=False)``, computed with
    broadcasting: the same grid at a third of the cost (affine_grid's batched matmul of 3-wide
    matrices was 3% of a small CNN's training step on a CPU)."""
    xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1  # pixel centres
    ys = ((torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1).view(-1, 1)
    t = theta.view(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2],
                        t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], -1)


def augment_batch(x: torch.Tensor, level: str, gen: torch.Generator) -> torch.Tensor:
    """Random affine per image (rotation, scale, shift; + shear and stroke thickness if robust)."""
    if level == "none":
        return x
    n, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(dev)

    if level == "standard":
        rot, s_lo, s_hi, shift, shear = 10.0, 0.9, 1.1, 2.0, 0.0
    else:
        rot, s_lo, s_hi, shift, shear = 15.0, 0.75, 1.15, 3.0, 0.35
    a = u(-rot, rot) * math.pi / 180
    s = u(s_lo, s_hi)
    sh = u(-shear, shear) if shear else torch.zeros(n, device=dev)
    t = u(-shift, shift) * (2 / 28), u(-shift, shift) * (2 / 28)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    # grid = inverse map from output to input coordinates: rotation/scale, then x-shear (slant)
    theta = torch.stack([cos, -sin + sh * cos, t[0], sin, cos + sh * sin, t[1]], 1)
    grid = _affine_grid(theta, x.shape[-2], x.shape[-1])
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if level == "robust":
        # Stroke thickness (grey-level morphology): a marker-bold stroke for a sixth of the
        # batch (3x3 dilation, which closes small loops as a broad pen does), a bolder stroke
        # for another sixth, a thinner one (2x2 erosion) for a sixth; the rest as written.
        r = torch.rand(n, generator=gen).to(dev).view(-1, 1, 1, 1)
        thick = F.max_pool2d(x, 3, 1, 1)
        thin = F.pad(-F.max_pool2d(-x, 2, 1, 0), (0, 1, 0, 1))
        x = torch.where(r < 1 / 6, thick, torch.where(r < 2 / 6, 0.5 * x + 0.5 * thick, x))
        x = torch.where((r >= 2 / 6) & (r < 0.5), torch.maximum(thin, 0.6 * x), x)
        # Light pen pressure: only the stroke's core is kept (the faint parts of the digit are
        # lost, strokes thin out and can break) and stretched back to full contrast, as
        # preprocessing does with a faint drawing. An eighth of the batch.
        t = (torch.rand(n, generator=gen) * 0.5 + 0.3).to(dev).view(-1, 1, 1, 1)
        light = ((x - t) / (1 - t)).clamp_(0, 1)
        x = torch.where((r >= 0.5) & (r < 0.625), light, x)
    return x


# Outlier exposure (Hendrycks et al., "Deep Anomaly Detection with Outlier Exposure", 2019): the
# robust recipe swaps a few images per batch for shapes that are not digits, as preprocessing
# would present them (fitted into the 20x20 box), and trains the model towards the uniform
# distribution on them, so that its confidence on blobs, tangles and specks stays low and
# `digitlab predict` answers "no digit" instead of a confident wrong one.
# A tenth of each batch, three quarters of them look-alikes when the run has a pool of them
# (docs/records.md: against 5% and half, fewer look-alikes of unseen fonts accepted at the same
# rejection of clean validation digits).
OUTLIER_FRACTION = 0.10
OUTLIER_WEIGHT = 0.5
HARD_SHARE = 0.75  # of the outliers, when hard negatives are given


def outlier_images(k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` synthetic non-digits (k, 1, 28, 28) in [0, 1]: filled ellipses and rectangles,
    tangled scribbles (random walks) and scattered specks, each kind a third of the time."""
    ys, xs = torch.meshgrid(torch.arange(28.0) + 0.5, torch.arange(28.0) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)  # (784, 2) pixel centres
    out = torch.zeros(k, 1, 28, 28)

    def u(lo: float, hi: float) -> float:
        return float(torch.rand((), generator=gen)) * (hi - lo) + lo

    kinds = torch.randint(0, 3, (k,), generator=gen).tolist()
    for j, kind in enumerate(kinds):
        if kind == 0:  # a filled shape, at least half as wide as tall (never a bold "1")
            a, b, th = 10.0, u(5.0, 10.0), u(0.0, math.pi)
            c, sn = abs(math.cos(th)), abs(math.sin(th))
            ellipse = u(0, 1) < 0.5
            if ellipse:  # half-extents of the rotated shape, then scaled to fit the box
                ext = max(math.hypot(a * c, b * sn), math.hypot(a * sn, b * c))
            else:
                ext = max(a * c + b * sn, a * sn + b * c)
            a, b = a * 10.0 / ext, b * 10.0 / ext
            dx, dy = xs - 14.0 - u(-1.5, 1.5), ys - 14.0 - u(-1.5, 1.5)
            p = dx * math.cos(th) + dy * math.sin(th)
            q = -dx * math.sin(th) + dy * math.cos(th)
            if ellipse:
                inside = (1.0 - torch.sqrt((p / a) ** 2 + (q / b) ** 2)) * b
            else:
                inside = torch.minimum(a - p.abs(), b - q.abs())
            img = (inside + 0.5).clamp(0, 1)
        elif kind == 1:  # a tangle: a random walk of 20-40 steps, scaled into the box
            pts = torch.randn(int(u(20, 41)), 2, generator=gen).cumsum(0)
            pts = pts - pts.min(0).values
            pts = pts * (20.0 / pts.max().clamp(min=1e-3)) + 4.0
            a0, ab = pts[:-1].unsqueeze(0), (pts[1:] - pts[:-1]).unsqueeze(0)
            rel = pix.unsqueeze(1) - a0
            t = ((rel * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-6)).clamp(0, 1)
            dist = (rel - t.unsqueeze(-1) * ab).norm(dim=-1).min(1).values
            img = (u(0.6, 1.3) - dist + 0.5).clamp(0, 1).view(28, 28)
        else:  # specks scattered over the box
            m = int(u(15, 61))
            centres = torch.rand(m, 2, generator=gen) * 20.0 + 4.0
            radii = torch.rand(m, generator=gen) * 1.0 + 0.7
            dist = (pix.unsqueeze(1) - centres.unsqueeze(0)).norm(dim=-1) - radii
            img = (0.5 - dist).clamp(0, 1).max(1).values.view(28, 28)
        out[j, 0] = img
    return out


def add_outliers(x: torch.Tensor, gen: torch.Generator, hard: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Replace ~OUTLIER_FRACTION of the batch with ``outlier_images`` (HARD_SHARE of them drawn
    from ``hard``, uint8 look-alike negatives, when given); returns the batch, the mask of replaced
    rows on x's device (None when none was) and how many there are (known without a device
    sync)."""
    pick = torch.rand(x.shape[0], generator=gen) < OUTLIER_FRACTION
    k = int(pick.sum())
    if not k:
        return x, None, 0
    x = x.clone()
    mask = pick.to(x.device)
    junk = outlier_images(k, gen)
    if hard is not None and len(hard):
        swap = torch.rand(k, generator=gen) < HARD_SHARE
        rows = torch.randint(0, len(hard), (int(swap.sum()),), generator=gen)
        junk[swap] = hard[rows].unsqueeze(1).float().div_(255)
    x[mask] = junk.to(x.device, x.dtype)
    return x, mask, k


def outlier_loss(logits: torch.Tensor, y: torch.Tensor, junk: torch.Tensor | None,
                 label_smoothing: float) -> torch.Tensor:
    """Cross-entropy on the digits plus OUTLIER_WEIGHT x cross-entropy to the uniform
    distribution on the outliers, averaged over the batch."""
    if junk is None:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    real = ~junk
    ce = F.cross_entropy(logits[real], y[real], label_smoothing=label_smoothing, reduction="sum")
    uniform = -logits[junk].log_softmax(-1).mean(-1).sum()
    return (ce + OUTLIER_WEIGHT * uniform) / len(y)


def distill_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
                 ) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals and Dean, 2015): the KL divergence from the
    teachers' softened probabilities to the student's softened ones, times T^2 so that its
    gradients keep their scale whatever the temperature; averaged over the batch, outliers
    included (teachers trained towards uniform on non-digits pass that on)."""
    log_student = (logits / temperature).log_softmax(-1)
    return F.kl_div(log_student, teacher_probs, reduction="batchmean") * temperature ** 2

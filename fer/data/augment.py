"""Augmentation on whole batches of tensors (one affine warp per batch, on whatever device the
batch is on), so it never becomes the bottleneck the way per-image PIL transforms do on 2 cores."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from fer.preprocess import center_crop


class BatchAugment(nn.Module):
    def __init__(
        self,
        flip: bool = True,
        max_rotation: float = 10.0,
        max_scale: float = 0.1,
        random_crop: bool = True,
        erase_prob: float = 0.0,
    ):
        super().__init__()
        self.flip, self.max_rotation, self.max_scale = flip, max_rotation, max_scale
        self.random_crop, self.erase_prob = random_crop, erase_prob

    def forward(self, x: torch.Tensor, out_size: int) -> torch.Tensor:
        # (B, 1, S, S) normalised faces -> (B, 1, out_size, out_size): a random window of the face,
        # randomly mirrored, rotated and scaled.
        b, _, s, _ = x.shape
        dev = x.device
        if self.max_rotation == 0 and self.max_scale == 0:
            x = self._crop(x, out_size) if self.random_crop else center_crop(x, out_size)
            if self.flip:
                mirror = torch.rand(b, device=dev) < 0.5
                x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
        else:
            x = self._warp(x, out_size)
        if self.erase_prob > 0:
            x = self._erase(x)
        return x

    def _crop(self, x, out):
        # Integer offsets per image, gathered with one index op: exact pixels, no resampling.
        b, c, s, _ = x.shape
        top = torch.randint(0, s - out + 1, (b, 1), device=x.device) + torch.arange(out, device=x.device)  # (B, out)
        left = torch.randint(0, s - out + 1, (b, 1), device=x.device) + torch.arange(out, device=x.device)
        rows = x.gather(2, top[:, None, :, None].expand(b, c, out, s))
        return rows.gather(3, left[:, None, None, :].expand(b, c, out, out))

    def _warp(self, x, out):
        b, c, s, _ = x.shape
        dev = x.device
        angle = (torch.rand(b, device=dev) * 2 - 1) * math.radians(self.max_rotation)
        scale = 1 + (torch.rand(b, device=dev) * 2 - 1) * self.max_scale
        zoom = scale * out / s  # the output window covers out/s of the input
        mirror = torch.where(torch.rand(b, device=dev) < 0.5, -1.0, 1.0) if self.flip else torch.ones(b, device=dev)
        room = (s - out) / s if self.random_crop else 0.0  # normalised shift that keeps a crop inside
        shift = (torch.rand(b, 2, device=dev) * 2 - 1) * room
        cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
        theta = torch.stack(
            [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, (b, c, out, out), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _erase(self, x):
        # Random erasing: a square of a quarter to a half of the side, set to 0 (the mean after normalising).
        b, _, s, _ = x.shape
        dev = x.device
        side = torch.randint(s // 4, s // 2 + 1, (b, 1, 1), device=dev)
        cy, cx = torch.randint(0, s, (b, 1, 1), device=dev), torch.randint(0, s, (b, 1, 1), device=dev)
        ys, xs = torch.arange(s, device=dev).view(1, s, 1), torch.arange(s, device=dev).view(1, 1, s)
        box = ((ys - cy).abs() * 2 < side) & ((xs - cx).abs() * 2 < side)
        box &= torch.rand(b, 1, 1, device=dev) < self.erase_prob
        return x.masked_fill(box[:, None], 0.0)

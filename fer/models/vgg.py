"""A VGG-style network sized for accuracy per CPU-hour: the paper's model 2 widened and made
configurable, the family behind the best from-scratch FER2013 results (about 72-73% with
64-128-256-512 wide stages and hundreds of GPU epochs).

Stages of `convs_per_stage` conv-BN-ReLU layers and a 2x2 max pool, then either the flattened
feature map or its global average into a small fully connected head.
"""

from collections.abc import Sequence

import torch
from torch import nn

from fer.models.registry import register_model


@register_model("vgg")
class VGGFace(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int,
        widths: Sequence[int],
        convs_per_stage: int,
        hidden: Sequence[int],
        conv_dropout: Sequence[float] | None,
        dropout: float,
        global_pool: bool,
        in_channels: int = 1,
    ):
        super().__init__()
        conv_dropout = list(conv_dropout) if conv_dropout is not None else [0.0] * len(widths)
        if len(conv_dropout) != len(widths) or convs_per_stage < 1:
            raise ValueError("VGGFace needs one conv_dropout rate per stage and at least one conv per stage")
        layers: list[nn.Module] = []
        c_in, side = in_channels, input_size
        for width, p in zip(widths, conv_dropout):
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
            layers.append(nn.MaxPool2d(2))
            side //= 2
            if p > 0:
                layers.append(nn.Dropout2d(p))
        if side < 1:
            raise ValueError(f"{len(widths)} poolings leave nothing of a {input_size} px input")
        self.features = nn.Sequential(*layers)
        # Global average pooling keeps the head small whatever the input size; flattening keeps where
        # on the face a feature fired (mouth vs eyes), which matters more on aligned 48 px faces.
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        sizes = [c_in * (1 if global_pool else side * side), *hidden]
        head: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            head += [nn.Dropout(dropout), nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True)]
        head += [nn.Dropout(dropout), nn.Linear(sizes[-1], num_classes)]
        self.classifier = nn.Sequential(*head)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (B, C, s, s) or (B, C, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (B, num_classes) logits

"""The paper's model 2: 8 convolutions (3x3, smaller than the baseline's 5x5), 4 poolings and
4 fully connected layers, with Batch Normalization and Dropout (each dropout layer its own rate).

A VGG-style stack: four stages of two conv-BN-ReLU and a 2x2 max pool, then an MLP head.
"""

from collections.abc import Sequence

import torch
from torch import nn

from fer.models.registry import register_model


@register_model("regularized")
class RegularizedCNN(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int,
        widths: Sequence[int],
        hidden: Sequence[int],
        conv_dropout: Sequence[float],
        dropout: float,
        in_channels: int = 1,
    ):
        super().__init__()
        if len(widths) != 8 or len(conv_dropout) != 4 or len(hidden) != 3:
            raise ValueError("RegularizedCNN has 8 conv widths, 4 conv_dropout rates and 3 hidden sizes")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
            if i % 2 == 1:  # a pooling after every second conv: four stages
                layers.append(nn.MaxPool2d(2))
                if conv_dropout[i // 2] > 0:
                    layers.append(nn.Dropout2d(conv_dropout[i // 2]))
        self.features = nn.Sequential(*layers)

        side = input_size
        for _ in range(4):
            side //= 2  # 44 -> 22 -> 11 -> 5 -> 2;  48 -> 24 -> 12 -> 6 -> 3
        sizes = [widths[-1] * side * side, *hidden]
        head: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            head += [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        head.append(nn.Linear(sizes[-1], num_classes))
        self.classifier = nn.Sequential(*head)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 256, s/16, s/16)
        return self.classifier(torch.flatten(x, 1))  # (B, num_classes) logits

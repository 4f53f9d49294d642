"""The paper's model 1: 2 convolutions, 2 poolings, 4 fully connected layers, no regularisation.

It over-fits on purpose (the paper: 98% train, 52% test); it is the point of comparison.
"""

import torch
from torch import nn

from fer.models.registry import register_model


@register_model("baseline")
class BaselineCNN(nn.Module):
    def __init__(
        self,
        *,
        num_classes: int,
        input_size: int,
        widths: tuple[int, int],
        kernel_size: int,
        hidden: tuple[int, int, int],
        dropout: float,
        in_channels: int = 1,
    ):
        super().__init__()
        pad = kernel_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(widths[0], widths[1], kernel_size, padding=pad),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = input_size // 4  # two 2x2 poolings
        sizes = [widths[1] * side * side, *hidden]
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 64, s/4, s/4)
        return self.classifier(torch.flatten(x, 1))  # (B, num_classes) logits

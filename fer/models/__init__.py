"""Network architectures, built from a plain spec so a checkpoint can rebuild its model without
Hydra and without importing anything named in the file (a registry, not arbitrary imports).

One rule for defaults: the model's YAML (conf/model/<arch>.yaml, `net:`) holds them, and every class
here takes them as required keyword arguments, so no default is written twice. A checkpoint stores
the whole spec (fer meta "net"), so it rebuilds without any YAML."""

from torch import nn

from fer.errors import FerError
from fer.models.baseline import BaselineCNN
from fer.models.regularized import RegularizedCNN
from fer.models.vgg import VGGFace

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "baseline": BaselineCNN,
    "regularized": RegularizedCNN,
    "vgg": VGGFace,
}


def build_net(arch: str, **kwargs) -> nn.Module:
    """build_net("regularized", num_classes=7, input_size=44, widths=[...], ...) -> RegularizedCNN"""
    if arch not in ARCHITECTURES:
        raise FerError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](**kwargs)
    except (TypeError, ValueError) as e:
        raise FerError(f"cannot build {arch!r} from {kwargs}: {e}") from None

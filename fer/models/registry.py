"""The architectures a checkpoint may name: each model file registers its class where it is defined
(`@register_model("vgg")`, as timm does), and fer.models imports every file of this package, so a
checkpoint rebuilds its network without Hydra and without importing anything it names (a registry,
not arbitrary imports: only the files shipped in fer/models/ can register)."""

from torch import nn

from fer.errors import FerError

ARCHITECTURES: dict[str, type[nn.Module]] = {}


def register_model(arch: str):
    """Class decorator: `arch` (the `net.arch` of conf/model/<arch>.yaml and of checkpoints) builds this class."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if ARCHITECTURES.get(arch, cls) is not cls:
            raise FerError(f"architecture {arch!r} is registered twice: {ARCHITECTURES[arch].__name__} and {cls.__name__}")
        ARCHITECTURES[arch] = cls
        return cls

    return register


def list_models() -> list[str]:
    return sorted(ARCHITECTURES)


def build_net(arch: str, **kwargs) -> nn.Module:
    """build_net("regularized", num_classes=7, input_size=44, widths=[...], ...) -> RegularizedCNN"""
    if arch not in ARCHITECTURES:
        raise FerError(f"unknown architecture {arch!r}; known: {', '.join(list_models())}")
    try:
        return ARCHITECTURES[arch](**kwargs)
    except (TypeError, ValueError) as e:
        raise FerError(f"cannot build {arch!r} from {kwargs}: {e}") from None

import pytest
import torch
from torch import nn

from fer.errors import FerError
from fer.models import ARCHITECTURES, build_net, list_models, register_model
from fer.models.baseline import BaselineCNN
from fer.models.regularized import RegularizedCNN
from fer.models.vgg import VGGFace

from conftest import net_kwargs

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def count(net, kinds):
    return sum(isinstance(m, kinds) for m in net.modules())


def test_baseline_has_the_papers_layers():
    net = BaselineCNN(**net_kwargs("baseline"))
    assert (count(net, nn.Conv2d), count(net, POOLS), count(net, nn.Linear)) == (2, 2, 4)
    assert count(net, (nn.BatchNorm2d, nn.BatchNorm1d, nn.Dropout, nn.Dropout2d)) == 0  # no regularisation
    assert net(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("input_size", [44, 48])
def test_regularized_has_the_papers_layers(input_size):
    net = RegularizedCNN(**net_kwargs("regularized", input_size=input_size, conv_dropout=(0.05, 0.1, 0.15, 0.2), dropout=0.3))
    assert (count(net, nn.Conv2d), count(net, POOLS), count(net, nn.Linear)) == (8, 4, 4)
    assert count(net, nn.BatchNorm2d) == 8 and count(net, nn.BatchNorm1d) == 3
    rates = [m.p for m in net.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    assert rates == [0.05, 0.1, 0.15, 0.2, 0.3, 0.3, 0.3]  # each dropout layer its own rate
    kernel = max(m.kernel_size[0] for m in net.modules() if isinstance(m, nn.Conv2d))
    assert kernel < BaselineCNN(**net_kwargs("baseline")).features[0].kernel_size[0]  # smaller kernels than the baseline
    assert net.eval()(torch.zeros(2, 1, input_size, input_size)).shape == (2, 7)


def test_build_net_rejects_unknown_architectures_and_arguments():
    with pytest.raises(FerError, match="unknown architecture 'resnet'"):
        build_net("resnet")
    with pytest.raises(FerError, match="cannot build 'baseline'"):
        build_net("baseline", widths=(1, 2, 3), nonsense=1)


@pytest.mark.parametrize("global_pool", [False, True])
def test_vgg_stacks_its_stages_and_keeps_the_head_small(global_pool):
    net = VGGFace(
        **net_kwargs("vgg", input_size=44, widths=(16, 32, 64, 128), convs_per_stage=3, hidden=(32,), global_pool=global_pool)
    )
    assert (count(net, nn.Conv2d), count(net, nn.MaxPool2d), count(net, nn.Linear)) == (12, 4, 2)
    assert net.classifier[1].in_features == (128 if global_pool else 128 * 2 * 2)  # 44 -> 22 -> 11 -> 5 -> 2
    assert net.eval()(torch.zeros(2, 1, 44, 44)).shape == (2, 7)
    with pytest.raises(FerError, match="nothing of a 8 px input"):
        build_net("vgg", **net_kwargs("vgg", input_size=8))


def test_every_model_file_registers_itself_and_every_model_config_names_a_registered_one():
    from hydra import compose, initialize_config_dir

    from conftest import ROOT

    assert {"baseline", "regularized", "vgg"} <= set(list_models())
    options = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        archs = {compose("train", overrides=[f"model={m}"]).model.net.arch for m in options}
    assert archs == set(list_models())  # a registered model without a YAML, or a YAML naming no model, fails here
    for arch in list_models():
        assert ARCHITECTURES[arch].__module__ == f"fer.models.{arch}"  # registered where it is defined


def test_an_architecture_is_registered_once():
    with pytest.raises(FerError, match="registered twice"):

        @register_model("baseline")
        class Impostor(nn.Module):
            pass

    assert ARCHITECTURES["baseline"] is BaselineCNN

"""Network architectures, built from a plain spec so a checkpoint can rebuild its model without Hydra.

One rule for defaults: the model's YAML (conf/model/<arch>.yaml, `net:`) holds them, and every class
here takes them as required keyword arguments, so no default is written twice. A checkpoint stores
the whole spec (fer meta "net"), so it rebuilds without any YAML.

A new model is one file here that registers its class (`@register_model("name")`, fer/models/registry.py)
and one YAML in conf/model/: importing this package imports every module in it, so nothing else lists them."""

import importlib
import pkgutil

from fer.models.registry import ARCHITECTURES, build_net, list_models, register_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ARCHITECTURES", "build_net", "list_models", "register_model"]

"""The search space of hparams_search/space/optuna_<model>.yaml, as Optuna distributions.

Keys are Hydra overrides (`++` kept: it is how the value is applied), values Hydra's sweep syntax:
interval(a, b) is uniform, tag(log, interval(a, b)) log-uniform (floats both: Hydra reads interval
bounds as floats), range(a, b, step) stepped (ints when all three are), choice(...) categorical.
A plain value is fixed: every trial gets it as it is.
"""

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from fer.errors import FerError


def parse_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """key=sweep overrides -> ({key: distribution}, {key: fixed value}), in the order given."""
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.get_value_element_as_str()
    for key in fixed:
        space.pop(key, None)  # the command line fixed what the space file sweeps
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if isinstance(value, IntervalSweep):
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    if isinstance(value, RangeSweep) and not value.shuffle:
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            # range(a, b, s) stops before b, as Python's range; Optuna's high is inclusive
            steps = int((value.stop - value.start) / value.step - 1e-9)
            return FloatDistribution(value.start, value.start + steps * value.step, step=value.step)
        start, step = int(value.start), int(value.step)
        return IntDistribution(start, start + (int(value.stop) - 1 - start) // step * step, step=step)
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    raise FerError(f"{override.input_line}: Optuna searches interval(), tag(log, interval()), choice() or range(), not this")


def grid(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """The points GridSampler visits: every parameter must be a choice or a stepped range."""
    points = {}
    for key, d in space.items():
        if isinstance(d, CategoricalDistribution):
            points[key] = list(d.choices)
        elif isinstance(d, (IntDistribution, FloatDistribution)) and d.step is not None and not d.log:
            n = int(round((d.high - d.low) / d.step))
            points[key] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise FerError(
                f"hydra/sweeper/sampler=grid needs choice() or range() values; {key} is a continuous interval "
                f"(give it as choice(...) on the command line, or pick another sampler)"
            )
    return points


def suggest(trial, key: str, d: BaseDistribution):
    """The trial's value of `key` drawn from `d` (the suggest_* call that distribution stands for)."""
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(key, d.low, d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(key, d.low, d.high, log=d.log, step=d.step)
    return trial.suggest_categorical(key, d.choices)


def as_override(key: str, value) -> str:
    """One trial's value as the override a job is launched with."""
    return f"{key}={value}"

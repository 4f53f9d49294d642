"""Every config option composes and instantiates (cheap: no data is read, no training runs)."""

from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fer.data.datamodule import FaceDataModule
from fer.data.labels import EMOTIONS
from fer.models import list_models
from fer.train import precision
from fer.train.module import EmotionClassifier

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make(overrides):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=False)


def test_groups_have_the_documented_options():
    assert {make([f"model={m}"]).model.net.arch for m in options("model")} == set(list_models())
    assert {"default", "gpu", "ddp"} <= set(options("trainer"))
    assert {"fer2013", "folders"} <= set(options("data")) and options("preprocess") == ["default"]
    assert {"default", "distill", "early_stopping", "ema", "freeze_features"} <= set(options("callbacks"))
    assert options("logger") == ["csv", "tensorboard"]


@pytest.mark.parametrize("model", options("model"))
def test_every_model_instantiates(model):
    cfg = make([f"model={model}", "data.path=x.csv"])
    net_model = instantiate(cfg.model)
    assert isinstance(net_model, EmotionClassifier)
    assert net_model.net_spec["arch"] == model
    assert "face" not in cfg.model and not hasattr(net_model, "face")  # the face settings reach the checkpoint by a callback
    dm = instantiate(cfg.data)
    assert isinstance(dm, FaceDataModule) and dm.input_size == net_model.input_size
    # the classes and the picture size reach the model from the data config (interpolation) and its checkpoint meta
    assert net_model.class_names == dm.class_names == list(EMOTIONS) and net_model.image_size == dm.image_size == 48
    assert net_model.fer_meta()["image_size"] == 48


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_instantiates(experiment):
    cfg = make([f"experiment={experiment}"])
    assert isinstance(instantiate(cfg.model), EmotionClassifier)
    assert cfg.seed is not None


@pytest.mark.parametrize(
    "imbalance, class_weights, balanced_sampling",
    [("none", None, False), ("weighted_loss", "balanced", False), ("balanced_sampling", None, True)],
)
def test_imbalance_options_reach_the_loss_and_the_sampler(imbalance, class_weights, balanced_sampling):
    assert options("imbalance") == ["balanced_sampling", "none", "weighted_loss"]
    cfg = make([f"imbalance={imbalance}", "experiment=paper_regularized", "data.path=x.csv"])
    assert instantiate(cfg.model).class_weights == class_weights
    assert instantiate(cfg.data).balanced_sampling is balanced_sampling
    # the command line still wins over the group
    assert make([f"imbalance={imbalance}", "model.class_weights=[1,1,1,1,1,1,1]"]).model.class_weights == [1] * 7


def test_default_trainer_instantiates_and_takes_direct_overrides():
    cfg = make(["trainer.max_epochs=1", "trainer.limit_train_batches=5"])
    chosen, _ = precision.choose(cfg.trainer.precision, cfg.trainer.accelerator)  # what fer.train.run does with "auto"
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False, precision=chosen)
    assert isinstance(trainer, L.Trainer) and trainer.max_epochs == 1 and trainer.limit_train_batches == 5
    assert trainer.precision == ("bf16-mixed" if precision.cpu_has_native_bfloat16() else "32-true")


def test_precision_auto_is_bf16_only_on_cpus_that_have_it(monkeypatch):
    assert make([]).trainer.precision == "auto"
    assert precision.choose("32-true", "cpu") == ("32-true", "as configured")  # an explicit value always wins
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda native=native: native)
        assert precision.choose("auto", "cpu")[0] == expected
    assert precision.choose("auto", "gpu")[0] == "32-true"


def test_gpu_and_ddp_trainers_compose():
    assert make(["trainer=gpu"]).trainer.accelerator == "gpu"
    ddp = make(["trainer=ddp"]).trainer
    assert ddp.strategy == "ddp" and ddp.devices == 2 and ddp.sync_batchnorm


def test_dropout_knob_reaches_the_network():
    model = instantiate(make(["model=regularized", "model.net.dropout=0.25"]).model)
    assert model.net_spec["dropout"] == 0.25
    assert model.net.classifier[3].p == 0.25


def test_data_path_default_and_env_override(monkeypatch):
    monkeypatch.delenv("FER2013_PATH", raising=False)
    assert make([]).data.path == "data/fer2013.csv"
    monkeypatch.setenv("FER2013_PATH", "/somewhere/fer2013.csv.gz")
    assert make([]).data.path == "/somewhere/fer2013.csv.gz"


@pytest.mark.parametrize("model", options("model"))
def test_debug_smoke_shrinks_the_run_and_nothing_else(model):
    smoke, full = make([f"model={model}", "debug=smoke"]), make([f"model={model}"])
    assert smoke.model == full.model and smoke.data == full.data and smoke.seed == full.seed
    assert (smoke.trainer.max_epochs, smoke.trainer.limit_train_batches) == (1, 5)
    assert not smoke.eval_train_split and not smoke.calibrate
    # after an experiment in the defaults list: a recipe's 50 epochs become 1
    assert make(["experiment=paper_regularized", "debug=smoke"]).trainer.max_epochs == 1


def instantiated(overrides, run_dir):
    """The callbacks and loggers a run with these overrides builds, its run dir set as Hydra sets it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from fer.train.instantiators import instantiate_callbacks, instantiate_loggers

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return instantiate_callbacks(cfg.callbacks), instantiate_loggers(cfg.get("logger"))


@pytest.mark.parametrize(
    "overrides, added",
    [
        ([], set()),
        (["callbacks=ema", "callbacks.ema.decay=0.99"], {"EMAWeights"}),
        (["callbacks=early_stopping", "callbacks.early_stopping.patience=5"], {"EarlyStopping"}),
        (["callbacks=[ema,early_stopping]"], {"EMAWeights", "EarlyStopping"}),
        (["callbacks=freeze_features"], {"FreezeFeatures"}),
        (["callbacks=distill", "callbacks.distill.teachers=[fer/weights/fer2013_regularized.ckpt]"], {"Distill"}),
    ],
)
def test_callbacks_options_add_to_the_runs_own(tmp_path, overrides, added):
    callbacks, _ = instantiated(overrides, tmp_path)
    names = [type(c).__name__ for c in callbacks]
    own = ["RunCheckpoint", "RunCheckpoint", "RunRecord", "FaceSettings", "ShardReport"]
    reports = ["TrainSplitScore", "Calibrate", "WarmStartComparison", "Figures", "MetricsJson"]
    assert names[:10] == own + reports and set(names[10:]) == added
    best, last = callbacks[:2]
    assert (best.monitor, best.dirpath, last.monitor, last.dirpath) == (
        "val/acc",
        str(tmp_path / "checkpoints"),
        None,
        str(tmp_path / "checkpoints"),
    )
    assert callbacks[3].face == {"align": True, "margin": 0.0, "gamma": "auto"}
    if "EMAWeights" in added and overrides[1:]:
        assert callbacks[-1].decay == 0.99
    if "EarlyStopping" in added:
        assert next(c for c in callbacks if type(c).__name__ == "EarlyStopping").patience == 5


def test_logger_options_write_where_the_run_dir_is(tmp_path):
    (tb,) = instantiated([], tmp_path)[1]
    assert type(tb).__name__ == "TensorBoardLogger" and Path(tb.log_dir) == tmp_path / "tensorboard"
    (csv,) = instantiated(["logger=csv"], tmp_path)[1]
    assert type(csv).__name__ == "CSVLogger" and Path(csv.log_dir) == tmp_path / "csv"
    assert len(instantiated(["logger=[tensorboard,csv]"], tmp_path)[1]) == 2
    assert instantiated(["~logger"], tmp_path)[1] == []  # no logger at all


def test_the_model_base_is_shared_and_not_a_model():
    # one source per default: the base's settings reach every model; the base itself is no option of model=
    assert "base" not in options("model")
    for model in options("model"):
        cfg = make([f"model={model}"]).model
        assert cfg._target_ == "fer.train.module.EmotionClassifier" and cfg.channels_last and cfg.tta == "none"
        assert "dropout" in cfg.net and "dropout" not in cfg  # model.net.dropout
        assert cfg.scheduler is not None or "scheduler_interval" not in cfg  # no setting without a scheduler to read it
    assert make(["model=vgg"]).model.net.dropout == make(["model=regularized"]).model.net.dropout  # vgg inherits it

"""Messages reach the user whole: a refusal is never cut mid-sentence, and a foreign library's
message quoted inside ours is cut, when at all, at a word boundary and marked as cut."""

import pickle

import pytest

from fer.errors import FerError, exit_on_user_error, first_line, task_exits_on_user_error
from fer.train.sweep import summarize_sweep

LONG_REFUSAL = (
    "data.batch_size must be a positive whole number, not 0: it is the number of faces in one training "
    "step; pass data.batch_size=128 (the default) or another positive number, and data.eval_batch_size "
    "likewise for validation and test, which may be larger since no gradients are kept"
)


def test_a_sweep_summary_keeps_a_failed_jobs_whole_message(tmp_path):
    assert len(LONG_REFUSAL) > 250
    job = tmp_path / "0_data.batch_size=0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- data.batch_size=0\n")
    (job / "error.txt").write_text(LONG_REFUSAL + "\n")
    (row,) = summarize_sweep(tmp_path)
    assert row["status"] == "failed: " + LONG_REFUSAL


def test_a_quoted_message_is_cut_at_a_word_and_says_so():
    assert first_line("short\nsecond line") == "short"
    cut = first_line("word " * 100, limit=42)
    assert cut.endswith(" ...") and len(cut) <= 46 and "wor ..." not in cut
    assert first_line("") == ""


def test_every_entry_point_ends_a_users_error_with_one_line_and_exit_code_2(capsys):
    @task_exits_on_user_error
    def task(cfg):
        raise FerError(f"{cfg}: no such file; give data.path=PATH")

    with pytest.raises(SystemExit) as e:
        task("data.path=x.csv")
    assert e.value.code == 2 and capsys.readouterr().err == "error: data.path=x.csv: no such file; give data.path=PATH\n"

    def build():  # a refusal that hydra.utils.instantiate wrapped ("Error in call to target ...")
        try:
            raise FerError("model.net.dropout must be in [0, 1)")
        except FerError as refusal:
            raise RuntimeError("Error in call to target 'fer.train.module.EmotionClassifier'") from refusal

    with pytest.raises(SystemExit) as e, exit_on_user_error():
        build()
    assert e.value.code == 2 and capsys.readouterr().err == "error: model.net.dropout must be in [0, 1)\n"

    with pytest.raises(SystemExit) as e, exit_on_user_error():
        raise KeyboardInterrupt
    assert e.value.code == 130 and capsys.readouterr().err == "interrupted\n"

    with pytest.raises(ValueError), exit_on_user_error():  # a bug keeps its traceback
        raise ValueError("a bug")


def test_a_wrapped_task_can_be_pickled_for_the_joblib_and_slurm_launchers():
    cloudpickle = pytest.importorskip("cloudpickle")
    from fer.cli import train

    task = pickle.loads(cloudpickle.dumps(train.task.__wrapped__))  # what @hydra.main hands to the launcher
    assert callable(task)

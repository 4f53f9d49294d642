"""Messages reach the user whole: a refusal is never cut mid-sentence, and a foreign library's
message quoted inside ours is cut, when at all, at a word boundary and marked as cut."""

from fer.errors import first_line
from fer.sweep import summarize_sweep

LONG_REFUSAL = ("data.batch_size must be a positive whole number, not 0: it is the number of faces in one training "
                "step; pass data.batch_size=128 (the default) or another positive number, and data.eval_batch_size "
                "likewise for validation and test, which may be larger since no gradients are kept")


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

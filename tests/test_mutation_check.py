"""tests/mutation_check.py keeps working as the code changes: a mutant whose text is gone stops the whole check."""

import re

from conftest import ROOT
from mutation_check import MUTANTS


def test_every_mutant_finds_its_text_once_and_names_tests_that_exist():
    stale = []
    for m in MUTANTS:
        source = (ROOT / m.file).read_text()
        stale += [
            f"{m.name}: {old.strip()[:60]!r} occurs {source.count(old)} times" for old, _ in m.edits if source.count(old) != 1
        ]
        for node in m.tests:
            file, name = re.match(r"([^:]+)::([A-Za-z_0-9]+)", node).groups()
            if f"\ndef {name}(" not in (ROOT / file).read_text():
                stale.append(f"{m.name}: no test {node}")
    assert not stale, "update MUTANTS in tests/mutation_check.py:\n" + "\n".join(stale)

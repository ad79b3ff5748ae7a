"""Drift tests hold their level on samples from one distribution and fire on planted shifts (the
benchmark, bench/drift.py, measures power and false alarms on real text with MiniLM)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lamina.monitoring.drift import check, length_test, mmd_test, vocabulary_test

WORDS = "the a of to and in is it you that he was for on are with as his they be at one have this".split()
OTHER = "der die und ist nicht mit sich auf für dem den das ein eine als auch es an werden aus er hat".split()


def sentences(n: int, words: list[str], length: tuple[int, int], seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(*length))) for _ in range(n)]


def test_the_meaning_test_holds_its_level_and_finds_a_shift() -> None:
    rng = np.random.default_rng(0)
    p_values = [mmd_test(rng.normal(size=(120, 16)), rng.normal(size=(120, 16)), 100, seed=s)[1]
                for s in range(20)]  # fmt: skip
    assert np.mean(np.array(p_values) < 0.05) <= 0.15  # about 5 % by design; 20 draws
    shifted = rng.normal(size=(120, 16)) + 0.4
    assert mmd_test(rng.normal(size=(120, 16)), shifted, 100)[1] < 0.02


def test_length_and_vocabulary_fire_on_their_shifts_only() -> None:
    reference = sentences(300, WORDS, (5, 15), seed=0)
    same = sentences(200, WORDS, (5, 15), seed=1)
    longer = sentences(200, WORDS, (20, 40), seed=2)
    german = sentences(200, OTHER, (5, 15), seed=3)
    assert length_test(reference, same).p_value > 0.01 and vocabulary_test(reference, same).p_value > 0.01
    shifted = length_test(reference, longer)
    assert shifted.p_value < 0.01 and shifted.psi is not None and shifted.psi > 0.2
    assert vocabulary_test(reference, longer).p_value > 0.01  # the same words, only more of them
    assert vocabulary_test(reference, german).p_value < 0.01  # (longer words too: length may fire)


def test_check_combines_the_tests_and_refuses_tiny_samples() -> None:
    from lamina.core.errors import ConfigError

    rng = np.random.default_rng(1)
    reference, window = sentences(200, WORDS, (5, 15), 0), sentences(200, WORDS, (5, 15), 1)
    quiet = check(reference, window, reference_vectors=rng.normal(size=(200, 8)),
                  window_vectors=rng.normal(size=(200, 8)))  # fmt: skip
    assert [t.name for t in quiet.tests] == ["meaning", "length", "vocabulary"] and not quiet.drifted
    loud = check(reference, window, reference_vectors=rng.normal(size=(200, 8)),
                 window_vectors=rng.normal(size=(200, 8)) + 1.0)  # fmt: skip
    assert loud.drifted and loud.as_dict()["drifted"] is True
    with pytest.raises(ConfigError, match="at least 20 texts"):
        check(reference[:5], window)


def test_reference_texts_come_from_text_jsonl_or_csv_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from lamina.monitoring.drift import reference_texts

    (tmp_path / "r.txt").write_text("one line\n\nanother line\n")
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps({"question": f"q{i}"}) for i in range(30)))
    (tmp_path / "r.csv").write_text("prompt,label\nhello,1\nworld,0\n")
    assert sorted(reference_texts(None, str(tmp_path / "r.txt"))) == ["another line", "one line"]
    assert len(reference_texts(None, str(tmp_path / "r.jsonl"), sample=10)) == 10
    assert sorted(reference_texts(None, str(tmp_path / "r.csv"))) == ["hello", "world"]

import json
import random
from pathlib import Path

import pytest

import lamina.data.pipeline  # noqa: F401 - registers every built-in step
from lamina.core.errors import ConfigError
from lamina.data.cleaning import register_filter_hook
from lamina.data.dedup import NearDuplicateIndex, shingles
from lamina.data.steps import StepContext, StepStats, make_step


def run(spec, records, text_field="text"):
    step = make_step(spec)
    step.start(StepContext(text_field, seed=0))
    stats = StepStats(str(spec))
    stats.rows_in = len(records)
    out = step.apply([dict(r) for r in records], stats)
    stats.rows_out = len(out)
    step.finish(stats)
    return out, stats


def test_normalize() -> None:
    out, stats = run(
        "normalize", [{"text": "  ﬁne\u00a0 day\x07 \r\n\r\n\r\n\r\nnext  line "}, {"text": "clean"}]
    )
    assert out[0]["text"] == "fine day\n\nnext line"
    assert out[1]["text"] == "clean" and stats.changed == 1


def test_missing_drop_and_impute_are_counted() -> None:
    records = [{"text": "a", "lang": None}, {"text": " ", "lang": "de"}, {"text": "b", "lang": "fr"}]
    out, stats = run({"missing": {"fields": {"text": "drop", "lang": {"impute": "en"}}}}, records)
    assert [(r["text"], r["lang"]) for r in out] == [("a", "en"), ("b", "fr")]
    assert stats.dropped == {"missing_text": 1} and stats.extra["imputed"] == {"lang": 1}
    images, _ = run("missing", [{"image": b"x"}, {"image": None}])  # by default media rows need their media
    assert len(images) == 1
    with pytest.raises(ConfigError, match="use 'drop' or"):
        run({"missing": {"fields": {"x": {"fill": 1}}}}, [])


@pytest.mark.parametrize(
    ("options", "text", "reason"),
    [
        ({"min_chars": 10}, "short", "too_short"),
        ({"max_chars": 5}, "too long text", "too_long"),
        ({"min_words": 3}, "two words", "too_few_words"),
        ({}, "# # # # heading heading heading heading", "symbol_ratio"),
        ({}, "\n".join(["the same line again"] * 10), "repeated_lines"),
        ({}, "buy now " * 20, "repeated_2grams"),
        ({"gopher": True}, "a b c d e f g h i j k", "gopher_word_length"),
        ({"gopher": True}, "1234 5678 9012 3456 7890 1111 2222 3333 and the", "gopher_non_alphabetic"),
        ({"gopher": True}, "Quantum chromodynamics describes strong interactions", "gopher_stop_words"),
    ],
)
def test_quality_rules(options: dict, text: str, reason: str) -> None:
    out, stats = run({"filter": options}, [{"text": text}])
    assert out == [] and dict(stats.dropped) == {reason: 1}


def test_good_text_passes_every_rule() -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it runs back to the forest where it lives."
    out, _ = run({"filter": {"min_chars": 20, "min_words": 5, "gopher": True}}, [{"text": text}])
    assert len(out) == 1


@pytest.fixture
def no_digits_hook():
    from lamina.core.extensions import FILTER_HOOKS

    yield
    FILTER_HOOKS.remove("no-digits")  # this test's hook leaves with it


def test_filter_hooks_are_an_extension_point(no_digits_hook: None) -> None:
    def no_digits(flag: str = "digits"):
        return lambda record, field: flag if any(c.isdigit() for c in record[field]) else None

    register_filter_hook("no-digits", no_digits)
    out, stats = run({"hook": {"hook": "no-digits"}}, [{"text": "call 555"}, {"text": "hello"}])
    assert [r["text"] for r in out] == ["hello"] and stats.dropped == {"no-digits:digits": 1}
    out, stats = run(
        {"hook": {"hook": "regex", "options": {"pattern": r"\S+@\S+", "action": "redact"}}},
        [{"text": "mail me at a@b.org now"}],
    )
    assert out[0]["text"] == "mail me at [REDACTED] now" and stats.changed == 1
    with pytest.raises(ConfigError, match="no filter hook named 'pii'"):
        run({"hook": {"hook": "pii"}}, [])


def test_unknown_steps_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown step 'scrub'"):
        make_step("scrub")
    with pytest.raises(ConfigError, match="min_chars"):
        make_step({"filter": {"min_chars": -1}})
    with pytest.raises(ConfigError, match="multiple of bands"):
        make_step({"dedup": {"method": "near", "num_perm": 100, "bands": 64}})


def test_exact_and_near_dedup_keep_the_first() -> None:
    base = "the quick brown fox jumps over the lazy dog and then runs far away into the deep green forest"
    records = [
        {"text": base},
        {"text": base},
        {"text": base.replace("lazy", "sleepy").replace("deep", "dark")},
        {"text": "an entirely different sentence about markets and interest rates this year"},
    ]
    out, stats = run({"dedup": {"method": "exact"}}, records)
    assert len(out) == 3 and stats.dropped == {"exact_duplicate": 1}
    out, stats = run({"dedup": {"method": "near"}}, records)
    assert [r["text"] for r in out] == [base, records[3]["text"]]
    assert stats.dropped == {"exact_duplicate": 1, "near_duplicate": 1}
    assert stats.extra["duplicate_rate"] == 0.5


def test_near_dedup_precision_and_recall_on_real_text(shared_data: Path) -> None:
    rng = random.Random(1)
    docs = [
        json.loads(line)["text"]
        for line in open(shared_data / "sft/dolly-open_qa/dolly-open_qa.shared.jsonl")
    ]
    docs = [d for d in docs if len(d.split()) >= 60][:600]
    vocab = sorted({w for d in docs for w in d.split()})
    copies = []
    for i in rng.sample(range(len(docs)), 150):
        words = docs[i].split()
        for _ in range(int(len(words) * rng.uniform(0.05, 0.2))):
            words[rng.randrange(len(words))] = rng.choice(vocab)
        copies.append(" ".join(words))
    index = NearDuplicateIndex()
    flagged_originals = sum(index.check_and_add(d) is not None for d in docs)
    found = sum(index.check_and_add(c) is not None for c in copies)
    assert found / len(copies) >= 0.95
    assert flagged_originals <= len(docs) * 0.05  # real documents are rarely near-duplicates of each other
    assert shingles("A b, C!") == ["a b", "b c"]

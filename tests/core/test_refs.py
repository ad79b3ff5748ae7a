import pytest

from lamina.core.errors import InvalidReference
from lamina.core.refs import Ref, is_artifact_id, parse_ref, validate_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("shakes", Ref(name="shakes")),
        ("shakes@v3", Ref(name="shakes", version=3)),
        ("shakes@champion", Ref(name="shakes", alias="champion")),
        ("dataset_version:demo-text@v1", Ref(kind="dataset_version", name="demo-text", version=1)),
        ("ds-0123456789abcdef", Ref(artifact_id="ds-0123456789abcdef")),
        ("  my.model_2 ", Ref(name="my.model_2")),
    ],
)
def test_parse_ref(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected


def test_str_round_trips() -> None:
    for text in ("shakes", "shakes@v3", "shakes@champion", "run:train@v2", "mv-0123456789abcdef"):
        assert str(parse_ref(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "cannot parse"),
        ("a b", "cannot parse"),
        ("model@", "cannot parse"),
        ("widget:thing", "unknown artifact kind 'widget'"),
        ("shakes@v0", "versions start at v1"),
        ("-leading-dash", "cannot parse"),
    ],
)
def test_bad_refs_are_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse_ref(text)


def test_ids_and_names() -> None:
    assert is_artifact_id("mv-0123456789abcdef")
    assert not is_artifact_id("mv-0123")
    assert validate_name("ok-name_1.2") == "ok-name_1.2"
    with pytest.raises(InvalidReference):
        validate_name("no/slashes")
    with pytest.raises(InvalidReference):
        validate_name("x" * 129)

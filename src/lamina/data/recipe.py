"""Dataset recipes: ``source → steps → split`` (+ checks, tokenizer), as written under ``datasets:``
in lamina.yaml or built from ``lamina data ingest`` flags. The resolved recipe is stored in every
version, so a version can always be rebuilt from what it records.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lamina.core.errors import ConfigError
from lamina.core.settings import validation_summary
from lamina.data.records import OnError

DEFAULT_STEPS: list[str | dict[str, Any]] = ["normalize", "missing", {"dedup": {"method": "exact"}}]


class SplitSpec(BaseModel):
    """How rows are divided: ``fractions`` of the non-train splits; the rest is ``train``."""

    model_config = ConfigDict(extra="forbid")
    fractions: dict[str, float] = Field(default_factory=dict)
    by: Literal["random", "stratified", "group"] = "random"
    field: str | None = None  # the label (stratified) or group key (group)
    seed: int = 0
    shuffle: bool = True
    shuffle_window: int = Field(20_000, ge=1)  # rows shuffled together (all rows of smaller datasets)

    @field_validator("fractions")
    @classmethod
    def _valid_fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for name, frac in value.items():
            if name == "train":
                raise ValueError("'train' takes what the other splits leave; do not give it a fraction")
            if not 0 < frac < 1:
                raise ValueError(f"split {name!r} must be a fraction in (0, 1), got {frac}")
        if sum(value.values()) >= 1:
            raise ValueError(
                f"split fractions add up to {sum(value.values()):.3f}; they must leave rows for train"
            )
        return value

    @model_validator(mode="after")
    def _field_when_needed(self) -> SplitSpec:
        if self.by in ("stratified", "group") and not self.field:
            raise ValueError(
                f"split by {self.by} needs 'field' (the {'label' if self.by == 'stratified' else 'group'})"
            )
        return self


class Checks(BaseModel):
    """Conditions a build must meet, or it commits nothing."""

    model_config = ConfigDict(extra="forbid")
    min_rows: int = Field(1, ge=0)
    max_dup_rate: float | None = Field(None, ge=0, le=1)
    max_drop_rate: float | None = Field(None, ge=0, le=1)
    max_error_rate: float | None = Field(None, ge=0, le=1)


class TokenizerSpec(BaseModel):
    """Train a byte-level BPE tokenizer on the train split and save it with the version."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = Field(2000, ge=260)
    min_frequency: int = Field(2, ge=1)
    encode: bool = False  # also store input_ids per row


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | dict[str, Any]
    steps: list[str | dict[str, Any]] = Field(default_factory=lambda: list(DEFAULT_STEPS))
    split: SplitSpec = Field(default_factory=SplitSpec)
    checks: Checks = Field(default_factory=Checks)
    tokenizer: TokenizerSpec | None = None
    text_field: str = "text"
    on_error: OnError = "fail"
    batch_size: int = Field(1000, ge=1)
    seed: int = 0
    description: str | None = None
    # the data's license (SPDX id or words); governance reports list it for every model trained on it
    license: str | None = None


def parse_recipe(name: str, data: Any, where: str = "lamina.yaml") -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: datasets.{name} must be a mapping with at least 'source'")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = validation_summary(exc, f"datasets.{name}.")
        raise ConfigError(f"{where}: {problems}") from None

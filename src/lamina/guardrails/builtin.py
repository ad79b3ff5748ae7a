"""Importing this registers every built-in rail in ``lamina.core.extensions.RAILS``."""

from lamina.guardrails import heuristics, model_rails, pii, secrets, semantic  # noqa: F401

"""Guardrails (layer 4): rails that check what goes into a model and what comes out, in the serving
path and in the stream; the policy that chooses them; the classifiers behind the model-backed ones.

See docs/guardrails.md. ``rail`` and ``verdict`` define what a rail is; ``heuristics``, ``pii``,
``secrets``, ``semantic`` and ``model_rails`` are the built-in rails (registered by ``builtin``);
``policy`` reads ``rails:`` from lamina.yaml; ``guard`` runs rails on texts and streams;
``classifier``, ``finetuned``, ``training`` and ``report`` make and measure rail models.
"""

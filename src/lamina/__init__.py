"""Lamina: a layered generative-AI platform in one package.

Layers (see DESIGN.md): core -> data -> models -> training/evaluation/hub -> serving/gateway/rag/
guardrails -> monitoring -> console/cli. Importing ``lamina`` does no heavy work.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lamina")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

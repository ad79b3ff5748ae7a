"""Layer 4: inference (sampling, batching, streaming) and the OpenAI-compatible API."""

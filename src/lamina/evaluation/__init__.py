"""Layer 3: evaluation. Perplexity and samples for LMs, harness tasks, eval-report artifacts."""

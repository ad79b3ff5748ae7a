"""Layer 3: training. One loop (accelerate) shared by every model family, plus tracking."""

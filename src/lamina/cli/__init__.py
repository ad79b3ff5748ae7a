"""Layer 6: the ``lamina`` command. Thin: parse, call one layer's public functions, render."""

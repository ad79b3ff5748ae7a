"""The classifier-free guidance scale image sampling uses unless told otherwise, and that evaluation
scores (so a registered fid_clf measures what users get). A module of its own, without imports, so
the CLI and the API schema can show the default without importing torch.

On the quickstart's digits, 1.5 gave the lowest fid_clf at every training length tried (2.0 gains
class accuracy and loses recall; 1.0 is no guidance): docs/benchmarks.md, "Image training".
"""

DEFAULT_GUIDANCE = 1.5

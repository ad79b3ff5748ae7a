"""Layer 0: settings, the workspace, the catalog (metadata DB), the artifact store and lineage.

Everything above imports from here; this package imports nothing from other Lamina layers.
"""

"""Layer 1: data. Sources → cleaning → dedup → transforms → augmentation → splits → immutable
DatasetVersions with quality reports. ``build_dataset`` is the entry point; recipes live in
``lamina.yaml`` under ``datasets:``.
"""

"""The dataset gate decided purely: the Dataset registry, lineage, which volumes hold datasets."""

"""The dataset gate: approved datasets, their OMS digests, signatures, licences and lineage."""

"""The model gate: approved models, their OMS digests and signatures, re-verified on the node."""

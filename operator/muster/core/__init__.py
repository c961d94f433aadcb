"""Pure decision logic: parsers, grammars, digests and policy evaluation.

Nothing in this package performs I/O or knows about kopf or Kubernetes clients, so every
decision Muster makes can be tested in microseconds and reasoned about in isolation.
An import-linter contract in pyproject.toml keeps it that way.
"""

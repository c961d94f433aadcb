"""Argument parsers of the commands that start often, apart from their implementations.

The verifier init container runs ``muster model verify`` on every pod start and CI runs
``muster check`` and ``muster image verify`` on every change: these modules define their
arguments from light modules only, and their handlers import the implementation when they run.
"""

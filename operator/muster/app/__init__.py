"""The composition root: the areas Muster is built from, wired into one process."""

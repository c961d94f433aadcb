"""Signature formats: how evidence is found and what verifying it against an authority proves."""

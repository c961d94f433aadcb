"""The guards decided purely: the namespace guard and the trust-anchor policies."""

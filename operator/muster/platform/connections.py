"""The aiohttp connection pools Muster opens (to the apiserver, to registries).

Closing a TLS connection mid-reply (a request cancelled as its caller gives up, a watch stopped)
sends close_notify and waits up to 30 s for the peer's; asyncio closes the socket only then. An
event loop closed in that window (a command's end, a test's) leaves the socket to the garbage
collector, found as an unclosed transport. aiohttp's ``enable_cleanup_closed`` aborts such
sockets when the pool is closed (and two seconds on); aiohttp ignores it, with a
DeprecationWarning, from Python 3.12.8 and 3.13.1 (after python/cpython#118960), so it is asked
for only before those. The image runs Python 3.11. tests/integration/test_tls_connections.py
shows the leak and its absence.
"""

from __future__ import annotations

import sys
from ssl import SSLContext

import aiohttp
import aiohttp.abc

__all__ = ["NEEDS_CLEANUP_CLOSED", "tcp_connector"]

NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


def tcp_connector(
    *,
    ssl: SSLContext | bool,
    limit: int,
    limit_per_host: int = 0,
    resolver: aiohttp.abc.AbstractResolver | None = None,
) -> aiohttp.TCPConnector:
    """A pool whose TLS connections, once closed, leave no socket behind."""
    return aiohttp.TCPConnector(
        ssl=ssl,
        limit=limit,
        limit_per_host=limit_per_host,
        resolver=resolver,
        enable_cleanup_closed=NEEDS_CLEANUP_CLOSED,
    )

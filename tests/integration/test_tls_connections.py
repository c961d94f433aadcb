"""A TLS connection Muster closes mid-reply leaves no socket behind, to the apiserver or to a
registry (platform/connections.py).

Closing a TLS connection waits for the peer's close_notify; on Python before 3.12.8 asyncio
leaves the socket open when it never comes (python/cpython#118960). The real apiserver answers
within milliseconds, so the leak showed only now and then, when a test's event loop closed in
that window (the socket was found by the garbage collector during some later test). The peer
here is a TLS server that sends the start of a reply and then reads nothing more, so it never
answers the close: the one fault a real apiserver or registry cannot be made to produce on
demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import threading
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path

import pytest

from muster.kernel import pki
from muster.platform import connections, kubeapi, registries

pytestmark = pytest.mark.integration

PARTIAL_REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
)


class SilentTLSPeer:
    """Accepts TLS connections, answers each request with the first byte of a long body, and
    then neither writes nor reads until it is stopped."""

    def __init__(self, tmp_path: Path) -> None:
        ca = pki.new_ca("silent peer CA")
        leaf = pki.issue(ca, "127.0.0.1", hosts=["127.0.0.1"], server=True)
        self.ca_file = tmp_path / "ca.pem"
        self.ca_file.write_bytes(ca.cert_pem)
        (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
        (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.replied = threading.Event()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self._listener.settimeout(0.05)  # so that stopping is seen: closing does not wake accept
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                try:
                    raw, _ = self._listener.accept()
                except TimeoutError:
                    continue
                conn = self._context.wrap_socket(raw, server_side=True)
                self._held.append(conn)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                conn.sendall(PARTIAL_REPLY)
                self.replied.set()

    def __enter__(self) -> SilentTLSPeer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()
        for conn in self._held:
            conn.close()


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[SilentTLSPeer]:
    with SilentTLSPeer(tmp_path) as silent:
        yield silent


Read = Callable[[], Awaitable[object]]
Run = Callable[[], Coroutine[object, object, None]]


async def cancel_mid_reply(
    peer: SilentTLSPeer, read: Read, close: Callable[[], Awaitable[None]]
) -> None:
    """Start ``read``, cancel it once the peer has begun its reply, close the client."""
    task = asyncio.ensure_future(read())
    try:
        for _ in range(500):
            if peer.replied.is_set():
                break
            await asyncio.sleep(0.01)
        assert peer.replied.is_set(), "the peer was never asked"
        await asyncio.sleep(0.2)  # the client has read what was sent: nothing is in flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await close()


def leaked_sockets(run: Run) -> list[str]:
    """The sockets and transports left open by ``run()`` once its event loop is closed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(run())
        gc.collect()
    return [str(warning.message) for warning in caught if "unclosed" in str(warning.message)]


def kube_read(peer: SilentTLSPeer) -> Run:
    api = kubeapi.KubeApi(
        kubeapi.Credentials(host=f"https://127.0.0.1:{peer.port}", ca_file=str(peer.ca_file))
    )
    return lambda: cancel_mid_reply(peer, lambda: api.get("/api/v1/namespaces"), api.close)


def registry_read(peer: SilentTLSPeer) -> Run:
    client = registries.RegistryClient(
        registries.RegistrySettings(ca_file=peer.ca_file, allow_private=True, max_attempts=1)
    )
    return lambda: cancel_mid_reply(
        peer,
        lambda: client.manifest(f"127.0.0.1:{peer.port}", "acme/app", "v1"),
        client.close,
    )


READS = {"apiserver": kube_read, "registry": registry_read}


@pytest.mark.parametrize("client", sorted(READS))
def test_a_connection_closed_mid_reply_leaves_no_socket(peer: SilentTLSPeer, client: str) -> None:
    assert leaked_sockets(READS[client](peer)) == []


def test_without_the_clean_up_this_python_would_leak(
    peer: SilentTLSPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test above can fail: with aiohttp's clean-up off, the same read leaves the socket
    open on the Pythons that need it (and on later ones, nothing)."""
    needed = connections.NEEDS_CLEANUP_CLOSED
    monkeypatch.setattr(connections, "NEEDS_CLEANUP_CLOSED", False)
    leaked = leaked_sockets(kube_read(peer))
    assert bool(leaked) == needed, leaked

"""Where Muster may connect: image and model references come from users, so the registry client
must not become a way to reach internal services.

Two decisions, both pure:

- :func:`host_refusal`: may Muster speak to this registry host at all? The deny list (host globs)
  always wins; a non-empty allow list admits only the hosts it matches.
- :func:`address_refusal`: may a connection go to this IP address? Every address a host name
  resolves to is checked (and the connection pinned to the checked addresses, see
  ``platform/registries.py``), so DNS rebinding cannot swap an internal address in afterwards.

The rule for special addresses:

- private networks (RFC 1918, IPv6 ULA, carrier-grade NAT) are allowed unless
  ``private_networks`` is switched off: in-cluster and corporate registries live there, and a
  default that refused them would break most real installations;
- loopback, unspecified, multicast and other reserved addresses are refused unless
  ``allow_private`` is set or the host is *explicitly configured* (named in ``explicit`` — Muster
  passes its insecure registries and the allow-list entries that are exact host names, not globs);
- link-local addresses and cloud metadata endpoints are refused unless the host is explicitly
  configured: ``allow_private`` alone never opens them, because nothing a registry serves lives
  there and credentials for the whole node do.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress

__all__ = [
    "METADATA_ADDRESSES",
    "EgressPolicy",
    "address_refusal",
    "host_refusal",
    "is_explicit",
    "is_glob",
    "split_host",
]

# Instance metadata services: AWS/GCP/Azure/OpenStack/DigitalOcean (169.254.169.254), AWS over
# IPv6 (fd00:ec2::254), Alibaba (100.100.100.200), Oracle (192.0.0.192), Azure wire server.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "fd00:ec2::254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
    )
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclasses.dataclass(frozen=True)
class EgressPolicy:
    """Which registry hosts and addresses Muster may reach."""

    # Host globs (fnmatch, case-insensitive) matched against "host" and "host:port".
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # Loopback and reserved ranges for every host (never link-local or metadata).
    allow_private: bool = False
    # RFC 1918 / ULA / CGNAT registries (switch off where no registry should live there).
    private_networks: bool = True
    # Hosts ("host" or "host:port") the operator named explicitly: any address is theirs.
    explicit: frozenset[str] = frozenset()


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARACTERS for c in pattern)


def split_host(netloc: str) -> tuple[str, int | None]:
    """``registry:5000`` -> ("registry", 5000); ``[::1]:5000`` -> ("::1", 5000)."""
    netloc = netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, _, port_text = netloc.partition(":")
    else:
        host, port_text = netloc, ""
    port = int(port_text) if port_text.isdigit() and len(port_text) <= 5 else None
    return host.lower().rstrip("."), port


def _names(host: str, port: int | None) -> tuple[str, ...]:
    host = host.lower().rstrip(".")
    bracketed = f"[{host}]" if ":" in host else host
    if port is None:
        return (host,)
    return (host, f"{bracketed}:{port}", f"{host}:{port}")


def _matches(patterns: tuple[str, ...], host: str, port: int | None) -> str | None:
    names = _names(host, port)
    for pattern in patterns:
        lowered = pattern.lower()
        if any(fnmatch.fnmatchcase(name, lowered) for name in names):
            return pattern
    return None


def is_explicit(policy: EgressPolicy, host: str, port: int | None) -> bool:
    explicit = {entry.lower() for entry in policy.explicit}
    explicit |= {entry.lower() for entry in policy.allow if not is_glob(entry)}
    return any(name in explicit for name in _names(host, port))


def host_refusal(policy: EgressPolicy, host: str, port: int | None = None) -> str | None:
    """Why Muster must not speak to this host, or None when it may."""
    if not host:
        return "the registry host is empty"
    denied = _matches(policy.deny, host, port)
    if denied is not None:
        return f"registry host {host!r} matches the deny list entry {denied!r}"
    if policy.allow and _matches(policy.allow, host, port) is None:
        return f"registry host {host!r} is not on the registry allow list"
    return None


_PRIVATE_NETWORK = "a private address"
_CGNAT_NETWORK = "a carrier-grade NAT address"


def _classify(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[str, bool] | None:
    """(what the address is, whether allow_private opens it), or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _classify(mapped)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address", False
    if address.is_link_local:
        return "a link-local address", False
    if address.is_loopback:
        return "a loopback address", True
    if address.is_unspecified:
        return "the unspecified address", True
    if address.is_multicast:
        return "a multicast address", True
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return _CGNAT_NETWORK, True
    if address.is_private:
        return _PRIVATE_NETWORK, True
    if address.is_reserved or not address.is_global:
        return "a reserved address", True
    return None


def address_refusal(policy: EgressPolicy, host: str, port: int | None, address: str) -> str | None:
    """Why a connection to ``address`` (which ``host`` resolved to) must not be made, or None."""
    try:
        parsed = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return f"registry host {host!r} resolved to {address!r}, which is not an IP address"
    kind = _classify(parsed)
    if kind is None:
        return None
    what, opened_by_allow_private = kind
    if is_explicit(policy, host, port):
        return None
    if what in (_PRIVATE_NETWORK, _CGNAT_NETWORK) and policy.private_networks:
        return None
    if opened_by_allow_private and policy.allow_private:
        return None
    shown = host if host == str(parsed) else f"{host!r} ({parsed})"
    remedy = (
        "name the registry with --insecure-registry or --registry-allow, "
        "or pass --allow-private-registries"
        if opened_by_allow_private
        else "name the registry explicitly with --registry-allow if it really lives there"
    )
    return (
        f"registry host {shown} is {what}; Muster does not connect there unless told to: {remedy}"
    )

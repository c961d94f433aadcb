"""The egress rule: which registry hosts and addresses Muster may reach (pure logic)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.kernel import egress

pytestmark = pytest.mark.unit

DEFAULT = egress.EgressPolicy()


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("224.0.0.1", "multicast"),
    ],
)
def test_internal_addresses_are_refused_by_default(address: str, what: str) -> None:
    refusal = egress.address_refusal(DEFAULT, "registry.example", 443, address)
    assert refusal is not None
    assert what in refusal
    assert "registry.example" in refusal


@pytest.mark.parametrize("address", ["8.8.8.8", "140.82.112.3", "2606:4700::6810:84e5"])
def test_public_addresses_are_fine(address: str) -> None:
    assert egress.address_refusal(DEFAULT, "registry.example", 443, address) is None


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
    ],
)
def test_private_networks_are_allowed_by_default_and_can_be_refused(
    address: str, what: str
) -> None:
    # In-cluster and corporate registries live on private networks.
    assert egress.address_refusal(DEFAULT, "registry.example", 443, address) is None
    strict = egress.EgressPolicy(private_networks=False)
    refusal = egress.address_refusal(strict, "registry.example", 443, address)
    assert refusal is not None
    assert what in refusal


def test_allow_private_opens_private_ranges_but_never_metadata_or_link_local() -> None:
    policy = egress.EgressPolicy(allow_private=True)
    for address in ("127.0.0.1", "10.0.0.1", "::1", "fc00::5"):
        assert egress.address_refusal(policy, "r.example", 5000, address) is None
    for address in ("169.254.169.254", "169.254.1.1", "fe80::1"):
        assert egress.address_refusal(policy, "r.example", 80, address) is not None


def test_explicitly_configured_hosts_may_be_anywhere() -> None:
    # Insecure registries (host or host:port) and exact allow-list entries are explicit.
    policy = egress.EgressPolicy(
        explicit=frozenset({"127.0.0.1:5000", "registry.internal"}),
        allow=("metadata.internal", "*.example"),
    )
    assert egress.address_refusal(policy, "127.0.0.1", 5000, "127.0.0.1") is None
    assert egress.address_refusal(policy, "127.0.0.1", 5001, "127.0.0.1") is not None
    assert egress.address_refusal(policy, "registry.internal", 443, "10.0.0.7") is None
    assert egress.address_refusal(policy, "metadata.internal", 80, "169.254.169.254") is None
    # A glob is not an explicit naming: *.example still may not reach loopback.
    assert egress.address_refusal(policy, "a.example", 443, "127.0.0.1") is not None


def test_deny_list_wins_and_allow_list_restricts() -> None:
    policy = egress.EgressPolicy(allow=("*.corp.example", "ghcr.io"), deny=("evil.corp.example",))
    assert egress.host_refusal(policy, "ghcr.io") is None
    assert egress.host_refusal(policy, "REGISTRY.corp.example", 5000) is None
    refused = egress.host_refusal(policy, "evil.corp.example")
    assert refused is not None
    assert "deny list" in refused
    not_listed = egress.host_refusal(policy, "docker.io")
    assert not_listed is not None
    assert "allow list" in not_listed
    # Entries may carry a port.
    ported = egress.EgressPolicy(deny=("registry.example:5000",))
    assert egress.host_refusal(ported, "registry.example", 5000) is not None
    assert egress.host_refusal(ported, "registry.example", 443) is None
    assert egress.host_refusal(DEFAULT, "") is not None


def test_split_host() -> None:
    assert egress.split_host("Registry.Example:5000") == ("registry.example", 5000)
    assert egress.split_host("[::1]:5000") == ("::1", 5000)
    assert egress.split_host("user:pw@host.example") == ("host.example", None)
    assert egress.split_host("host.example.") == ("host.example", None)
    assert egress.split_host("::1") == ("::1", None)


def test_a_resolver_answer_that_is_not_an_address_is_refused() -> None:
    refusal = egress.address_refusal(DEFAULT, "r.example", 443, "not-an-ip")
    assert refusal is not None
    assert "not an IP address" in refusal


@settings(max_examples=200, deadline=200)
@given(st.ip_addresses())
def test_every_address_gets_an_answer_and_only_global_ones_pass(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    strict = egress.EgressPolicy(private_networks=False)
    refusal = egress.address_refusal(strict, "r.example", 443, str(address))
    if refusal is None:
        assert address.is_global
        assert not address.is_link_local
        assert address not in egress.METADATA_ADDRESSES


@settings(max_examples=200, deadline=200)
@given(st.text(max_size=80), st.lists(st.text(max_size=20), max_size=4))
def test_host_decisions_never_crash(host: str, patterns: list[str]) -> None:
    policy = egress.EgressPolicy(allow=tuple(patterns), deny=tuple(patterns[:1]))
    name, port = egress.split_host(host)
    answer = egress.host_refusal(policy, name, port)
    assert answer is None or isinstance(answer, str)

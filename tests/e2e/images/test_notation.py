"""Notation signatures at admission, through the real apiserver.

Images are pushed to the test registry with the OCI 1.1 referrers API and signed with the
Notary Project's own libraries (``tools/notationsign``, certificates from a test CA); the trust
store is a ConfigMap; the ImagePolicy's authority is of kind ``notation``. An operator of this
module's own judges the namespaces it labels.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client

from muster.app import localoperator
from muster.platform import controlplane
from tests import kubeclients, notary, peers
from tests.e2e.images.test_image_admission import compiled_condition, create_policy, delete_policy
from tests.e2e.suites import suite_operator

pytestmark = pytest.mark.e2e

LABEL = "muster-e2e.dev/notation"
STORE_NAMESPACE = "notation-trust"
IDENTITY = "x509.subject: C=US, ST=WA, O=Muster Tests, CN=image-signer"

_T = TypeVar("_T")


def eventually(probe: Callable[[], _T | None], what: str, timeout: float = 30) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def notation_operator(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[localoperator.LocalOperator]:
    def select(hook: dict[str, Any]) -> None:
        mode = hook["clientConfig"]["url"].rsplit("/", 1)[-1]
        hook["namespaceSelector"] = {"matchLabels": {LABEL: mode}}

    with suite_operator(
        control_plane,
        configuration="notation-e2e.muster.dev",
        own_namespace="muster-notation-e2e",
        workdir=tmp_path_factory.mktemp("muster-notation"),
        select=select,
        extra_args=(f"--insecure-registry={referrers_registry.host}",),
    ) as operator:
        yield operator


@pytest.fixture(scope="module")
def ca() -> notary.Issued:
    return notary.ca()


@pytest.fixture(scope="module")
def tsa_root() -> notary.Issued:
    return notary.ca("C=US,ST=WA,O=Muster Tests,CN=e2e TSA Root")


def _trust_store(plane: controlplane.ControlPlane, name: str, pem: bytes) -> None:
    with kubeclients.admin(plane) as api:
        core = client.CoreV1Api(api)
        with contextlib.suppress(client.ApiException):
            core.create_namespace({"metadata": {"name": STORE_NAMESPACE}})
        core.create_namespaced_config_map(
            STORE_NAMESPACE, {"metadata": {"name": name}, "data": {"ca.crt": pem.decode()}}
        )


@pytest.fixture(scope="module")
def policies(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    tsa_root: notary.Issued,
    notation_operator: localoperator.LocalOperator,
) -> Iterator[dict[str, str]]:
    """A strict policy for notation/strict/**, an audit one for notation/audit/**, and a strict
    one with a TSA trust store for notation/stamped/**."""
    del notation_operator
    run = uuid.uuid4().hex[:6]
    store = f"notary-ca-{run}"
    _trust_store(control_plane, store, notary.pem(ca.certificate))
    _trust_store(control_plane, f"tsa-{run}", notary.pem(tsa_root.certificate))
    names = {}
    for level in ("strict", "audit", "stamped"):
        name = f"notation-{level}-{run}"
        tsa = [{"namespace": STORE_NAMESPACE, "name": f"tsa-{run}"}] if level == "stamped" else []
        create_policy(
            control_plane,
            name,
            {
                "images": [f"{referrers_registry.host}/notation/{level}/**"],
                "namespaceSelector": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
                "authorities": [
                    {
                        "name": "release-ca",
                        "notation": {
                            "trustStores": [{"namespace": STORE_NAMESPACE, "name": store}],
                            "tsaTrustStores": tsa,
                            "trustedIdentities": [IDENTITY],
                            "signatureVerification": {
                                "level": "strict" if level == "stamped" else level
                            },
                        },
                    }
                ],
            },
        )
        names[level] = name
    for name in names.values():
        condition = compiled_condition(control_plane, name)
        assert condition["status"] == "True", condition
    yield names
    for name in names.values():
        delete_policy(control_plane, name)


def _pod(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}"},
        "spec": {"containers": [{"name": "main", "image": image}]},
    }


def _namespace(plane: controlplane.ControlPlane) -> str:
    return kubeclients.namespace(plane, "notation", {LABEL: "enforce"})


def _create(plane: controlplane.ControlPlane, namespace: str, image: str) -> tuple[Any, list[str]]:
    """Create a pod; the response and the apiserver's Warning headers."""
    with kubeclients.admin(plane) as api:
        created, _, headers = client.CoreV1Api(api).create_namespaced_pod_with_http_info(
            namespace, _pod(image)
        )
    warnings = [value for key, value in headers.items() if key.lower() == "warning"]
    return created, warnings


def _denied(plane: controlplane.ControlPlane, image: str) -> str:
    with pytest.raises(client.ApiException) as raised:
        _create(plane, _namespace(plane), image)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body)["message"])


def _image(registry: peers.Registry, repository: str, workdir: Path) -> tuple[str, str]:
    """A fresh image: its tag reference and its digest reference."""
    digest = peers.push_image(registry, repository, "v1", workdir=workdir)
    return registry.ref(repository, "v1"), f"{registry.host}/{repository}@{digest}"


def test_a_trusted_notation_signature_admits_the_pod(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/strict/trusted", tmp_path)
    notary.sign(notary.signer(ca), tmp_path, envelope="jws", reference=pinned)
    created, warnings = _create(control_plane, _namespace(control_plane), image)
    assert created.spec.containers[0].image == f"{image}@{pinned.split('@')[1]}"
    assert warnings == []


def test_a_cose_signature_admits_the_pod_too(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/strict/cose", tmp_path)
    notary.sign(notary.signer(ca), tmp_path, envelope="cose", reference=pinned)
    created, _ = _create(control_plane, _namespace(control_plane), image)
    assert created.spec.containers[0].image.endswith(pinned.split("@")[1])


def test_an_untrusted_ca_is_denied(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/strict/untrusted", tmp_path)
    stranger = notary.ca("C=US,ST=WA,O=Muster Tests,CN=Somebody Else's Root")
    notary.sign(notary.signer(stranger), tmp_path, envelope="cose", reference=pinned)
    message = _denied(control_plane, image)
    assert f"ImagePolicy '{policies['strict']}'" in message
    assert "Notation signature 1: certificate chain of" in message
    assert "does not lead to a CA in trust store(s) notation-trust/notary-ca-" in message


def test_an_expired_certificate_is_denied(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/strict/expired", tmp_path)
    january = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    expired = notary.signer(ca, not_before=january, not_after=january + datetime.timedelta(days=31))
    notary.sign(
        expired,
        tmp_path,
        reference=pinned,
        signing_time=january + datetime.timedelta(days=14),
    )
    message = _denied(control_plane, image)
    assert "expired at 2026-02-01T00:00:00+00:00" in message
    assert "no verified timestamp" in message


def test_a_wrong_identity_is_denied(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/strict/identity", tmp_path)
    other = notary.signer(ca, "C=US,ST=WA,O=Muster Tests,CN=someone-else")
    notary.sign(other, tmp_path, reference=pinned)
    message = _denied(control_plane, image)
    assert "signing certificate subject C=US,ST=WA,O=Muster Tests,CN=someone-else" in message
    assert "is none of the trusted identities" in message


def test_a_tampered_envelope_is_denied(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    """A real signature of one image, its payload rewritten to name another, pushed as the
    other's Notation signature: the signature no longer verifies."""
    _, signed = _image(referrers_registry, "notation/strict/original", tmp_path)
    image, target = _image(referrers_registry, "notation/strict/tampered", tmp_path)
    envelope = tmp_path / "signed.jws"
    notary.sign(notary.signer(ca), tmp_path, reference=signed, out=envelope)
    document = json.loads(envelope.read_bytes())
    payload = base64.urlsafe_b64decode(document["payload"] + "==")
    swapped = payload.replace(signed.split("@")[1].encode(), target.split("@")[1].encode())
    assert swapped != payload
    document["payload"] = base64.urlsafe_b64encode(swapped).rstrip(b"=").decode()
    tampered = tmp_path / "tampered.jws"
    tampered.write_text(json.dumps(document))
    notary.push_envelope(target, tampered)
    message = _denied(control_plane, image)
    assert "JWS signature does not verify with the signing certificate" in message


def test_audit_admits_an_untrusted_signature_with_a_warning(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    image, pinned = _image(referrers_registry, "notation/audit/untrusted", tmp_path)
    stranger = notary.ca("C=US,ST=WA,O=Muster Tests,CN=Audit Stranger Root")
    notary.sign(notary.signer(stranger), tmp_path, reference=pinned)
    namespace = _namespace(control_plane)
    created, warnings = _create(control_plane, namespace, image)
    assert created.spec.containers[0].image.endswith(pinned.split("@")[1])
    (warning,) = [w for w in warnings if "its Notation level only logs" in w]
    assert f"ImagePolicy '{policies['audit']}'" in warning
    assert "release-ca: authenticity: certificate chain of" in warning


def test_a_trusted_timestamp_admits_a_certificate_that_expired_since(
    control_plane: controlplane.ControlPlane,
    referrers_registry: peers.Registry,
    ca: notary.Issued,
    tsa_root: notary.Issued,
    policies: dict[str, str],
    tmp_path: Path,
) -> None:
    """Signed and timestamped in January by a certificate valid in January only: the policy
    with the TSA trust store admits it, the one without refuses the same signature."""
    january = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    expired = notary.signer(ca, not_before=january, not_after=january + datetime.timedelta(days=31))
    timestamper = notary.tsa(tsa_root)

    def sign(reference: str) -> None:
        notary.sign(
            expired,
            tmp_path,
            reference=reference,
            signing_time=january + datetime.timedelta(days=14),
            timestamper=timestamper,
        )

    image, pinned = _image(referrers_registry, "notation/stamped/app", tmp_path)
    sign(pinned)
    created, warnings = _create(control_plane, _namespace(control_plane), image)
    assert created.spec.containers[0].image.endswith(pinned.split("@")[1])
    assert warnings == []
    image, pinned = _image(referrers_registry, "notation/strict/stamped", tmp_path)
    sign(pinned)
    assert "no verified timestamp" in _denied(control_plane, image)

"""Signed images whose registry lies, through the real apiserver and a real ``muster run``.

A signature is only as good as the check that it covers the very bytes the node will run.
Each case below starts from an image validly signed by a trusted key and changes one thing the
registry serves; each must be denied in enforce mode with the one reason that fits (seen in the
message and in ``muster_violations_total``). Where the fault is the registry's answer, the same
image is admitted once the answers are true again: the signature was good, only the served
content was not.

- the signature bundle (the signed payload) is served with other bytes than its digest;
- the bundle's referrer manifest is served with other bytes than its digest;
- a tag is served with a manifest that is not the one whose digest the registry claims;
- a genuine signature of another image is attached to an unsigned one: a cosign v3 bundle in a
  referrer manifest rewritten to name the unsigned image (a registry holds it, consistent
  byte for byte: only the signed statement still names the other digest), and a cosign v2
  signature copied under the unsigned image's ``.sig`` tag.
"""

from __future__ import annotations

import collections
import hashlib
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from muster.app import localoperator
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.e2e.security.conftest import SELECT_LABEL, FaultProxy, signed_image_policy
from tests.integration.images.conftest import Signer, sign_v2, sign_v3

pytestmark = pytest.mark.e2e

REPOSITORY = "corrupted/app"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- the registry's own HTTP API (what a registry that lies would hold) -----------------------


def _registry(
    registry: peers.Registry, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(
        f"http://{registry.host}/v2/{REPOSITORY}/{path}", data=body, method=method, headers=headers
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read(), dict(answer.headers)


def _manifest(registry: peers.Registry, reference: str) -> tuple[bytes, str]:
    accept = ", ".join(
        (
            OCI_INDEX,
            OCI_MANIFEST,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        )
    )
    body, headers = _registry(registry, "GET", f"manifests/{reference}", Accept=accept)
    return body, headers["Content-Type"].split(";")[0]


def _put_manifest(registry: peers.Registry, reference: str, body: bytes, media_type: str) -> None:
    _registry(registry, "PUT", f"manifests/{reference}", body, **{"Content-Type": media_type})


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def reattach_v3_signature(registry: peers.Registry, signed: str, unsigned: str) -> None:
    """Attach ``signed``'s cosign v3 bundle to ``unsigned``: a referrer manifest naming
    ``unsigned`` as its subject, under ``unsigned``'s fallback tag. Every digest the registry
    serves then matches its bytes; only the signed statement inside still names ``signed``."""
    index_body, _ = _manifest(registry, "sha256-" + signed.removeprefix("sha256:"))
    index = json.loads(index_body)
    (descriptor,) = index["manifests"]
    referrer_body, referrer_type = _manifest(registry, descriptor["digest"])
    referrer = json.loads(referrer_body)
    target_body, target_type = _manifest(registry, unsigned)
    referrer["subject"] = {"mediaType": target_type, "digest": unsigned, "size": len(target_body)}
    forged = json.dumps(referrer, separators=(",", ":")).encode()
    _put_manifest(registry, _sha256(forged), forged, referrer_type)
    index["manifests"] = [{**descriptor, "digest": _sha256(forged), "size": len(forged)}]
    _put_manifest(
        registry,
        "sha256-" + unsigned.removeprefix("sha256:"),
        json.dumps(index, separators=(",", ":")).encode(),
        OCI_INDEX,
    )


def copy_v2_signature(registry: peers.Registry, signed: str, unsigned: str) -> None:
    """Copy ``signed``'s cosign v2 ``.sig`` manifest under ``unsigned``'s ``.sig`` tag."""
    body, media_type = _manifest(registry, "sha256-" + signed.removeprefix("sha256:") + ".sig")
    _put_manifest(registry, "sha256-" + unsigned.removeprefix("sha256:") + ".sig", body, media_type)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    fault_proxy: FaultProxy,
    signers: dict[str, Signer],
) -> Iterator[str]:
    images = f"{fault_proxy.host}/{REPOSITORY}"
    with signed_image_policy(control_plane, "corrupted", images, signers["alice"]) as name:
        yield name


@pytest.fixture
def proxy(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    yield fault_proxy
    fault_proxy.fault = None
    fault_proxy.only = None


def _push(registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory, tag: str) -> str:
    return peers.push_image(
        registry,
        REPOSITORY,
        tag,
        workdir=tmp_path_factory.mktemp("corrupted"),
        env={"CASE": f"{tag}-{uuid.uuid4().hex}"},  # a digest never judged before
    )


# -- what the apiserver answers -------------------------------------------------------------


def create(plane: controlplane.ControlPlane, namespace: str, image: str) -> tuple[int, str]:
    with kubeclients.admin(plane) as api:
        try:
            client.CoreV1Api(api).create_namespaced_pod(
                namespace, kubeclients.pod(f"c-{uuid.uuid4().hex[:8]}", image)
            )
        except client.ApiException as error:
            return error.status, str(json.loads(error.body or "{}").get("message", ""))
    return 201, ""


def violations(operator: localoperator.LocalOperator, namespace: str) -> dict[str, int]:
    """``muster_violations_total`` of ``namespace`` by reason."""
    with urllib.request.urlopen(operator.metrics_url, timeout=5) as answer:
        text = answer.read().decode()
    found: collections.Counter[str] = collections.Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "muster_violations_total"
                and sample.labels.get("resource_namespace") == namespace
            ):
                found[sample.labels["reason"]] += int(sample.value)
    return dict(found)


def denied_for(
    plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    image: str,
    reason: str,
    *words: str,
) -> str:
    """Creating a pod of ``image`` in a fresh enforcing namespace is denied for ``reason``
    alone, the message holding ``words``; returns the namespace."""
    namespace = kubeclients.namespace(plane, "corrupted", {SELECT_LABEL: "enforce"})
    status, message = create(plane, namespace, image)
    assert status == 403, f"wrong allow of {image}"
    assert message.startswith("admission webhook") and "muster" in message, message
    for word in words:
        assert word in message, message
    assert violations(operator, namespace) == {reason: 1}, message
    return namespace


def admitted_again(plane: controlplane.ControlPlane, namespace: str, image: str) -> None:
    """The same image is admitted once the registry tells the truth (a failure is cached
    briefly, so this may take a few seconds)."""
    deadline = time.monotonic() + 30
    while (answer := create(plane, namespace, image))[0] != 201:
        assert time.monotonic() < deadline, f"never admitted once the answers were true: {answer}"
        time.sleep(1)


# -- the cases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("only", "words"),
    [
        # The bundle blob: the signed payload itself.
        pytest.param("/blobs/", ("no signature found", "does not match"), id="bundle"),
        # The referrer manifest that carries the bundle, fetched by its digest.
        pytest.param("/manifests/sha256:", ("no signature found", "does not match"), id="referrer"),
    ],
)
def test_a_signed_image_whose_signature_is_served_corrupted_is_denied(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    registry: peers.Registry,
    proxy: FaultProxy,
    signers: dict[str, Signer],
    policy: str,
    tmp_path_factory: pytest.TempPathFactory,
    only: str,
    words: tuple[str, ...],
) -> None:
    digest = _push(registry, tmp_path_factory, f"sig-{uuid.uuid4().hex[:6]}")
    sign_v3(signers["alice"], f"{registry.host}/{REPOSITORY}@{digest}")
    image = f"{proxy.host}/{REPOSITORY}@{digest}"
    proxy.only, proxy.fault = only, "corrupt"
    faulted = proxy.faulted
    namespace = denied_for(
        control_plane, security_operator, image, "SignatureInvalid", policy, *words
    )
    assert proxy.faulted > faulted, "the corruption was never served"
    proxy.fault = None
    admitted_again(control_plane, namespace, image)


def test_a_signed_tag_served_with_another_manifest_is_denied(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    registry: peers.Registry,
    proxy: FaultProxy,
    signers: dict[str, Signer],
    policy: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tag = f"tag-{uuid.uuid4().hex[:6]}"
    digest = _push(registry, tmp_path_factory, tag)
    sign_v3(signers["alice"], f"{registry.host}/{REPOSITORY}@{digest}")
    image = f"{proxy.host}/{REPOSITORY}:{tag}"
    # The tag's manifest comes back changed, under the digest the registry claims for it.
    proxy.only, proxy.fault = f"/manifests/{tag}", "corrupt"
    namespace = kubeclients.namespace(control_plane, "corrupted", {SELECT_LABEL: "enforce"})
    status, message = create(control_plane, namespace, image)
    assert status == 403, f"wrong allow of {image}"
    assert f"registry claims {digest} but content is sha256:" in message, message
    # Not resolved, so not pinned either: the mutation could not pin it, validation says both.
    assert violations(security_operator, namespace) == {
        "ImageNotResolved": 1,
        "ImageNotPinned": 1,
    }, message
    proxy.fault = None
    admitted_again(control_plane, namespace, image)


@pytest.mark.parametrize(
    ("sign", "attach", "complaint"),
    [
        pytest.param(
            sign_v3,
            reattach_v3_signature,
            "in-toto statement has no subject with digest {unsigned}",
            id="v3",
        ),
        pytest.param(
            sign_v2,
            copy_v2_signature,
            "payload signs {signed}, not the image digest {unsigned}",
            id="v2",
        ),
    ],
)
def test_another_images_signature_does_not_sign_this_one(
    control_plane: controlplane.ControlPlane,
    security_operator: localoperator.LocalOperator,
    registry: peers.Registry,
    proxy: FaultProxy,
    signers: dict[str, Signer],
    policy: str,
    tmp_path_factory: pytest.TempPathFactory,
    sign: Callable[[Signer, str], None],
    attach: Callable[[peers.Registry, str, str], None],
    complaint: str,
) -> None:
    signed = _push(registry, tmp_path_factory, f"signed-{uuid.uuid4().hex[:6]}")
    unsigned = _push(registry, tmp_path_factory, f"unsigned-{uuid.uuid4().hex[:6]}")
    sign(signers["alice"], f"{registry.host}/{REPOSITORY}@{signed}")
    attach(registry, signed, unsigned)
    # The signed image itself passes: the signature is genuine.
    namespace = kubeclients.namespace(control_plane, "corrupted", {SELECT_LABEL: "enforce"})
    assert create(control_plane, namespace, f"{proxy.host}/{REPOSITORY}@{signed}")[0] == 201
    denied_for(
        control_plane,
        security_operator,
        f"{proxy.host}/{REPOSITORY}@{unsigned}",
        "SignatureNotTrusted",
        policy,
        complaint.format(signed=signed, unsigned=unsigned),
    )

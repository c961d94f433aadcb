"""Property tests: malformed payloads, manifests, bundles and keys never pass and never crash.

Every parser either returns its result or raises Muster's own error type; a verification
passes only when what it passed is exactly what was signed.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from muster.signatures.rules import authorities, bundles, cosign, keys, proofs, trust
from tests.paths import fixture
from tests.unit.signatures import factories
from tests.unit.signatures.conftest import ALICE_DIGEST, connaisseur_key, signature_manifest

pytestmark = pytest.mark.unit

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

# Payload-shaped documents: the right keys with arbitrary or plausible values.
digests = st.sampled_from(
    [factories.IMAGE_DIGEST, factories.OTHER_DIGEST, "sha256:1", ""]
) | st.text(max_size=80)
payload_documents = st.fixed_dictionaries(
    {
        "critical": st.fixed_dictionaries(
            {},
            optional={
                "identity": st.fixed_dictionaries(
                    {},
                    optional={
                        "docker-reference": st.sampled_from(["a/b", "", "UPPER"]) | json_values
                    },
                )
                | json_values,
                "image": st.fixed_dictionaries(
                    {}, optional={"docker-manifest-digest": digests | json_values}
                )
                | json_values,
                "type": st.sampled_from([cosign.SIMPLE_SIGNING_TYPE, "other"]) | json_values,
            },
        )
        | json_values
    },
    optional={"optional": json_values},
)


@FAST
@given(st.binary(max_size=512))
def test_payload_parser_on_bytes(data: bytes) -> None:
    # Random bytes are never a simple-signing payload: refused, and never with another error.
    with pytest.raises(proofs.Rejected):
        cosign.parse_payload(data)


@FAST
@given(payload_documents)
def test_signed_payloads_count_only_for_their_digest(document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    signature = factories.sign(factories.private_key("p256"), body)
    manifest, blobs = factories.manifest((body, signature))
    authority = authorities.KeyAuthority(
        name="k", key=keys.load(factories.public_pem(factories.private_key("p256")))
    )
    try:
        verified = cosign.verify(
            manifest, blobs, digest=factories.IMAGE_DIGEST, authority=authority
        )
    except proofs.Rejected:
        return
    critical = document["critical"]
    assert critical["type"] == cosign.SIMPLE_SIGNING_TYPE
    assert critical["image"]["docker-manifest-digest"] == factories.IMAGE_DIGEST
    assert verified.digest == factories.IMAGE_DIGEST


@FAST
@given(json_values, st.dictionaries(st.text(max_size=80), st.binary(max_size=64), max_size=3))
def test_manifest_parser_on_arbitrary_json(document: Any, blobs: dict[str, bytes]) -> None:
    try:
        layers = cosign.parse_manifest(
            document if isinstance(document, dict) else json.dumps(document), blobs
        )
    except proofs.Rejected:
        return
    assert all(layer.problem for layer in layers)  # nothing here can be a real signature


ALICE = signature_manifest(ALICE_DIGEST)
ALICE_LAYER: dict[str, Any] = ALICE.manifest["layers"][0]  # type: ignore[index]


@FAST
@given(
    st.sampled_from(["mediaType", "digest", "size", "annotations"]),
    json_values,
)
def test_mutated_alice_layers_never_pass(field: str, value: Any) -> None:
    manifest = copy.deepcopy(ALICE.manifest)
    manifest["layers"][0][field] = value  # type: ignore[index]
    authority = authorities.KeyAuthority(name="alice", key=connaisseur_key("alice"))
    try:
        cosign.verify(manifest, ALICE.blobs, digest=ALICE_DIGEST, authority=authority)
    except proofs.Rejected:
        return
    # Only a value equal to the original may pass (e.g. the same size).
    assert value == ALICE_LAYER[field]


@FAST
@given(st.integers(min_value=0, max_value=70 * 8 - 1))
def test_every_bit_of_alices_signature_matters(bit: int) -> None:
    signature = bytearray(base64.b64decode(ALICE_LAYER["annotations"][cosign.SIGNATURE_ANNOTATION]))
    if bit // 8 >= len(signature):
        return
    signature[bit // 8] ^= 1 << (bit % 8)
    manifest: dict[str, Any] = copy.deepcopy(ALICE.manifest)
    encoded = base64.b64encode(signature).decode()
    manifest["layers"][0]["annotations"][cosign.SIGNATURE_ANNOTATION] = encoded
    authority = authorities.KeyAuthority(name="alice", key=connaisseur_key("alice"))
    with pytest.raises(proofs.Rejected):
        cosign.verify(manifest, ALICE.blobs, digest=ALICE_DIGEST, authority=authority)


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_key_loader_never_crashes(data: bytes | str) -> None:
    # Random bytes or text are never a public key: refused, and never with another error.
    with pytest.raises(keys.InvalidKey):
        keys.load(data)


# --- bundles ---------------------------------------------------------------------------------

HAPPY = fixture(
    "sigstore",
    "conformance",
    "bundle-verify",
    "happy-path-v0.3-new-mediaType",
    "bundle.sigstore.json",
)
ARTIFACT = bundles.Artifact.from_bytes(fixture("sigstore", "conformance", "a.txt").read_bytes())
IDENTITY = authorities.Identity(
    issuer="https://token.actions.githubusercontent.com",
    subject_regexp="https://github.com/sigstore-conformance/.*",
)
PRODUCTION = trust.load_trusted_root(
    fixture(
        "sigstore", "sigstore-python", "embedded-trust", "prod", "trusted_root.json"
    ).read_bytes()
)


def test_the_happy_bundle_really_verifies() -> None:
    # The mutation tests below are only meaningful if the unmutated bundle passes.
    assert bundles.verify_artifact(
        HAPPY.read_bytes(), ARTIFACT, identities=(IDENTITY,), trusted_root=PRODUCTION
    )


@FAST
@given(st.binary(max_size=400) | json_values.map(lambda v: json.dumps(v).encode()))
def test_bundle_verification_on_garbage(data: bytes) -> None:
    key = keys.load(factories.public_pem(factories.private_key("p256")))
    with pytest.raises(proofs.Rejected):
        bundles.verify_artifact(data, ARTIFACT, identities=(IDENTITY,), trusted_root=PRODUCTION)
    with pytest.raises(proofs.Rejected):
        bundles.verify_artifact(data, ARTIFACT, key=key, trusted_root=PRODUCTION)
    with pytest.raises(proofs.Rejected):
        bundles.verify_image(
            data, digest=factories.IMAGE_DIGEST, authority=authorities.KeyAuthority("k", key)
        )


def _at(document: dict[str, Any], path: tuple[str | int, ...]) -> tuple[Any, str | int]:
    node: Any = document
    for step in path[:-1]:
        node = node[step]
    return node, path[-1]


# Base64 fields of the happy bundle whose every bit is covered by a signature or a proof.
SIGNED_FIELDS: list[tuple[str | int, ...]] = [
    ("messageSignature", "signature"),
    ("messageSignature", "messageDigest", "digest"),
    ("verificationMaterial", "certificate", "rawBytes"),
    ("verificationMaterial", "tlogEntries", 0, "canonicalizedBody"),
    ("verificationMaterial", "tlogEntries", 0, "inclusionProof", "rootHash"),
    ("verificationMaterial", "tlogEntries", 0, "inclusionProof", "hashes", 0),
    ("verificationMaterial", "tlogEntries", 0, "inclusionPromise", "signedEntryTimestamp"),
    ("verificationMaterial", "tlogEntries", 0, "logId", "keyId"),
]


@FAST
@given(
    st.sampled_from(SIGNED_FIELDS), st.integers(min_value=0, max_value=10_000), st.integers(0, 7)
)
# Found by this test: a flipped bit in the certificate's version made cryptography raise
# InvalidVersion, which escaped as a crash instead of a rejection.
@example(("verificationMaterial", "certificate", "rawBytes"), 12, 0)
def test_flipping_any_signed_bit_of_a_bundle_fails(
    path: tuple[str | int, ...], position: int, bit: int
) -> None:
    document = json.loads(HAPPY.read_bytes())
    node, last = _at(document, path)
    raw = bytearray(base64.b64decode(node[last]))
    raw[position % len(raw)] ^= 1 << bit
    node[last] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(proofs.Rejected):
        bundles.verify_artifact(
            json.dumps(document), ARTIFACT, identities=(IDENTITY,), trusted_root=PRODUCTION
        )


@FAST
@given(st.sampled_from(SIGNED_FIELDS[:1] + SIGNED_FIELDS[3:]), json_values)
def test_replacing_bundle_fields_fails(path: tuple[str | int, ...], value: Any) -> None:
    document = json.loads(HAPPY.read_bytes())
    node, last = _at(document, path)
    if node[last] == value:
        return
    node[last] = value
    with pytest.raises(proofs.Rejected):
        bundles.verify_artifact(
            json.dumps(document), ARTIFACT, identities=(IDENTITY,), trusted_root=PRODUCTION
        )


@FAST
@given(json_values, st.sampled_from(["payload", "payloadType", "signatures"]))
def test_key_bundle_envelopes_with_arbitrary_parts(value: Any, field: str) -> None:
    document = json.loads(
        factories.key_bundle(factories.private_key("p256"), factories.statement())
    )
    document["dsseEnvelope"][field] = value
    key = keys.load(factories.public_pem(factories.private_key("p256")))
    with pytest.raises(proofs.Rejected):
        bundles.verify_image(
            json.dumps(document),
            digest=factories.IMAGE_DIGEST,
            authority=authorities.KeyAuthority("k", key),
        )


@FAST
@given(json_values)
def test_statements_with_arbitrary_subjects_pass_only_for_the_digest(subjects: Any) -> None:
    body = json.dumps(
        {"_type": "x", "subject": subjects, "predicateType": bundles.COSIGN_SIGN_PREDICATE}
    ).encode()
    bundle = factories.key_bundle(factories.private_key("p256"), body)
    key = keys.load(factories.public_pem(factories.private_key("p256")))
    try:
        bundles.verify_image(
            bundle, digest=factories.IMAGE_DIGEST, authority=authorities.KeyAuthority("k", key)
        )
    except proofs.Rejected:
        return
    hexdigest = factories.IMAGE_DIGEST.partition(":")[2]
    assert any(
        isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and s["digest"].get("sha256") == hexdigest
        for s in subjects
    )

"""Inputs the atheris harnesses (``fuzz/``) found, kept as plain unit tests."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from muster.kernel import findings, references, reviews, subjects
from muster.models import files as modelfiles
from muster.models.rules import pickles

pytestmark = pytest.mark.unit

# PROTO 4, then a STACK_GLOBAL whose module and name come from memo slots picklescan cannot
# resolve: picklescan raised ValueError and the scanner crashed instead of judging the file.
UNRESOLVED_STACK_GLOBAL = base64.b64decode("gARylWN0lJSTaWN0lJSTkC4=")


@pytest.mark.parametrize("name", ["model.pkl", "weights.bin"])
def test_a_pickle_with_an_unresolvable_import_is_unsafe_not_a_crash(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_bytes(UNRESOLVED_STACK_GLOBAL)
    verdict = modelfiles.scan_file(tmp_path / name)
    assert verdict is not None
    assert verdict.kind is pickles.Kind.UNSAFE
    assert not verdict.passes
    assert "cannot be determined statically" in verdict.message
    report = modelfiles.scan(tmp_path)
    assert not report.passes


def _pod_review(metadata: dict[str, object]) -> dict[str, object]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"metadata": metadata, "spec": {"containers": []}},
        },
    }


# Without request.namespace, the namespace came from object.metadata.namespace unchecked: a list
# raised TypeError (unhashable) in subjects.from_review, a number became Subject.namespace.
@pytest.mark.parametrize(
    "metadata",
    [{"namespace": ["team"]}, {"namespace": {"a": 1}}, {"namespace": 5}, {"name": ["p"]}],
)
def test_a_review_whose_metadata_namespace_or_name_is_not_a_string_is_malformed(
    metadata: dict[str, object],
) -> None:
    with pytest.raises(reviews.MalformedReview, match=r"request\.object\.metadata\.\w+ must be"):
        reviews.validate(_pod_review(metadata))


def test_a_review_with_string_metadata_still_yields_a_subject() -> None:
    review = reviews.validate(_pod_review({"namespace": "team", "name": "p"}))
    subject = subjects.from_review(review, mode=findings.Mode.ENFORCE, own_namespace="muster")
    assert subject is not None
    assert (subject.namespace, subject.name) == ("team", "p")


# A header whose dtype is a list raised TypeError (unhashable) in the safetensors check.
def test_a_safetensors_header_with_a_list_dtype_is_malformed() -> None:
    header = b'{"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}'
    prefix = len(header).to_bytes(8, "little")
    verdict = pickles.check_safetensors("m.safetensors", prefix, header, 8 + len(header) + 4)
    assert verdict.kind is pickles.Kind.MALFORMED
    assert "unknown dtype" in verdict.message


@pytest.mark.parametrize("text", ["registry./xam/rc", "registry.:443/xam/rc", "Registry/xam/rc"])
def test_a_dotless_registry_round_trips(text: str) -> None:
    """``registry./xam/rc`` names the registry ``registry``; once its trailing dot was
    normalised away it printed as ``registry/xam/rc``, which is Docker Hub's repository: a
    pinned reference written back into a pod would have pulled from another registry."""
    parsed = references.parse(text)
    assert parsed.registry == "registry:443"
    assert references.parse(str(parsed)) == parsed

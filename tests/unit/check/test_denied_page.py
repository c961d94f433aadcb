"""docs/denied.md: an entry for every reason a user can meet, and its example denials are what
Muster's own code says.

The examples are built the way the gates build them, without the registry: the pinning rule on
the pod's image uses, the image gate's uncovered-image finding, and a compiled ImagePolicy's
decision on an image without signatures rendered by the gate's failure findings; then the
verdict's message, exactly as the webhook returns it to kubectl.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from muster.admission import pipeline as admissions
from muster.app import areas
from muster.images import gate as imagegate
from muster.images import verifier as imageverifier
from muster.images.rules import pinning
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings, gates, pods, references, reviews
from tests.integration import docblocks
from tests.paths import fixture
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

PAGE = "docs/denied.md"
# Reasons no user meets as an answer to their own request: reported on Nodes (the GPU stack
# controller's judgement of a node) or a Normal record of an admin's change.
NOT_FOR_USERS = {
    "GPUStackCompliant": "on the Node",
    "GPUStackNonCompliant": "on the Node; users meet NodeNotCompliant",
    "GPUStackUnknown": "on the Node; users meet NodeUnknown",
    "NamespaceModeChanged": "a Normal Event of an allowed change",
}
ENTRY = re.compile(r"^### `(?P<reason>[A-Za-z]+)`\n(?P<body>.*?)(?=^##|\Z)", re.M | re.S)
DIGEST = "sha256:" + "9d" * 32
KEY = fixture("sigstore", "connaisseur", "alice.key").read_text()


def _entries() -> dict[str, str]:
    text = (docblocks.ROOT / PAGE).read_text()
    return {m["reason"]: m["body"] for m in ENTRY.finditer(text)}


def test_every_reason_a_user_can_meet_has_an_entry_with_a_next_step() -> None:
    entries = _entries()
    expected = set(areas.reasons()) - set(NOT_FOR_USERS)
    assert not expected - set(entries), f"no entry in {PAGE}: {sorted(expected - set(entries))}"
    assert not set(entries) - expected, f"not a reason users meet: {set(entries) - expected}"
    assert set(NOT_FOR_USERS) <= set(areas.reasons())
    for reason, body in entries.items():
        for part in ("- **Means**: ", "- **Fix**: ", "- **Ask**: "):
            assert part in body, f"{PAGE} {reason}: no {part.strip(' -:*')}"


def _use(image: str) -> pods.ImageUse:
    return pods.ImageUse("container", "main", image, "/spec/containers/0/image")


def _unsigned() -> str:
    image = f"registry.example/ml/trainer:v1@{DIGEST}"
    spec = imagepolicies.parse_spec(
        {
            "images": ["registry.example/ml/**"],
            "authorities": [{"name": "ci-key", "key": {"data": KEY}}],
            "denial": {
                "message": "Images in ml-* namespaces are built and signed by the release "
                "pipeline.",
                "helpURL": "https://wiki.example.com/platform/image-signing",
                "owner": "#ml-platform on Slack",
            },
        }
    )
    policy = imagepolicies.compile_policy("release", 1, spec, {})
    decision = imagepolicies.judge(policy, imagepolicies.Evidence(digest=DIGEST))
    result = imageverifier.ImageResult(references.parse(image), DIGEST, ((policy, decision),))
    return findings.judge(imagegate.failure_findings(_use(image), image, result)).message()


def _unpinned() -> str:
    """Through the whole admission pipeline (the pinning gate, on a cluster with an exemption
    group), as the webhook answers it."""
    pipeline = admissions.Pipeline(
        active_gates=(pinning.PinningGate(),),
        own_namespace="muster-system",
        exemption_groups=frozenset({"ml-oncall"}),
    )
    pod = {
        "metadata": {"name": "trainer", "namespace": "ml-team"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/ml/trainer:v1"}]},
    }
    data = reviews.validate(review(object=pod, namespace="ml-team"))
    answer = asyncio.run(pipeline.review(data, gates.Phase.VALIDATE, findings.Mode.ENFORCE))
    message: str = answer["response"]["status"]["message"]
    return message


def _uncovered() -> str:
    image = "docker.io/library/python:3.12"
    found = imagegate.uncovered_finding(
        _use(image),
        image,
        references.parse(image),
        "ml-team",
        [],
        {},
        imagepolicies.Uncovered.DENY,
    )
    return findings.judge(found).message()


EXAMPLES = {"ImageNotSigned": _unsigned, "ImageNotPinned": _unpinned, "ImageNotCovered": _uncovered}


def test_the_page_s_denials_are_what_the_gates_say() -> None:
    blocks = docblocks.named("real", "tests/unit/check/test_denied_page.py")
    shown = {re.findall(r"\[([A-Za-z]+)\]", block.body)[0]: block for block in blocks}
    assert set(shown) == set(EXAMPLES) and len(blocks) == len(EXAMPLES)
    for reason, block in shown.items():
        real = EXAMPLES[reason]()
        assert real.startswith("muster: ") and f"[{reason}]" in real
        assert docblocks.matches(block, real) == ""

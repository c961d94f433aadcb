"""Break-glass exemptions: the pure rule, and the pipeline that audits every one used."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.admission import audit
from muster.admission import pipeline as admissions
from muster.images.rules import pinning
from muster.kernel import exemptions, findings, gates, reviews, subjects
from muster.platform import metrics
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.unit

UNPINNED = "registry.example/team/app:v1"
GROUPS = frozenset({"breakglass"})
ANNOTATION = exemptions.ANNOTATION


def pod(annotations: dict[str, Any] | None = None, image: str = UNPINNED) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "p"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"containers": [{"name": "app", "image": image}]}}


def deployment(template_annotations: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "metadata": {"annotations": template_annotations},
                "spec": {"containers": [{"name": "app", "image": UNPINNED}]},
            }
        },
    }


def pod_review(obj: dict[str, Any], groups: list[str] | None = None, **more: Any) -> reviews.Review:
    user: dict[str, Any] = {"username": "alice"}
    if groups is not None:
        user["groups"] = groups
    return reviews.validate(review(object=obj, userInfo=user, **more))


class Audited:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[subjects.Subject, exemptions.Exemption]] = []
        self.fail = fail

    def __call__(self, subject: subjects.Subject, exemption: exemptions.Exemption) -> None:
        if self.fail:
            raise RuntimeError("event queue full")
        self.seen.append((subject, exemption))


def run(
    data: reviews.Review,
    *,
    groups: frozenset[str] = GROUPS,
    auditor: admissions.Auditor | None = None,
    mode: findings.Mode = findings.Mode.ENFORCE,
    phase: gates.Phase = gates.Phase.VALIDATE,
) -> reviews.ResponsePayload:
    pipeline = admissions.Pipeline(
        active_gates=(pinning.PinningGate(),),
        own_namespace="muster-system",
        exemption_groups=groups,
        auditor=auditor,
    )
    return asyncio.run(pipeline.review(data, phase, mode))["response"]


def test_without_the_annotation_nothing_changes() -> None:
    auditor = Audited()
    answer = run(pod_review(pod(), ["breakglass"]), auditor=auditor)
    assert answer["allowed"] is False
    assert "not pinned by digest" in answer["status"]["message"]
    assert auditor.seen == []
    # The denial says who could exempt it, and how; where nobody can, it says nothing of it.
    assert answer["status"]["message"].endswith(
        "[ImageNotPinned]\nIn an emergency a member of breakglass may exempt it: annotation "
        'muster.dev/exemption: "<why>" (audited)'
    )
    assert "exempt" not in run(pod_review(pod(), None), groups=frozenset())["status"]["message"]


def test_an_authorised_exemption_admits_with_a_warning_and_is_audited() -> None:
    auditor = Audited()
    answer = run(
        pod_review(pod({ANNOTATION: "INC-42 registry outage"}), ["dev", "breakglass"]),
        auditor=auditor,
    )
    assert answer["allowed"] is True
    warnings = "\n".join(answer.get("warnings", []))
    assert "exemption used by alice (INC-42 registry outage)" in warnings
    assert "not pinned by digest" in warnings  # the waived denial still shows, as a warning
    [(subject, exemption)] = auditor.seen
    assert subject.name == "p"
    assert exemption.user == "alice"
    assert exemption.groups == ("breakglass",)
    assert exemption.waived_checks == (pinning.CHECK,)


@pytest.mark.parametrize(
    ("groups", "user_groups", "expected"),
    [
        (frozenset(), ["breakglass"], "exemptions are turned off on this cluster"),
        (GROUPS, ["dev"], "alice is not in an exemption group (breakglass)"),
        (GROUPS, None, "alice is not in an exemption group"),
    ],
)
def test_an_unauthorised_exemption_is_itself_a_denial(
    groups: frozenset[str], user_groups: list[str] | None, expected: str
) -> None:
    auditor = Audited()
    answer = run(
        pod_review(
            pod({ANNOTATION: "please"}, image=UNPINNED + "@sha256:" + "a" * 64), user_groups
        ),
        groups=groups,
        auditor=auditor,
    )
    assert answer["allowed"] is False
    assert expected in answer["status"]["message"]
    assert auditor.seen == []


@pytest.mark.parametrize("reason", ["", "   ", None, 5, "x" * 600])
def test_an_exemption_needs_a_usable_reason(reason: object) -> None:
    auditor = Audited()
    obj = pod({ANNOTATION: reason})
    data = reviews.validate(
        review(object=obj, userInfo={"username": "bob", "groups": ["breakglass"]})
    )
    answer = run(data, auditor=auditor)
    assert answer["allowed"] is False
    assert ANNOTATION in answer["status"]["message"]
    assert "reason" in answer["status"]["message"] or "characters" in answer["status"]["message"]
    assert auditor.seen == []


def test_a_template_exemption_is_checked_against_the_workload_sender() -> None:
    resource = {"group": "apps", "version": "v1", "resource": "deployments"}
    kind = {"group": "apps", "version": "v1", "kind": "Deployment"}
    obj = deployment({ANNOTATION: "INC-7"})
    outsider = reviews.validate(
        review(object=obj, resource=resource, kind=kind, userInfo={"username": "eve"})
    )
    answer = run(outsider, auditor=Audited())
    assert answer["allowed"] is False
    assert "eve is not in an exemption group" in answer["status"]["message"]
    insider = reviews.validate(
        review(
            object=obj,
            resource=resource,
            kind=kind,
            userInfo={"username": "ops", "groups": ["breakglass"]},
        )
    )
    auditor = Audited()
    assert run(insider, auditor=auditor)["allowed"] is True
    assert len(auditor.seen) == 1


def test_an_exemption_that_cannot_be_audited_is_not_granted() -> None:
    data = pod_review(pod({ANNOTATION: "INC-1"}), ["breakglass"])
    for auditor in (Audited(fail=True), None):
        answer = run(data, auditor=auditor)
        assert answer["allowed"] is False
        assert "could not be audited" in answer["status"]["message"]


def test_warn_mode_and_mutation_are_untouched() -> None:
    auditor = Audited()
    data = pod_review(pod({ANNOTATION: "INC-1"}), ["breakglass"])
    mutated = run(data, auditor=auditor, phase=gates.Phase.MUTATE)
    assert mutated["allowed"] is True
    assert auditor.seen == []
    # Warn mode admits anyway; a used exemption is still audited.
    warned = run(data, auditor=auditor, mode=findings.Mode.WARN)
    assert warned["allowed"] is True
    assert len(auditor.seen) == 1


def test_the_auditor_posts_an_exemption_used_event_and_counts_it() -> None:
    counted = metrics.Metrics()

    class Recorder:
        def __init__(self) -> None:
            self.notices: list[Any] = []

        def start(self) -> None:
            pass

        def submit(self, notice: Any) -> bool:
            self.notices.append(notice)
            return True

    recorder = Recorder()
    auditor = audit.Auditor(counted, recorder)  # type: ignore[arg-type]
    answer = run(pod_review(pod({ANNOTATION: "INC-9"}), ["breakglass"]), auditor=auditor)
    assert answer["allowed"] is True
    [notice] = recorder.notices
    assert notice.reason == "ExemptionUsed"
    assert notice.type == "Warning"
    assert "exemption used by alice" in notice.note
    assert "reason: INC-9" in notice.note
    assert "not pinned by digest" in notice.note
    sample = counted.registry.get_sample_value(
        "muster_exemptions_used_total", {"check": pinning.CHECK, "resource_namespace": "team"}
    )
    assert sample == 1.0
    # A dry run changes nothing: counted, but no Event.
    dry = pod_review(pod({ANNOTATION: "INC-9"}), ["breakglass"], dryRun=True)
    assert run(dry, auditor=auditor)["allowed"] is True
    assert len(recorder.notices) == 1


@settings(max_examples=150, deadline=500)
@given(
    reason=st.one_of(st.none(), st.integers(), st.text(max_size=40)),
    user_groups=st.lists(st.sampled_from(["breakglass", "dev", "ops", ""]), max_size=3),
    allowed=st.frozensets(st.sampled_from(["breakglass", "ops"]), max_size=2),
)
def test_an_exemption_is_honoured_only_when_authorised_and_reasoned(
    reason: object, user_groups: list[str], allowed: frozenset[str]
) -> None:
    auditor = Audited()
    answer = run(
        pod_review(pod({ANNOTATION: reason}), user_groups), groups=allowed, auditor=auditor
    )
    authorised = bool(allowed.intersection(user_groups))
    reasoned = isinstance(reason, str) and bool(reason.strip())
    assert answer["allowed"] is (authorised and reasoned)
    assert len(auditor.seen) == (1 if authorised and reasoned else 0)

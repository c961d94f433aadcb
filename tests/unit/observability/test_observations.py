"""Event targets, series aggregation and label bounds: pure, no cluster."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from muster.app import areas
from muster.kernel import crds, findings, gates, observations, subjects

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[3] / "docs" / "observability.md"


def subject(
    *,
    kind: str = "Pod",
    group: str = "",
    resource: str = "pods",
    operation: str = "CREATE",
    metadata: dict[str, Any] | None = None,
    mode: findings.Mode = findings.Mode.ENFORCE,
    dry_run: bool = False,
) -> subjects.Subject:
    meta = {"name": "trainer-abc12"} if metadata is None else metadata
    return subjects.Subject(
        uid="u1",
        api_version="admission.k8s.io/v1",
        operation=operation,
        group=group,
        resource=resource,
        subresource="",
        kind=kind,
        namespace="team",
        name=str(meta.get("name") or ""),
        object={"apiVersion": f"{group}/v1" if group else "v1", "metadata": meta},
        templates=(),
        user={"username": "alice"},
        mode=mode,
        dry_run=dry_run,
    )


def finding(reason: str = "ImageNotPinned", mode: findings.Mode = findings.Mode.ENFORCE) -> Any:
    return findings.Finding(
        check="digest-pinning",
        reason=reason,
        subject='container "c"',
        message="image 'x:1' is not pinned by digest",
        mode=mode,
    )


DENIED = findings.Verdict(denials=(finding(),))
WARNED = findings.Verdict(warnings=(finding(mode=findings.Mode.WARN),))
OWNED = {
    "name": "trainer-abc12",
    "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "not-controller", "uid": "0"},
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "trainer-5d9",
            "uid": "rs-uid",
            "controller": True,
        },
    ],
}


def test_a_denied_pod_is_reported_on_its_controller() -> None:
    (notice,) = observations.notices(subject(metadata=OWNED), gates.Phase.VALIDATE, DENIED)
    assert notice.target == observations.ObjectRef(
        "apps/v1", "ReplicaSet", "trainer-5d9", "team", "rs-uid"
    )
    assert notice.delivery is observations.Delivery.NOW
    assert notice.reason == "ImageNotPinned"
    assert notice.action == "Denied"
    assert notice.note.startswith("Pod team/trainer-abc12: denied by muster: container")


def test_a_denied_pod_without_owner_is_reported_on_the_namespace() -> None:
    (notice,) = observations.notices(subject(), gates.Phase.VALIDATE, DENIED)
    assert notice.target == observations.ObjectRef("v1", "Namespace", "team", "team")


def test_a_denied_workload_create_goes_to_the_namespace_and_an_update_to_itself() -> None:
    deployment = {"name": "trainer", "uid": "d-uid"}
    create = subject(kind="Deployment", group="apps", resource="deployments", metadata=deployment)
    (notice,) = observations.notices(create, gates.Phase.VALIDATE, DENIED)
    assert notice.target.kind == "Namespace"
    update = subject(
        kind="Deployment",
        group="apps",
        resource="deployments",
        operation="UPDATE",
        metadata=deployment,
    )
    (notice,) = observations.notices(update, gates.Phase.VALIDATE, DENIED)
    assert notice.target == observations.ObjectRef(
        "apps/v1", "Deployment", "trainer", "team", "d-uid"
    )


def signed(policy: str, reason: str = "ImageNotSigned", image: str = "x") -> findings.Finding:
    return findings.Finding(
        check="image-signature",
        reason=reason,
        subject='container "c"',
        message=f"image {image!r} is rejected by ImagePolicy {policy!r}: no signature",
        policy=findings.PolicyRef(kind="ImagePolicy", name=policy),
    )


def test_a_denied_pod_without_owner_is_reported_on_each_policy_and_the_namespace() -> None:
    verdict = findings.Verdict(
        denials=(
            signed("prod", image="a"),
            signed("prod", image="b"),  # same policy and reason: one Event with both
            signed("ml"),
            signed("prod", reason="SignatureNotTrusted"),
            finding(),  # digest pinning: no policy object, the Namespace only
        )
    )
    found = observations.notices(subject(), gates.Phase.VALIDATE, verdict)
    by_target = {(n.target.kind, n.target.name, n.reason): n for n in found}
    assert sorted(by_target) == [
        ("ImagePolicy", "ml", "ImageNotSigned"),
        ("ImagePolicy", "prod", "ImageNotSigned"),
        ("ImagePolicy", "prod", "SignatureNotTrusted"),
        ("Namespace", "team", "ImageNotPinned"),
        ("Namespace", "team", "ImageNotSigned"),
        ("Namespace", "team", "SignatureNotTrusted"),
    ]
    assert len(found) == len(by_target)  # one Event per object and reason, never per finding
    prod = by_target[("ImagePolicy", "prod", "ImageNotSigned")]
    assert prod.target == observations.ObjectRef(
        findings.POLICY_API_VERSION, "ImagePolicy", "prod", namespace=""
    )
    assert prod.namespace == ""  # cluster-scoped: the recorder posts it in "default"
    assert prod.delivery is observations.Delivery.NOW
    assert prod.action == "Denied"
    assert prod.note.startswith("Pod team/trainer-abc12: denied by muster: container")
    assert "'a'" in prod.note and "'b'" in prod.note and "'ml'" not in prod.note
    # The Namespace Event keeps every finding of its reason, whichever policy decided it.
    everything = by_target[("Namespace", "team", "ImageNotSigned")].note
    assert "'prod'" in everything and "'ml'" in everything
    assert f"{crds.GROUP}/{crds.VERSION}" == findings.POLICY_API_VERSION


def test_a_denied_owned_pod_is_reported_on_its_owner_only() -> None:
    verdict = findings.Verdict(denials=(signed("prod"),))
    (notice,) = observations.notices(subject(metadata=OWNED), gates.Phase.VALIDATE, verdict)
    assert notice.target.kind == "ReplicaSet"


def test_policy_events_are_for_denied_creates_only() -> None:
    verdict = findings.Verdict(denials=(signed("prod"),))
    deployment = {"name": "trainer", "uid": "d-uid"}
    create = subject(kind="Deployment", group="apps", resource="deployments", metadata=deployment)
    targets = [n.target.kind for n in observations.notices(create, gates.Phase.VALIDATE, verdict)]
    assert targets == ["Namespace", "ImagePolicy"]
    update = subject(
        kind="Deployment",
        group="apps",
        resource="deployments",
        operation="UPDATE",
        metadata=deployment,
    )
    (notice,) = observations.notices(update, gates.Phase.VALIDATE, verdict)
    assert notice.target.kind == "Deployment"
    warned = findings.Verdict(
        warnings=(dataclasses.replace(signed("prod"), mode=findings.Mode.WARN),)
    )
    (notice,) = observations.notices(subject(), gates.Phase.VALIDATE, warned)
    assert notice.target.kind == "Pod"  # on the pod once it exists, as before


def test_repeated_denials_on_a_policy_fold_into_one_series() -> None:
    verdict = findings.Verdict(denials=(signed("prod"),))
    book = observations.SeriesBook()
    keys = set()
    for now in range(5):
        for notice in observations.notices(subject(), gates.Phase.VALIDATE, verdict):
            key = observations.series_key(notice, notice.target)
            book.observe(key, float(now))
            keys.add(key)
    assert len(keys) == 2 and len(book) == 2  # the policy's series and the Namespace's
    for key in keys:
        due = book.due(key, 10.0)
        assert isinstance(due, observations.Write) and due.count == 5


def test_findings_compare_with_their_policy() -> None:
    plain = finding()
    decided = dataclasses.replace(plain, policy=findings.PolicyRef("ImagePolicy", "prod"))
    assert plain != decided and len({plain, decided, finding()}) == 2
    assert str(decided) == str(plain)  # the line a person reads is unchanged
    assert str(decided.policy) == "ImagePolicy prod"
    assert findings.attributed([plain, decided], findings.PolicyRef("ImagePolicy", "ml")) == [
        dataclasses.replace(plain, policy=findings.PolicyRef("ImagePolicy", "ml")),
        decided,  # a finding that names its policy keeps it
    ]
    assert findings.attributed([plain], None) == [plain]


def test_a_warned_pod_is_reported_on_itself_once_created_else_its_owner() -> None:
    (notice,) = observations.notices(
        subject(metadata=OWNED, mode=findings.Mode.WARN), gates.Phase.VALIDATE, WARNED
    )
    assert notice.delivery is observations.Delivery.WHEN_CREATED
    assert notice.target.identity == ("v1", "Pod", "team", "trainer-abc12")
    assert notice.fallback is not None
    assert notice.fallback.kind == "ReplicaSet"
    assert notice.action == "Warned"


def test_clean_mutation_and_dry_run_requests_make_no_events() -> None:
    assert observations.notices(subject(), gates.Phase.VALIDATE, findings.Verdict()) == []
    assert observations.notices(subject(), gates.Phase.MUTATE, DENIED) == []
    assert observations.notices(subject(dry_run=True), gates.Phase.VALIDATE, DENIED) == []


def test_one_event_per_reason_with_every_finding_in_the_note() -> None:
    verdict = findings.Verdict(denials=(finding(), finding(), finding("ImageNotSigned")))
    found = observations.notices(subject(), gates.Phase.VALIDATE, verdict)
    assert [notice.reason for notice in found] == ["ImageNotPinned", "ImageNotSigned"]
    assert found[0].note.count("not pinned") == 2


def test_notes_fit_the_events_api_limit() -> None:
    long = findings.Finding(check="c", reason="R", subject="s", message="x" * 5000)
    (notice,) = observations.notices(
        subject(), gates.Phase.VALIDATE, findings.Verdict(denials=(long,))
    )
    assert len(notice.note.encode()) <= observations.NOTE_LIMIT
    assert notice.note.endswith("...")


@pytest.mark.parametrize(
    "metadata",
    [{}, {"ownerReferences": "x"}, {"ownerReferences": [{"kind": "ReplicaSet"}]}],
)
def test_malformed_owner_references_mean_no_owner(metadata: dict[str, Any]) -> None:
    assert observations.controller_owner(metadata, "team") is None


KEY: observations.SeriesKey = (("v1", "Namespace", "", "team"), "R", "Denied", "note")


def test_repeated_identical_events_fold_into_one_series() -> None:
    book = observations.SeriesBook(min_interval=1.0)
    book.observe(KEY, 100.0)
    first = book.due(KEY, 100.0)
    assert isinstance(first, observations.Write)
    assert first.create
    assert first.count == 1
    book.written(KEY, first, "ev1", 100.0)
    assert book.due(KEY, 100.0) is None  # nothing new
    for moment in (100.2, 100.4, 100.6):
        book.observe(KEY, moment)
    wait = book.due(KEY, 100.6)
    assert wait == pytest.approx(0.4)  # rate-limited: written once per second at most
    update = book.due(KEY, 101.0)
    assert isinstance(update, observations.Write)
    assert not update.create
    assert (update.name, update.count, update.last) == ("ev1", 4, 100.6)
    assert len(book) == 1


def test_a_series_ends_after_its_window_and_when_its_event_is_gone() -> None:
    book = observations.SeriesBook(window=60.0)
    book.observe(KEY, 0.0)
    write = book.due(KEY, 0.0)
    assert isinstance(write, observations.Write)
    book.written(KEY, write, "ev1", 0.0)
    book.observe(KEY, 100.0)  # past the window: a new Event
    again = book.due(KEY, 100.0)
    assert isinstance(again, observations.Write)
    assert again.create
    assert again.count == 1
    book.written(KEY, again, "ev2", 100.0)
    book.observe(KEY, 101.5)
    book.forget(KEY)
    recreated = book.due(KEY, 102.0)
    assert isinstance(recreated, observations.Write)
    assert recreated.create


def test_the_series_book_is_bounded() -> None:
    book = observations.SeriesBook(max_series=3)
    keys = [(("v1", "Namespace", "", f"ns{i}"), "R", "Denied", "n") for i in range(10)]
    for index, key in enumerate(keys):
        book.observe(key, float(index))
    assert len(book) == 3
    assert book.due(keys[0], 10.0) is None  # forgotten
    assert isinstance(book.due(keys[-1], 10.0), observations.Write)


def test_labels_keep_the_first_values_then_fold_the_rest() -> None:
    label = observations.BoundedLabel(limit=2)
    assert [label(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]
    assert label.values == {"a", "b"}
    assert label("x" * 64) == "other"


def test_an_allowlist_names_exactly_its_namespaces() -> None:
    label = observations.BoundedLabel(limit=0, allowed=["prod"])
    assert (label("prod"), label("dev")) == ("prod", "other")
    with pytest.raises(ValueError, match="negative"):
        observations.BoundedLabel(limit=-1)


def test_the_docs_describe_every_event_reason() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", text, re.MULTILINE))
    assert set(areas.reasons()) <= documented

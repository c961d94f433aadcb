"""A verdict reused without judging is the verdict the gates would give now.

Two pipelines of ``muster run`` (every gate, built by ``runtime.build_pipeline``) judge against
the same real registry, with images signed by the real cosign: one reuses verdicts
(admission/verdicts.py), the other judges every request. On generated pods (signed, unsigned,
uncovered, malformed and tag-only images, GPU requests, two namespace modes, both phases) the
reusing one must give the same answer (allowed, patch, warnings, status), the same decisions
to observers (what Events are made of), and count the same metrics as the other, request for
request; and a change of policy must never let an old verdict through.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muster.admission import server as webhooks
from muster.admission import verdicts
from muster.app import runtime
from muster.images import gate as imagegate
from muster.kernel import crds, findings, gates, observations, scopes, subjects
from muster.platform import objectstore, registries, statechanges
from tests import peers

pytestmark = pytest.mark.integration

COSIGN_ENV = {"COSIGN_PASSWORD": ""}
ENFORCED, WARNED = "judged", "rolling-out"


class Decisions:
    """An observer keeping what every decision would turn into (the planned Events)."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def decided(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: dict[str, float],
    ) -> None:
        self.seen.append(
            (
                phase,
                verdict.allowed,
                verdict.denials,
                verdict.warnings,
                observations.notices(subject, phase, verdict),
                sorted(durations),
            )
        )


def _policy(registry: peers.Registry, public: str, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": "signed", "generation": generation},
        "spec": {
            "images": [f"{registry.host}/verdicts/**"],
            "authorities": [{"name": "team", "key": {"data": public}}],
        },
    }


class Side:
    """One pipeline with its own API store, metrics and observer."""

    def __init__(self, registry: peers.Registry, public: str, *, reuse: bool) -> None:
        settings_ = runtime.OperatorSettings(
            webhook=webhooks.WebhookSettings(),
            registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
        )
        namespaces = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {scopes.ENFORCE_LABEL: mode}},
            }
            for name, mode in ((ENFORCED, "true"), (WARNED, "warn"))
        ]
        self.store = objectstore.ObjectStore([*namespaces, _policy(registry, public)])
        self.services = runtime.Services(
            settings=settings_,
            kube=self.store,
            registries=registries.RegistryClient(settings_.registry),
        )
        self.pipeline = runtime.build_pipeline(self.services)
        if not reuse:
            self.pipeline.verdicts = None
        self.decisions = Decisions()
        self.pipeline.observers.append(self.decisions)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every counter and histogram count (not the seconds: those differ by nature)."""
        found = {}
        for family in self.services.metrics.registry.collect():
            for sample in family.samples:
                skipped = sample.name.endswith(("_sum", "_bucket", "_created"))
                if skipped or family.type in ("gauge", "info"):
                    continue
                if sample.name.startswith("muster_"):
                    found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return found

    async def answer(self, body: bytes, phase: gates.Phase, mode: findings.Mode) -> Any:
        review = json.loads(body)
        content = verdicts.content_key(body, review["request"]["uid"])
        return await self.pipeline.judge(review, phase, mode, content=content)


@pytest.fixture(scope="module")
def world(
    registry: peers.Registry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("verdicts")
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=COSIGN_ENV
    )
    images = {}
    for name in ("signed-a", "signed-b", "unsigned"):
        digest = peers.push_image(
            registry, f"verdicts/{name}", "v1", files={"f": name.encode()}, workdir=work
        )
        images[name] = f"{registry.host}/verdicts/{name}@{digest}"
        if name != "unsigned":
            peers.run_tool(
                "cosign", "sign", f"--key={work / 'k.key'}", "--tlog-upload=false",
                "--use-signing-config=false", "--allow-http-registry", "-y", images[name],
                env=COSIGN_ENV,
            )  # fmt: skip
    images["tag-only"] = f"{registry.host}/verdicts/signed-a:v1"
    images["uncovered"] = "docker.io/library/busybox:1.36"
    images["malformed"] = "Not A Reference::"
    statechanges.no_watches()  # these pipelines run no watch: every change is a read or a put
    loop = asyncio.new_event_loop()
    public = (work / "k.pub").read_text()
    reusing = Side(registry, public, reuse=True)
    judging = Side(registry, public, reuse=False)
    try:
        yield {
            "loop": loop,
            "images": images,
            "reusing": reusing,
            "judging": judging,
            "registry": registry,
            "work": work,
        }
    finally:
        for side in (reusing, judging):
            loop.run_until_complete(side.services.close())
        loop.close()


def _review(
    namespace: str,
    containers: list[tuple[str, bool]],
    init: str | None,
    operation: str,
    annotations: dict[str, str],
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": f"c{index}",
                "image": image,
                **({"resources": {"limits": {"nvidia.com/gpu": "1"}}} if gpu else {}),
            }
            for index, (image, gpu) in enumerate(containers)
        ]
    }
    if init is not None:
        spec["initContainers"] = [{"name": "init", "image": init}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "annotations": annotations},
        "spec": spec,
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "name": "p",
            "operation": operation,
            "userInfo": {"username": "alice", "groups": ["team"]},
            "object": pod,
            "oldObject": copy.deepcopy(pod) if operation == "UPDATE" else None,
        },
    }


def _body(review: dict[str, Any]) -> tuple[bytes, str]:
    uid = str(uuid.uuid4())
    review = {**review, "request": {**review["request"], "uid": uid}}
    return json.dumps(review).encode(), uid


def _without_uid(answer: Any) -> Any:
    response, error = answer
    payload = dict(response["response"])
    payload.pop("uid")
    if "patch" in payload:
        payload["patch"] = json.loads(base64.b64decode(payload["patch"]))
    return {**response, "response": payload}, error


NAMES = ("signed-a", "signed-b", "unsigned", "tag-only", "uncovered", "malformed")
WARM = {"signed-a", "signed-b", "malformed"}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    namespace=st.sampled_from((ENFORCED, WARNED)),
    containers=st.lists(st.tuples(st.sampled_from(NAMES), st.booleans()), min_size=1, max_size=3),
    init=st.none() | st.sampled_from(NAMES),
    operation=st.sampled_from(("CREATE", "UPDATE")),
    phase=st.sampled_from((gates.Phase.VALIDATE, gates.Phase.MUTATE)),
    mode=st.sampled_from((findings.Mode.ENFORCE, findings.Mode.WARN)),
    annotations=st.sampled_from(({}, {"team": "ml"})),
)
def test_a_reused_verdict_is_the_one_judged_now(
    world: dict[str, Any],
    namespace: str,
    containers: list[tuple[str, bool]],
    init: str | None,
    operation: str,
    phase: gates.Phase,
    mode: findings.Mode,
    annotations: dict[str, str],
) -> None:
    images = world["images"]
    reusing: Side = world["reusing"]
    judging: Side = world["judging"]
    loop: asyncio.AbstractEventLoop = world["loop"]
    review = _review(
        namespace,
        [(images[name], gpu) for name, gpu in containers],
        None if init is None else images[init],
        operation,
        annotations,
    )
    # Both sides meet the pod once (cold verifications, reads of the registry), then twice
    # more with new uids: the reusing side answers the last from its verdict cache.
    for _ in range(2):
        for side in (reusing, judging):
            loop.run_until_complete(side.answer(_body(review)[0], phase, mode))
    hits = reusing.pipeline.verdicts.hits if reusing.pipeline.verdicts else 0
    before = {side: side.metrics() for side in (reusing, judging)}
    seen = {side: len(side.decisions.seen) for side in (reusing, judging)}
    answers = {}
    for side in (reusing, judging):
        body, uid = _body(review)
        answer = loop.run_until_complete(side.answer(body, phase, mode))
        assert answer[0]["response"]["uid"] == uid
        answers[side] = _without_uid(answer)
    assert reusing.pipeline.verdicts is not None
    # Images resolved by tag, or read for their GPU environment where that read fails, are
    # asked of a registry on every judgement, as are unsigned ones (a failed verification is
    # not cached): their verdicts are never kept (rightly). Pinned, signed ones must be reused.
    warm = {name for name, _ in containers} | ({init} if init else set()) <= WARM
    if warm and not any(gpu for _, gpu in containers):
        assert reusing.pipeline.verdicts.hits == hits + 1, "the warm pod was judged again"
    assert answers[reusing] == answers[judging]
    assert reusing.decisions.seen[seen[reusing] :] == judging.decisions.seen[seen[judging] :]
    deltas = []
    for side in (reusing, judging):
        after = side.metrics()
        deltas.append(
            {key: value - before[side].get(key, 0.0) for key, value in after.items()}
            | {key: -value for key, value in before[side].items() if key not in after}
        )
    changed = [{k: v for k, v in delta.items() if v} for delta in deltas]
    assert changed[0] == changed[1]


def test_a_policy_change_is_never_answered_from_an_old_verdict(world: dict[str, Any]) -> None:
    """The policy trusted the images' key; its next generation trusts another: the very next
    answer is a denial, as the judging pipeline gives it."""
    loop: asyncio.AbstractEventLoop = world["loop"]
    images = world["images"]
    work: Path = world["work"]
    registry: peers.Registry = world["registry"]
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={work / 'other'}", env=COSIGN_ENV
    )
    other = (work / "other.pub").read_text()
    public = (work / "k.pub").read_text()
    reusing = Side(registry, public, reuse=True)
    judging = Side(registry, public, reuse=False)
    review = _review(ENFORCED, [(images["signed-a"], False)], None, "CREATE", {})
    try:
        for _ in range(3):
            for side in (reusing, judging):
                response, _ = loop.run_until_complete(
                    side.answer(_body(review)[0], gates.Phase.VALIDATE, findings.Mode.ENFORCE)
                )
                assert response["response"]["allowed"]
        assert reusing.pipeline.verdicts is not None and reusing.pipeline.verdicts.hits >= 1
        for side in (reusing, judging):
            # What the ImagePolicy watch does with a new generation: compile it, keep it.
            compiled = loop.run_until_complete(
                imagegate.compile_object(side.store, _policy(registry, other, generation=2))
            )
            imagegate.area_for(side.services).store.put(compiled)
        hits = reusing.pipeline.verdicts.hits
        answers = [
            _without_uid(
                loop.run_until_complete(
                    side.answer(_body(review)[0], gates.Phase.VALIDATE, findings.Mode.ENFORCE)
                )
            )
            for side in (reusing, judging)
        ]
        assert reusing.pipeline.verdicts.hits == hits
        assert answers[0] == answers[1]
        assert not answers[0][0]["response"]["allowed"]
    finally:
        for side in (reusing, judging):
            loop.run_until_complete(side.services.close())


def test_every_kopf_handler_moves_the_epoch() -> None:
    """A watch handler that changes an index moves the epoch, before and after it runs."""
    import kopf

    registry = kopf.OperatorRegistry()
    index: dict[str, str] = {}

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def remember(name: str, **_: Any) -> None:
        index[name] = "seen"

    assert statechanges.track_handlers(registry)
    (handler,) = registry._watching.get_all_handlers()
    epoch = statechanges.epoch()
    asyncio.run(handler.fn(name="team"))
    assert index == {"team": "seen"}
    assert statechanges.epoch() == epoch + 2


def test_a_verdict_is_not_kept_past_its_lifetime_nor_across_a_change() -> None:
    statechanges.no_watches()
    cache = verdicts.Verdicts(lifetime=60.0)
    result = (gates.GateResult(),)
    recording = statechanges.Recording()
    epoch = statechanges.epoch()
    assert cache.put("k", epoch, result, recording)
    assert cache.get("k") == (result, recording)
    statechanges.changed()
    assert cache.get("k") is None
    # Judged while something changed: not kept.
    assert not cache.put("k", epoch, result, recording)
    expired = verdicts.Verdicts(lifetime=0.0)
    assert expired.put("k", statechanges.epoch(), result, recording)
    assert expired.get("k") is None


def test_the_content_key_ignores_only_the_uid() -> None:
    body = b'{"request":{"uid":"u-1","object":{"metadata":{"labels":{"a":"b"}}}}}'
    same = b'{"request":{"uid":"u-2","object":{"metadata":{"labels":{"a":"b"}}}}}'
    other = b'{"request":{"uid":"u-3","object":{"metadata":{"labels":{"a":"c"}}}}}'
    assert verdicts.content_key(body, "u-1") == verdicts.content_key(same, "u-2")
    assert verdicts.content_key(body, "u-1") != verdicts.content_key(other, "u-3")
    # The uid written twice (a label holding it): no key, the request is judged.
    twice = b'{"request":{"uid":"u-1","object":{"metadata":{"labels":{"a":"u-1"}}}}}'
    assert verdicts.content_key(twice, "u-1") is None

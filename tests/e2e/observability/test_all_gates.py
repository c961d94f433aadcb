"""Every gate, for real, seen through Events and a real Prometheus.

One ``muster run`` of this package's own judges a namespace where: a cosign-signed image passes
signature verification against an ImagePolicy (registry requests, verification cache misses
and then hits), an unsigned one is denied again and again (one aggregated Event), an image on a
registry that refuses connections is denied (a real ``unreachable`` outcome), a GPU pod whose
image config carries NVIDIA's real CUDA requirement lands on nodes with real GFD labels (one
compliant, one end of life), pods mount an approved and a revoked Model, and an on-call engineer
uses an exemption. Revoking the Model makes its pod drift (``muster_drifted_pods``, a
``PodDrifted`` Event on it alone). Prometheus scrapes that operator with the chart's rules
loaded; every dashboard panel's and every alert's PromQL must return data from these series.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator, webhookconfigs
from muster.gpu.rules import stack as gpustack
from muster.kernel import crds, exemptions
from muster.models import files as modelfiles
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, kubesetup, processes
from tests import kubeclients, paths, peers
from tests.e2e.gpu.test_gpu_landing import POLICY as GPU_POLICY
from tests.e2e.gpu.test_gpu_landing import _a100_labels, _h100_labels, _image_env
from tests.e2e.observability import discovery
from tests.e2e.observability.conftest import (
    BREAKGLASS,
    DEAD_REGISTRY,
    NAMESPACE_LABELS,
    OWN_NAMESPACE,
    VERIFIER_IMAGE,
)
from tests.e2e.suites import SUITE_LABEL, mode_selector
from tests.integration.chart import rendering
from tests.integration.images.conftest import Signer, sign_v3

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("observed_operator")]

CHART = paths.REPO / "charts" / "muster"
RULES = CHART / "rules" / "muster.rules.yaml"
GROUP, VERSION = crds.GROUP, crds.VERSION
RUN = uuid.uuid4().hex[:5]
UNPINNED = "registry.example/team/trainer:v1"
T = TypeVar("T")


def eventually(probe: Callable[[], T | None], *, what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def events(plane: controlplane.ControlPlane, namespace: str) -> list[dict[str, Any]]:
    """Muster's events.k8s.io/v1 Events in a namespace, as JSON."""
    with kubeclients.admin(plane) as api:
        events_api: Any = client.EventsV1Api(api)  # raw JSON: the typed client drops fields
        response = events_api.list_namespaced_event(namespace, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
    return [e for e in items if e.get("reportingController") == "muster.dev/operator"]


def regarding(event: dict[str, Any]) -> tuple[str, str]:
    return event["regarding"]["kind"], event["regarding"]["name"]


def pod(name: str, image: str, **metadata: Any) -> dict[str, Any]:
    body: dict[str, Any] = kubeclients.pod(name, image)
    body["metadata"].update(metadata)
    return body


def create_pod(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> Any:
    core: Any = client.CoreV1Api(api)
    return core.create_namespaced_pod(namespace, body)


def denied(plane: controlplane.ControlPlane, namespace: str, body: dict[str, Any]) -> str:
    with kubeclients.admin(plane) as api, pytest.raises(client.ApiException) as raised:
        create_pod(api, namespace, body)
    assert raised.value.status == 403, raised.value.body
    return str(json.loads(raised.value.body or "{}")["message"])


def custom_status(plane: controlplane.ControlPlane, plural: str, name: str) -> dict[str, Any]:
    with kubeclients.admin(plane) as api:
        objects: Any = client.CustomObjectsApi(api)
        found = objects.get_cluster_custom_object(GROUP, VERSION, plural, name)
    status: dict[str, Any] = found.get("status") or {}
    return status


def indexed(plane: controlplane.ControlPlane, name: str) -> Callable[[], object]:
    """The operator has indexed a Model once it wrote the status for its generation."""
    return lambda: custom_status(plane, "models", name).get("observedGeneration")


def model_digest(root: Path, name: str) -> str:
    model = root / name
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}" + name.encode())
    (model / "config.json").write_text(json.dumps({"name": name}) + "\n")
    return modelfiles.measure(model).digest


@pytest.fixture(scope="module")
def scraping(
    control_plane: controlplane.ControlPlane,
    tmp_path_factory: pytest.TempPathFactory,
    observed_operator: localoperator.LocalOperator,
) -> Iterator[peers.Prometheus]:
    """Prometheus scraping the operator from before the scenario, so that rates see it happen:
    found through the apiserver as a ServiceMonitor finds it (see ``discovery``)."""
    port = urllib.parse.urlsplit(observed_operator.metrics_url).port
    assert port is not None
    discovery.publish(control_plane, OWN_NAMESPACE, port, VERIFIER_IMAGE)
    workdir = tmp_path_factory.mktemp("observability-prometheus")
    configs = discovery.scrape_configs(control_plane, OWN_NAMESPACE)
    with peers.prometheus(workdir, rule_files=[RULES], scrape_configs=configs) as running:
        eventually(
            lambda: query(running, f"up{{job='{discovery.SERVICE}'}} == 1"),
            what="a first scrape through service discovery",
            timeout=60,
        )
        eventually(lambda: query(running, "up{job='apiserver'} == 1"), what="the apiserver")
        yield running


class Scenario:
    """What the module set up: names the tests assert on."""

    def __init__(
        self, namespace: str, nodes: dict[str, str], models: dict[str, str], registry: str
    ) -> None:
        self.namespace = namespace
        self.registry = registry
        self.nodes = nodes
        self.models = models
        self.denials: dict[str, str] = {}
        self.image_policy = ""


@pytest.fixture(scope="module")
def scenario(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    scraping: peers.Prometheus,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    del scraping  # started first: it must see the counters rise
    plane = control_plane
    workdir = tmp_path_factory.mktemp("observability-images")
    # Images: one signed by alice, one nobody signed, a CUDA image (real NVIDIA env), signed.
    signed = f"{registry.host}/obs/signed@" + peers.push_image(
        registry, "obs/signed", "v1", files={"app/main.py": b"print('hi')\n"}, workdir=workdir
    )
    unsigned = f"{registry.host}/obs/unsigned@" + peers.push_image(
        registry, "obs/unsigned", "v1", files={"app/main.py": b"print('ho')\n"}, workdir=workdir
    )
    cuda = f"{registry.host}/obs/cuda@" + peers.push_image(
        registry, "obs/cuda", "12.4.1", env=_image_env("12.4.1-base-ubuntu22.04"), workdir=workdir
    )
    for reference in (signed, cuda):
        sign_v3(signers["alice"], reference)

    names = {
        "images": f"obs-images-{RUN}",
        "gpu": f"obs-gpu-{RUN}",
        "models": f"obs-models-{RUN}",
    }
    selector = {"matchLabels": {SUITE_LABEL: NAMESPACE_LABELS[SUITE_LABEL]}}
    kubeclients.create_muster_object(
        plane,
        "imagepolicies",
        "ImagePolicy",
        names["images"],
        {
            "images": [f"{registry.host}/obs/**", f"{DEAD_REGISTRY}/obs/**"],
            "namespaceSelector": selector,
            "authorities": [{"name": "alice", "key": {"data": signers["alice"].pem}}],
        },
    )
    kubeclients.create_muster_object(
        plane, "gpustackpolicies", "GPUStackPolicy", names["gpu"], copy.deepcopy(GPU_POLICY)
    )
    kubeclients.create_muster_object(
        plane, "modelpolicies", "ModelPolicy", names["models"], {"namespaceSelector": selector}
    )
    nodes = {"compliant": f"obs-h100-{RUN}", "noncompliant": f"obs-a100-{RUN}"}
    models = {"approved": f"obs-approved-{RUN}", "revoked": f"obs-revoked-{RUN}"}
    with kubeclients.admin(plane) as api:
        core: Any = client.CoreV1Api(api)
        for node, labels in (
            (nodes["compliant"], _h100_labels()),
            (nodes["noncompliant"], _a100_labels()),
        ):
            core.create_node({"metadata": {"name": node, "labels": {**labels, SUITE_LABEL: "obs"}}})
    models_dir = tmp_path_factory.mktemp("observability-models")
    for name in models.values():
        kubeclients.create_muster_object(
            plane, "models", "Model", name, {"digest": model_digest(models_dir, name)}
        )
        eventually(indexed(plane, name), what=f"Model {name} indexed")
    eventually(
        lambda: any(
            c.get("type") == "Compiled" and c.get("status") == "True"
            for c in custom_status(plane, "imagepolicies", names["images"]).get("conditions", [])
        ),
        what="the ImagePolicy compiled",
    )

    namespace = kubeclients.namespace(plane, "obs", NAMESPACE_LABELS)
    scenario = Scenario(namespace, nodes, models, registry.host)
    scenario.image_policy = names["images"]
    with kubeclients.admin(plane) as api:
        core = client.CoreV1Api(api)
        rbac: Any = client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "oncall-edits"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "edit",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "oncall"}
                ],
            },
        )
        # Signature verification: the first look-up misses, the next ones hit the cache.
        for name in ("signed-1", "signed-2"):
            create_pod(api, namespace, pod(name, signed))
        # A GPU pod: its image config (NVIDIA_REQUIRE_CUDA) is read from the registry.
        eventually(
            lambda: (core.read_node(nodes["compliant"]).metadata.labels or {}).get(
                gpustack.STATE_LABEL
            ),
            what="the compliant node judged",
        )
        gpu = pod("gpu", cuda)
        gpu["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        admitted = create_pod(api, namespace, gpu)
        assert admitted.spec.affinity.node_affinity  # the GPU gate steered it
        # Pods mounting Models (declared through the model-volumes annotation).
        for key, name in models.items():
            body = pod(
                f"uses-{key}",
                signed,
                annotations={modelregistry.MODEL_VOLUMES_ANNOTATION: json.dumps({"data": name})},
            )
            body["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
            body["spec"]["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/m"}]
            create_pod(api, namespace, body)
    # The same unsigned pod, denied three times: one Event series.
    for _ in range(3):
        scenario.denials["unsigned"] = denied(plane, namespace, pod("unsigned", unsigned))
    # A registry nobody answers on.
    scenario.denials["dead"] = denied(
        plane, namespace, pod("dead", f"{DEAD_REGISTRY}/obs/gone@sha256:" + "cd" * 32)
    )
    # Break glass: an on-call engineer with a reason gets an unpinned image through.
    oncall: Any = kubeclients.admin(plane)
    oncall.set_default_header("Impersonate-User", "oncall")
    oncall.set_default_header("Impersonate-Group", BREAKGLASS)
    with oncall:
        create_pod(
            oncall,
            namespace,
            pod("exempt", UNPINNED, annotations={exemptions.ANNOTATION: "INC-7 registry outage"}),
        )
    # Revoke a Model that a pod mounts.
    with kubeclients.admin(plane) as api:
        eventually(
            lambda: custom_status(plane, "models", models["revoked"]).get("pods") == 1,
            what="the pod counted on the Model",
        )
        client.CustomObjectsApi(api).patch_cluster_custom_object(
            GROUP,
            VERSION,
            "models",
            models["revoked"],
            {"spec": {"revoked": True, "revocationReason": "trained on leaked data"}},
        )
    yield scenario
    with kubeclients.admin(plane) as api:  # the control plane outlives this module
        objects = client.CustomObjectsApi(api)
        for node in nodes.values():
            client.CoreV1Api(api).delete_node(node)
        for plural, name in (
            ("imagepolicies", names["images"]),
            ("gpustackpolicies", names["gpu"]),
            ("modelpolicies", names["models"]),
            *(("models", name) for name in models.values()),
        ):
            objects.delete_cluster_custom_object(GROUP, VERSION, plural, name)


# -- Events on the objects docs/observability.md names ------------------------------------


def test_repeated_signature_denials_fold_into_one_event_series_on_the_namespace(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    assert "signature" in scenario.denials["unsigned"], scenario.denials["unsigned"]

    def folded() -> dict[str, Any] | None:
        found = [
            e
            for e in events(control_plane, scenario.namespace)
            if regarding(e) == ("Namespace", scenario.namespace) and "/unsigned:" in e["note"]
        ]
        if len(found) == 1 and (found[0].get("series") or {}).get("count") == 3:
            return found[0]
        return None

    event = eventually(folded, what="one Event with series.count 3 on the Namespace")
    assert event["reason"] == "ImageNotSigned"
    assert (event["type"], event["action"]) == ("Warning", "Denied")
    assert event["regarding"]["uid"]


def test_a_denied_bare_pod_is_also_reported_on_the_image_policy_that_denied_it(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    name = scenario.image_policy

    def folded() -> dict[str, Any] | None:
        found = [
            e
            for e in events(control_plane, "default")  # a cluster-scoped object's Events
            if regarding(e) == ("ImagePolicy", name) and "/unsigned:" in e["note"]
        ]
        if len(found) == 1 and (found[0].get("series") or {}).get("count") == 3:
            return found[0]
        return None

    event = eventually(folded, what="one Event with series.count 3 on the ImagePolicy")
    assert event["reason"] == "ImageNotSigned"
    assert (event["type"], event["action"]) == ("Warning", "Denied")
    assert event["regarding"]["apiVersion"] == f"{GROUP}/{VERSION}"
    with kubeclients.admin(control_plane) as api:
        objects: Any = client.CustomObjectsApi(api)
        policy = objects.get_cluster_custom_object(GROUP, VERSION, "imagepolicies", name)
    assert event["regarding"]["uid"] == policy["metadata"]["uid"]
    assert event["note"].startswith(f"Pod {scenario.namespace}/unsigned: denied by muster:")
    assert f"ImagePolicy {name!r}" in event["note"]
    # The platform team finds it on the policy, with kubectl.
    described = controlplane.kubectl(control_plane, "describe", "imagepolicy", name).stdout
    assert "ImageNotSigned" in described and f"{scenario.namespace}/unsigned" in described
    listed = controlplane.kubectl(
        control_plane,
        "get", "events", "-n", "default", "-o", "name",
        "--field-selector", f"involvedObject.kind=ImagePolicy,involvedObject.name={name}",
    ).stdout  # fmt: skip
    assert event["metadata"]["name"] in listed


def test_gpu_node_compliance_is_reported_on_the_node(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    def on(node: str) -> list[dict[str, Any]]:
        return [e for e in events(control_plane, "default") if regarding(e) == ("Node", node)]

    [event, *_] = eventually(
        lambda: on(scenario.nodes["noncompliant"]), what="an Event on the A100 node"
    )
    assert event["reason"] == "GPUStackNonCompliant"
    assert event["type"] == "Warning"
    assert event["regarding"]["uid"]


def test_a_revocation_is_reported_on_the_model_and_its_pods(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    model = scenario.models["revoked"]

    def on_model() -> list[dict[str, Any]]:
        return [e for e in events(control_plane, "default") if regarding(e) == ("Model", model)]

    def on_pods() -> list[dict[str, Any]]:
        return [
            e
            for e in events(control_plane, scenario.namespace)
            if e["reason"] == "ModelRevoked" and e["regarding"]["kind"] == "Pod"
        ]

    eventually(on_model, what="an Event on the revoked Model")
    eventually(on_pods, what="an Event on the pod using it")
    # Every operator in the cluster watches Models (the session's too), but only the one whose
    # namespaces these are reports: exactly one Event series per object.
    [event] = on_model()
    assert event["reason"] == "ModelRevoked"
    assert f"{scenario.namespace}/uses-revoked" in event["note"]
    [found] = on_pods()
    assert found["regarding"]["name"] == "uses-revoked"
    assert "trained on leaked data" in found["note"]


def test_a_pod_using_the_revoked_model_drifts_and_the_others_do_not(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    def drifted() -> list[dict[str, Any]]:
        return [e for e in events(control_plane, scenario.namespace) if e["reason"] == "PodDrifted"]

    [event] = eventually(drifted, what="a PodDrifted Event")
    assert regarding(event) == ("Pod", "uses-revoked")
    assert (event["type"], event["action"]) == ("Warning", "Rejudge")
    assert event["regarding"]["uid"]
    assert "[models]" in event["note"] and "trained on leaked data" in event["note"]
    # The pods that still pass (signed images, the GPU pod, the approved Model) have none.
    assert [regarding(e) for e in drifted()] == [("Pod", "uses-revoked")]


def test_an_exemption_is_reported_on_the_pod(
    control_plane: controlplane.ControlPlane, scenario: Scenario
) -> None:
    [event] = eventually(
        lambda: [
            e for e in events(control_plane, scenario.namespace) if e["reason"] == "ExemptionUsed"
        ],
        what="an ExemptionUsed Event",
    )
    assert regarding(event) == ("Pod", "exempt")
    assert "INC-7 registry outage" in event["note"]


# -- every panel and alert through the real Prometheus --------------------------------------


# Dashboard variables as Grafana fills them here: this Prometheus has no ``cluster`` label
# (All), one Muster job and pod found through the Service.
VARIABLES = {
    "$__rate_interval": "5m",
    "$cluster": ".*",
    "$job": discovery.SERVICE,
    "$pod": discovery.POD,
}


def expand(expression: str) -> str:
    for name, filled in VARIABLES.items():
        expression = expression.replace(name, filled)
    assert "$" not in expression, expression
    return expression


def dashboard_expressions() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                found.append((panel["title"], expand(target["expr"])))

    for path in sorted((CHART / "dashboards").glob("*.json")):
        walk(json.loads(path.read_text())["panels"])
    return found


OUTAGE_LABEL = "muster.dev/e2e-outage"


def outage(plane: controlplane.ControlPlane, operator: localoperator.LocalOperator) -> None:
    """Muster's validating webhooks, as the chart registers them, pointing at a port nobody
    listens on (every replica down), for two namespaces of their own: a pod in the warn one
    is let through unjudged (fail open), one in the enforce one is rejected (fail closed)."""
    dead = f"https://127.0.0.1:{processes.free_port()}"
    ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
    manifest = webhookconfigs.validating(dead, ca_bundle, own_namespace=OWN_NAMESPACE)
    manifest["metadata"]["name"] = f"muster.dev.observability-outage-{RUN}"
    for hook in manifest["webhooks"]:
        mode_selector(OUTAGE_LABEL)(hook)
    spaces = {
        mode: kubeclients.namespace(plane, f"obs-{mode}", {OUTAGE_LABEL: mode})
        for mode in ("warn", "enforce")
    }
    with kubeclients.admin(plane) as api:
        kubesetup.apply_webhook_configuration(api, manifest)
        admission: Any = client.AdmissionregistrationV1Api(api)
        try:
            # The configuration reaches the apiserver's webhook cache within moments: until
            # then a pod in the enforce namespace is created; afterwards it is rejected.
            refusal = eventually(
                lambda: _refused(api, spaces["enforce"]), what="the enforce webhook failing closed"
            )
            assert "failed calling webhook" in refusal, refusal
            create_pod(api, spaces["warn"], pod("open", UNPINNED))  # let through unjudged
        finally:
            admission.delete_validating_webhook_configuration(manifest["metadata"]["name"])
            for name in spaces.values():
                client.CoreV1Api(api).delete_namespace(name)


def _refused(api: client.ApiClient, namespace: str) -> str | None:
    try:
        create_pod(api, namespace, pod(f"closed-{uuid.uuid4().hex[:6]}", UNPINNED))
    except client.ApiException as error:
        return error.body or str(error)
    return None


def chart_rules(*, namespace: str, release: str) -> list[dict[str, Any]]:
    """The PrometheusRule's rules as the chart renders them (MusterDown is templated)."""
    docs = rendering.documents(
        rendering.template(
            f"--values={CHART / 'ci' / 'monitoring-values.yaml'}",
            release=release,
            namespace=namespace,
        )
    )
    rule = rendering.one(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def alert_expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


_THRESHOLD = re.compile(r"\s*[<>]=?\s*[^<>()]*$", re.DOTALL)


def signals(expression: str) -> list[str]:
    """What an alert compares: each ``and``/``unless`` operand without its final threshold."""
    parts = re.split(r"\n\s*(?:and|unless)\s*\n", expression.strip())
    return [_THRESHOLD.sub("", part.strip()) for part in parts]


def query(prometheus: peers.Prometheus, expression: str) -> list[dict[str, Any]]:
    url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    assert answer["status"] == "success", (expression, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def value(prometheus: peers.Prometheus, expression: str) -> float:
    result = query(prometheus, expression)
    return sum(float(sample["value"][1]) for sample in result)


# What each gate must have made happen, for real (not the zeros the series start at).
CACHE = "muster_verification_cache_requests_total"
REAL = {
    "signed images verified": f'{CACHE}{{cache="signatures",result="miss"}}',
    "verification cache hits": f'{CACHE}{{cache="signatures",result="hit"}}',
    "image configs read": f'{CACHE}{{cache="image-configs",result="miss"}}',
    "registry answered": 'muster_registry_requests_total{outcome="success"}',
    "registry unreachable": (
        f'muster_registry_requests_total{{registry="{DEAD_REGISTRY}",outcome="unreachable"}}'
    ),
    "signature denials": 'muster_violations_total{check="image-signature",mode="enforce"}',
    "compliant GPU nodes": 'muster_gpu_nodes{state="compliant"}',
    "non-compliant GPU nodes": 'muster_gpu_nodes{state="noncompliant"}',
    "approved models": 'muster_models{state="approved"}',
    "revoked models": 'muster_models{state="revoked"}',
    "pods using revoked models": "muster_pods_using_revoked_models",
    "drifted pods": 'muster_drifted_pods{check="models"}',
    "model index look-ups": f'{CACHE}{{cache="models",result=~"hit|miss"}}',
    "exemptions used": "muster_exemptions_used_total",
    "events written": 'muster_events_total{outcome=~"created|updated"}',
    "GPU gate timed": 'muster_admission_duration_seconds_count{gate="gpu-stack"}',
    "model gate timed": 'muster_admission_duration_seconds_count{gate="models"}',
    "signature gate timed": 'muster_admission_duration_seconds_count{gate="image-signature"}',
}


def test_prometheus_scrapes_muster_and_every_panel_and_alert_has_real_data(
    control_plane: controlplane.ControlPlane,
    scenario: Scenario,
    observed_operator: localoperator.LocalOperator,
    scraping: peers.Prometheus,
) -> None:
    for what, expression in REAL.items():
        eventually(above_zero(scraping, expression), what=f"{what}: {expression} > 0")
    # The judged object's namespace is resource_namespace; namespace is the scrape target's
    # (Muster's own), set by the ServiceMonitor relabelling, never renamed exported_namespace.
    exempted = query(
        scraping, f'muster_exemptions_used_total{{resource_namespace="{scenario.namespace}"}} > 0'
    )
    assert exempted  # one series per waived check
    for series in exempted:
        target = {k: series["metric"].get(k) for k in ("namespace", "service", "job", "pod")}
        assert target == {
            "namespace": OWN_NAMESPACE,
            "service": discovery.SERVICE,
            "job": discovery.SERVICE,
            "pod": discovery.POD,
        }, series["metric"]
        assert series["metric"]["container"] == discovery.CONTAINER
    # The chart's MusterDown, rendered for a release named like the Service in this namespace,
    # selects this target: absent() is empty while it is up.
    [down] = [
        r["expr"]
        for r in chart_rules(namespace=OWN_NAMESPACE, release=discovery.SERVICE)
        if r["alert"] == "MusterDown"
    ]
    assert f'namespace="{OWN_NAMESPACE}"' in down and not query(scraping, down), down
    assert query(scraping, down.replace(OWN_NAMESPACE, "elsewhere"))  # it would fire
    assert not query(scraping, '{__name__=~"muster_.+", exported_namespace!=""}')
    assert not query(scraping, f'{{__name__=~"muster_.+", namespace!="{OWN_NAMESPACE}"}}')
    eventually(  # rates need two scrapes of the new values
        lambda: query(
            scraping, 'sum(rate(muster_admission_requests_total{decision="denied"}[5m])) > 0'
        ),
        what="a denial rate",
    )
    # Registry series are born with the first request to a host, so Prometheus' first sample
    # of them already holds the scenario's burst: rate() needs requests after that sample.
    for image in (
        f"{scenario.registry}/obs/missing@sha256:" + "ee" * 32,
        f"{DEAD_REGISTRY}/obs/gone@sha256:" + "ef" * 32,
    ):
        denied(control_plane, scenario.namespace, pod(f"late-{uuid.uuid4().hex[:6]}", image))
    eventually(
        lambda: query(scraping, "sum(rate(muster_registry_requests_total[5m])) > 0"),
        what="a registry request rate",
    )
    # Muster's webhooks with no replica behind them: the warn one fails open, the enforce one
    # fails closed; the apiserver counts both (its series exist only once it happened).
    outage(control_plane, observed_operator)
    for series in (
        'apiserver_admission_webhook_fail_open_count{name="warn.validate.pods.muster.dev"}',
        'apiserver_admission_webhook_rejection_count{name="enforce.validate.pods.muster.dev",'
        'error_type="calling_webhook_error"}',
    ):
        eventually(above_zero(scraping, series), what=f"the apiserver's {series}")
    # The apiserver's side: it called this suite's enforce webhook, and denied through it.
    hook = 'name="enforce.validate.pods.muster.dev"'
    for series in (
        f"apiserver_admission_webhook_admission_duration_seconds_count{{{hook}}}",
        f"apiserver_admission_webhook_request_total{{{hook}}}",
        f'apiserver_admission_webhook_rejection_count{{{hook},error_type="no_error"}}',
    ):
        eventually(above_zero(scraping, series), what=f"the apiserver's {series}")
    empty: list[str] = []
    for title, expression in dashboard_expressions():
        assert "vector(0)" not in expression, f"panel {title!r} hides missing data"
        if not answers(scraping, expression):
            empty.append(f"panel {title!r}: {expression}")
    for alert, expression in alert_expressions():
        assert "vector(0)" not in expression, f"alert {alert} hides missing data"
        query(scraping, expression)  # valid PromQL
        for signal in signals(expression):
            if not answers(scraping, signal):
                empty.append(f"alert {alert}: {signal}")
    assert not empty, "\n".join(empty)
    # The top-namespaces panel groups by the workload's namespace, not Muster's.
    [top] = [e for t, e in dashboard_expressions() if t == "Violations by namespace (top 10)"]
    grouped = {sample["metric"].get("resource_namespace") for sample in query(scraping, top)}
    assert scenario.namespace in grouped and OWN_NAMESPACE not in grouped, grouped
    # The alerts about what this scenario set up really hold.
    assert value(scraping, 'sum(muster_gpu_nodes{state="noncompliant"})') >= 1
    assert value(scraping, "sum(muster_pods_using_revoked_models)") >= 1
    # Drift: the pod on the revoked Model, and only it (the panel's query, by check).
    drift = {
        sample["metric"]["check"]: float(sample["value"][1])
        for sample in query(scraping, "sum by (check) (muster_drifted_pods)")
    }
    assert drift == {"models": 1.0, "image-signature": 0.0, "gpu-stack": 0.0, "datasets": 0.0}, (
        drift
    )
    expiry = query(scraping, "muster_webhook_certificate_expiry_timestamp_seconds")
    assert float(expiry[0]["value"][1]) > time.time()
    # Prometheus loaded the very rules file the chart ships, and evaluated it.
    with urllib.request.urlopen(f"{scraping.url}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {alert for alert, _ in alert_expressions()}
    assert all(rule["health"] != "err" for group in groups for rule in group["rules"])
    # Every metric with its values, for the record (CI logs show them).
    print("--- muster metrics after the scenario ---")
    for line in samples(observed_operator.metrics_url):
        print(line)


def answers(prometheus: peers.Prometheus, expression: str, timeout: float = 15.0) -> bool:
    """Whether the expression returns data (a series that appeared during the scenario needs
    two scrapes before ``rate``/``increase`` answer for it)."""
    try:
        eventually(lambda: query(prometheus, expression), what=expression, timeout=timeout)
    except AssertionError:
        return False
    return True


def above_zero(prometheus: peers.Prometheus, expression: str) -> Callable[[], bool]:
    return lambda: value(prometheus, expression) > 0


def samples(url: str) -> list[str]:
    """Every non-zero sample (histograms by their count), for the record."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith("muster_")
        and not re.match(r"\w+_(created|bucket|sum)[{ ]", line)
        and not line.endswith(" 0.0")
    ]

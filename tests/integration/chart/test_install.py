"""helm install into the real control plane: the real schemas accept every object, the RBAC is
enough and no more, the webhooks judge exactly the namespaces that opted in, and uninstall leaves
no webhook configuration behind.

The control plane has no kubelet: pods never run and Jobs never finish. So nothing here waits for
pods (pod specs are checked by Pod Security admission with server-side dry runs in a namespace
enforcing `restricted`), and uninstall runs with --no-hooks: the pre-delete hook Job would never
complete. The hook's objects are checked with a server-side dry run instead, and the webhook
configurations are ordinary release resources that helm deletes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import ssl
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client

from muster.platform import controlplane
from tests import kubeclients
from tests.integration import docblocks
from tests.integration.chart import rendering
from tests.integration.chart.rendering import CHART

pytestmark = pytest.mark.integration

# The control plane is shared by the whole session: the release's webhooks only ever match
# namespaces carrying this label with the release's name, so they cannot touch other tests.
SCOPE_LABEL = "muster.dev/chart-test"


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    plane: controlplane.ControlPlane

    @property
    def fullname(self) -> str:
        return self.name  # the release name contains "muster"

    def helm(self, *args: str, check: bool = True) -> str:
        return rendering.helm(
            *args,
            "--namespace",
            self.namespace,
            f"--kubeconfig={self.plane.kubeconfig}",
            check=check,
        ).stdout


def _values(path: Path, name: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "webhook": {
                    "timeoutSeconds": 2,  # nothing answers behind the Service: fail fast
                    "namespaceSelectorExpressions": [
                        {"key": SCOPE_LABEL, "operator": "In", "values": [name]},
                    ],
                },
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def release(
    control_plane: controlplane.ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    name = f"muster-{uuid.uuid4().hex[:6]}"
    namespace = kubeclients.namespace(
        control_plane,
        "muster-chart",
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/warn": "restricted",  # warns on workload resources too
        },
    )
    installed = Release(name, namespace, control_plane)
    values = _values(tmp_path_factory.mktemp("chart") / "values.yaml", name)
    installed.helm("install", name, str(CHART), f"--values={values}")
    try:
        yield installed
    finally:
        # --no-hooks: the pre-delete Job cannot run without a kubelet (see the module docstring).
        installed.helm("uninstall", name, "--no-hooks", "--ignore-not-found")


def test_every_object_is_accepted(release: Release) -> None:
    manifest = rendering.documents(release.helm("get", "manifest", release.name))
    kinds = sorted({doc["kind"] for doc in manifest})
    assert kinds == sorted(
        [
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "MutatingWebhookConfiguration",
            "PodDisruptionBudget",
            "Secret",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        ]
    )
    status = json.loads(release.helm("status", release.name, "--output=json"))
    assert status["info"]["status"] == "deployed"
    for doc in manifest:
        namespaced = doc["kind"] not in {
            "ClusterKopfPeering",
            "ClusterRole",
            "ClusterRoleBinding",
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingWebhookConfiguration",
        }
        live = release.plane.get(_path(doc, release.namespace if namespaced else None))
        assert live["metadata"]["name"] == doc["metadata"]["name"]
        assert live["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name


def _path(doc: dict[str, Any], namespace: str | None) -> str:
    group_version = doc["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = {
        "ClusterKopfPeering": "clusterkopfpeerings",
        "PodDisruptionBudget": "poddisruptionbudgets",
        "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    }.get(doc["kind"], doc["kind"].lower() + "s")
    if namespace:
        base += f"/namespaces/{namespace}"
    return f"{base}/{plural}/{doc['metadata']['name']}"


def test_operator_pods_pass_the_restricted_pod_security_standard(release: Release) -> None:
    """The live Deployment's pod template, created (dry run) in a namespace that enforces the
    `restricted` Pod Security Standard: Pod Security admission lets it in."""
    with kubeclients.admin(release.plane) as api:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(
            release.fullname, release.namespace
        )
        template = api.sanitize_for_serialization(deployment.spec.template)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": "template-check"},
            "spec": template["spec"],
        }
        created = client.CoreV1Api(api).create_namespaced_pod(release.namespace, pod, dry_run="All")
    assert created.spec.service_account_name == release.fullname
    assert created.spec.security_context.run_as_non_root is True


def _tls(release: Release) -> tuple[dict[str, str], str]:
    with kubeclients.admin(release.plane) as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(
            f"{release.fullname}-webhook-tls", release.namespace
        )
        hooks = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(
            release.fullname
        )
    return secret.data, hooks.webhooks[0].client_config.ca_bundle


def test_upgrade_keeps_the_generated_certificates(release: Release) -> None:
    data, bundle = _tls(release)
    assert base64.b64decode(data["ca.crt"]) == base64.b64decode(bundle)
    release.helm("upgrade", release.name, str(CHART), "--reuse-values")
    assert _tls(release) == (data, bundle)


def test_upgrade_near_expiry_renews_and_trusts_both_cas(release: Release) -> None:
    old, _ = _tls(release)
    # Certificates valid for 365 days renew when they expire within 366: as if a year had passed.
    release.helm(
        "upgrade",
        release.name,
        str(CHART),
        "--reuse-values",
        "--set=webhook.tls.validityDays=400",
        "--set=webhook.tls.renewBeforeDays=366",
    )
    new, bundle = _tls(release)
    assert new["tls.crt"] != old["tls.crt"] and new["ca.crt"] != old["ca.crt"]
    # Pods still serving the old certificate (until the kubelet refreshes the Secret volume)
    # stay trusted: the bundle holds the new CA and the old one.
    decoded = base64.b64decode(bundle)
    assert decoded == base64.b64decode(new["ca.crt"]) + base64.b64decode(old["ca.crt"])
    cert = x509.load_pem_x509_certificate(base64.b64decode(new["tls.crt"]))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days >= 399
    # The next upgrade keeps the renewed pair, and drops the old CA.
    release.helm("upgrade", release.name, str(CHART), "--reuse-values")
    kept, bundle = _tls(release)
    assert kept == new
    assert base64.b64decode(bundle) == base64.b64decode(new["ca.crt"])


def test_service_account_can_do_what_the_operator_needs_and_no_more(release: Release) -> None:
    target = kubeclients.namespace(release.plane, "muster-chart-events")
    with kubeclients.service_account(release.plane, release.namespace, release.fullname) as api:
        core = client.CoreV1Api(api)
        core.list_namespace()
        core.list_pod_for_all_namespaces(limit=1)
        client.AppsV1Api(api).list_replica_set_for_all_namespaces(limit=1)
        client.AppsV1Api(api).list_deployment_for_all_namespaces(limit=1)
        client.BatchV1Api(api).list_job_for_all_namespaces(limit=1)
        client.ApiextensionsV1Api(api).list_custom_resource_definition(limit=1)
        involved = {"kind": "Pod", "namespace": target, "name": "judged", "apiVersion": "v1"}
        core.create_namespaced_event(
            target,
            {
                "metadata": {"generateName": "muster-"},
                "involvedObject": involved,
                "reason": "Test",
                "message": "core event",
                "type": "Normal",
            },
        )
        # The generated client mangles MicroTime: post the events.k8s.io Event as raw JSON.
        _post(
            release.plane,
            api,
            f"/apis/events.k8s.io/v1/namespaces/{target}/events",
            {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"generateName": "muster-"},
                "regarding": involved,
                "reason": "Test",
                "note": "events.k8s.io event",
                "type": "Normal",
                "action": "Judged",
                "reportingController": "muster.dev/operator",
                "reportingInstance": "test",
                "eventTime": "2026-01-01T00:00:00.000000Z",
            },
        )
        peerings = client.CustomObjectsApi(api)
        peerings.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")
        peerings.patch_cluster_custom_object(
            "kopf.dev",
            "v1",
            "clusterkopfpeerings",
            release.fullname,
            {"status": {"test-peer": None}},
        )

        refused = [
            lambda: core.list_secret_for_all_namespaces(limit=1),
            lambda: core.list_namespaced_secret(release.namespace, limit=1),
            lambda: core.list_namespaced_config_map(release.namespace, limit=1),
            lambda: core.create_namespaced_pod(target, kubeclients.pod("p", "busybox")),
            lambda: client.AdmissionregistrationV1Api(api).delete_validating_webhook_configuration(
                release.fullname
            ),
            lambda: peerings.patch_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", "someone-else", {"status": {}}
            ),
        ]
        for attempt in refused:
            with pytest.raises(client.ApiException) as error:
                attempt()
            assert error.value.status == 403


def test_service_account_writes_only_the_policy_reports_named_muster(release: Release) -> None:
    """Asked of the real authorizer (no CRD needed): list and create reports, and get, replace
    and delete only those named muster, never another tool's (Kyverno's)."""
    user = f"system:serviceaccount:{release.namespace}:{release.fullname}"

    def allowed(verb: str, resource: str, name: str = "", namespace: str = "team") -> bool:
        attributes = {"group": "wgpolicyk8s.io", "resource": resource, "verb": verb}
        if name:
            attributes["name"] = name
        if resource == "policyreports":
            attributes["namespace"] = namespace
        review = {"spec": {"user": user, "resourceAttributes": attributes}}
        with kubeclients.admin(release.plane) as api:
            answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
        return bool(answer.status.allowed)

    for resource in ("policyreports", "clusterpolicyreports"):
        assert allowed("list", resource) and allowed("create", resource)
        for verb in ("get", "update", "delete"):
            assert allowed(verb, resource, "muster"), (verb, resource)
            assert not allowed(verb, resource, "kyverno-report"), (verb, resource)
        assert not allowed("patch", resource, "muster") and not allowed("watch", resource)


def _bind_view(
    plane: controlplane.ControlPlane, account: str, namespace: str, *, cluster_wide: bool
) -> None:
    """Grant the built-in ``view`` role to ``account`` of the release's namespace: cluster-wide,
    or only in ``namespace`` (as a team is usually given it)."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}
    body = {"metadata": {"name": account}, "roleRef": ref, "subjects": [subject]}
    with kubeclients.admin(plane) as api:
        rbac = client.RbacAuthorizationV1Api(api)
        if cluster_wide:
            rbac.create_cluster_role_binding(body)
        else:
            rbac.create_namespaced_role_binding(namespace, body)


def _readable(call: Any) -> bool:
    try:
        call()
    except client.ApiException as error:
        assert error.status == 403, error
        return False
    return True


def test_viewers_can_read_musters_objects(release: Release) -> None:
    """The chart's read-only role is aggregated into ``view`` by the controller-manager: a
    namespace viewer reads the namespace's WorkloadBOMs, a cluster-wide viewer also the
    (cluster-scoped) policies, Models and ImageScans; neither may change them."""
    team = kubeclients.namespace(release.plane, "muster-chart-view")
    _bind_view(release.plane, "team-viewer", team, cluster_wide=False)
    _bind_view(release.plane, f"{release.name}-viewer", release.namespace, cluster_wide=True)
    with (
        kubeclients.service_account(release.plane, team, "team-viewer") as local,
        kubeclients.service_account(
            release.plane, release.namespace, f"{release.name}-viewer"
        ) as everywhere,
    ):
        boms = client.CustomObjectsApi(local)
        policies = client.CustomObjectsApi(everywhere)
        group = ("muster.dev", "v1alpha1")
        # Aggregation is asynchronous: the controller copies the rules into `view` shortly.
        deadline = time.monotonic() + 60
        while not (
            _readable(lambda: boms.list_namespaced_custom_object(*group, team, "workloadboms"))
            and _readable(lambda: policies.list_cluster_custom_object(*group, "imagepolicies"))
        ):
            assert time.monotonic() < deadline, "the view role never got Muster's rules"
            time.sleep(0.5)
        for plural in ("gpustackpolicies", "models", "modelpolicies", "imagescans"):
            policies.list_cluster_custom_object(*group, plural)
        # A namespace viewer does not see cluster-scoped objects (RBAC, not the chart).
        assert not _readable(lambda: boms.list_cluster_custom_object(*group, "imagepolicies"))
        with pytest.raises(client.ApiException) as error:
            policies.create_cluster_custom_object(
                *group,
                "imagepolicies",
                {
                    "apiVersion": "muster.dev/v1alpha1",
                    "kind": "ImagePolicy",
                    "metadata": {"name": "mine"},
                    "spec": {"images": ["**"], "authorities": [{"static": {"action": "pass"}}]},
                },
            )
        assert error.value.status == 403


def _post(
    plane: controlplane.ControlPlane, api: client.ApiClient, path: str, body: dict[str, Any]
) -> None:
    token = api.configuration.api_key["BearerToken"]
    request = urllib.request.Request(
        plane.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=plane.state.ca_file)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        assert response.status == 201


def _create_pod(plane: controlplane.ControlPlane, namespace: str) -> None:
    with kubeclients.admin(plane) as api:
        client.CoreV1Api(api).create_namespaced_pod(namespace, kubeclients.pod("p", "busybox:1"))


def test_webhooks_judge_only_namespaces_that_opted_in(release: Release) -> None:
    """Nothing serves behind the Service here: enforce fails closed, warn and the rest do not."""
    scope = {SCOPE_LABEL: release.name}
    enforce = kubeclients.namespace(
        release.plane, "enforce", {**scope, "muster.dev/enforce": "true"}
    )
    warn = kubeclients.namespace(release.plane, "warn", {**scope, "muster.dev/enforce": "warn"})
    ignored = kubeclients.namespace(
        release.plane,
        "ignored",
        {**scope, "muster.dev/enforce": "true", "muster.dev/ignore": "true"},
    )
    plain = kubeclients.namespace(release.plane, "plain", scope)
    with pytest.raises(client.ApiException) as error:
        _create_pod(release.plane, enforce)
    assert "enforce.mutate.pods.muster.dev" in error.value.body
    for namespace in (warn, ignored, plain):
        _create_pod(release.plane, namespace)


def test_hooks_are_accepted_by_the_real_schemas(release: Release) -> None:
    """The pre-delete hook and the helm test pod, checked with a server-side dry run."""
    rendered = rendering.template(
        "--show-only=templates/hooks/pre-delete.yaml",
        "--show-only=templates/tests/webhook-ready.yaml",
        release=release.name,
        namespace=release.namespace,
    )
    kinds = {doc["kind"] for doc in rendering.documents(rendered)}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job", "Pod"}
    result = controlplane.kubectl(
        release.plane, "apply", "--dry-run=server", "-f", "-", input_=rendered
    )
    assert result.stdout.count("(server dry run)") == 5, result.stdout


# Scenarios whose objects the control plane can take: cert-manager's and prometheus-operator's
# CRDs are not installed there, so their objects are left out of the dry run.
ABSENT_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


@pytest.mark.parametrize(
    "scenario", ["node-agent", "network-policy", "single-replica", "warn-only", "monitoring"]
)
def test_scenarios_are_accepted_by_the_real_schemas(release: Release, scenario: str) -> None:
    rendered = rendering.template(
        f"--values={CHART / 'ci' / f'{scenario}-values.yaml'}",
        release=f"muster-dry-{scenario}",
        namespace=release.namespace,
    )
    docs = [
        doc
        for doc in rendering.documents(rendered)
        if not doc["apiVersion"].startswith(ABSENT_GROUPS)
    ]
    result = controlplane.kubectl(
        release.plane,
        "apply",
        "--dry-run=server",
        f"--namespace={release.namespace}",
        "-f",
        "-",
        input_=yaml.safe_dump_all(docs),
    )
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout
    if scenario == "node-agent":
        # The agent reads host paths, the one thing `restricted` (and `baseline`) forbid here:
        # its namespace must allow them.
        assert result.stderr.strip() == (
            'Warning: would violate PodSecurity "restricted:latest": restricted volume types '
            '(volumes "proc-driver-nvidia", "sys-module-nvidia", "kernel-release", '
            '"kernel-modules", "driver-libraries", "toolkit-binaries", "toolkit-config" use '
            'restricted volume type "hostPath")'
        )
    else:
        assert "PodSecurity" not in result.stderr, result.stderr


def _operator_args(release: Release) -> list[str]:
    with kubeclients.admin(release.plane) as api:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(
            release.fullname, release.namespace
        )
    return list(deployment.spec.template.spec.containers[0].args)


def test_an_image_without_digest_is_warned_about_and_a_digest_reaches_the_verifier(
    release: Release,
) -> None:
    """The model gate's init container runs Muster's image, and the pinning gate denies images by
    tag in enforce namespaces: the install warns while image.digest is empty, and a digest is
    what the operator then injects."""
    notes = release.helm("get", "notes", release.name)
    assert "WARNING: image.digest is empty" in notes, notes
    assert "--verifier-image=ghcr.io/muster-dev/muster:" in " ".join(_operator_args(release))
    digest = "sha256:" + "3f" * 32
    release.helm(
        "upgrade", release.name, str(CHART), "--reuse-values", f"--set=image.digest={digest}"
    )
    assert "WARNING" not in release.helm("get", "notes", release.name)
    args = _operator_args(release)
    assert f"--verifier-image=ghcr.io/muster-dev/muster@{digest}" in args, args


def test_uninstall_leaves_no_webhook_configuration(release: Release) -> None:
    """The documented ``helm uninstall muster -n muster-system`` (docs/operations.md and the
    chart's README), with this release's name and namespace and --no-hooks (see the module
    docstring): every line but the last as a --dry-run, the last one for real."""
    blocks = docblocks.named("delegated", "tests/integration/chart/test_install.py")
    assert {block.doc for block in blocks} == {"docs/operations.md", "charts/muster/README.md"}
    lines = [argv for block in blocks for argv in docblocks.command_lines(block)]
    ours = {"muster": release.name, "muster-system": release.namespace}
    for index, argv in enumerate(lines):
        assert argv[:2] == ["helm", "uninstall"], argv
        last = index == len(lines) - 1
        done = rendering.helm(
            *(ours.get(word, word) for word in argv[1:]),
            "--no-hooks",
            "--wait" if last else "--dry-run",
            f"--kubeconfig={release.plane.kubeconfig}",
        )
        assert f'release "{release.name}" uninstalled' in done.stdout
    with kubeclients.admin(release.plane) as api:
        admission = client.AdmissionregistrationV1Api(api)
        selector = f"app.kubernetes.io/instance={release.name}"
        assert not admission.list_validating_webhook_configuration(label_selector=selector).items
        assert not admission.list_mutating_webhook_configuration(label_selector=selector).items
        for read in (
            admission.read_validating_webhook_configuration,
            admission.read_mutating_webhook_configuration,
        ):
            with pytest.raises(client.ApiException) as error:
                read(release.fullname)
            assert error.value.status == 404
        # Helm never deletes CRDs: kopf's peering CRD stays for the next install.
        client.ApiextensionsV1Api(api).read_custom_resource_definition(
            "clusterkopfpeerings.kopf.dev"
        )

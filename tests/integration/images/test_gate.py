"""The image gate with the real apiserver (namespaces, pull secrets) and the real registry."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes import client

from muster.images import gate as imagegate
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings, gates
from muster.platform import controlplane
from tests import kubeclients, peers
from tests.imagegates import area_with, pod, subject, use_policies
from tests.integration.images.conftest import Signer, policy, sign_v2

pytestmark = pytest.mark.integration


@pytest.fixture
async def area(
    control_plane: controlplane.ControlPlane, registry: peers.Registry
) -> AsyncIterator[imagegate.ImageArea]:
    async with area_with(control_plane, registry) as found:
        yield found


async def test_deployment_is_pinned_and_its_pods_hit_the_cache(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/app", "v1", workdir=tmp_path)
    sign_v2(signers["alice"], f"{registry.host}/gate/app@{digest}")
    use_policies(area, policy(registry.host, signers["alice"]))
    namespace = kubeclients.namespace(control_plane, "gate")
    image = registry.ref("gate/app", "v1")
    deployment = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "trainer", "image": image}]}}},
    }
    mutated = await imagegate.ImageGate(area).judge(
        subject(namespace, deployment, "deployments"), gates.Phase.MUTATE
    )
    assert mutated.patch == (
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"{image}@{digest}",
        },
    )
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = f"{image}@{digest}"
    judged = await imagegate.ImageGate(area).judge(
        subject(namespace, deployment, "deployments"), gates.Phase.VALIDATE
    )
    assert judged.findings == ()
    before = area.verifier.requests
    for _ in range(3):  # the ReplicaSet and its pods: same digest, same policy generation
        child = await imagegate.ImageGate(area).judge(
            subject(namespace, pod(f"{image}@{digest}")), gates.Phase.VALIDATE
        )
        assert child.findings == ()
    assert area.verifier.requests == before


async def test_denial_names_container_image_policy_and_reason(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/unsigned", "v1", workdir=tmp_path)
    use_policies(
        area,
        policy(registry.host, signers["alice"], name="team"),
        policy(registry.host, signers["bob"], name="audit", mode="warn"),
    )
    namespace = kubeclients.namespace(control_plane, "gate")
    image = f"{registry.host}/gate/unsigned@{digest}"
    result = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(image, initContainers=[{"name": "setup", "image": image}])),
        gates.Phase.VALIDATE,
    )
    # Each says whom the policy trusts to sign: its authority's name and key fingerprint.
    signer = {"team": "alice (ECDSA", "audit": "bob (ECDSA"}
    for finding in result.findings:
        assert finding.policy is not None
        expected = f"; it must be signed (cosign sign) by {signer[finding.policy.name]}"
        assert expected in finding.message, finding.message
    lines = sorted((f.mode.value, str(f).split("; it must be signed")[0]) for f in result.findings)
    assert lines == [
        (
            "enforce",
            f"container \"trainer\": image '{image}' is rejected by ImagePolicy 'team': "
            f"no signature found for {digest}",
        ),
        (
            "enforce",
            f"init container \"setup\": image '{image}' is rejected by ImagePolicy 'team': "
            f"no signature found for {digest}",
        ),
        (
            "warn",
            f"container \"trainer\": image '{image}' is rejected by ImagePolicy 'audit': "
            f"no signature found for {digest}",
        ),
        (
            "warn",
            f"init container \"setup\": image '{image}' is rejected by ImagePolicy 'audit': "
            f"no signature found for {digest}",
        ),
    ]
    assert {f.reason for f in result.findings} == {"ImageNotSigned"}


async def test_namespace_selector_and_broken_policies(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/selected", "v1", workdir=tmp_path)
    image = f"{registry.host}/gate/selected@{digest}"
    selected = imagepolicies.compile_policy(
        "ml-only",
        1,
        imagepolicies.parse_spec(
            {
                "images": [f"{registry.host}/**"],
                "namespaceSelector": {"matchLabels": {"team": "ml"}},
                "authorities": [{"key": {"data": signers["alice"].pem}}],
            }
        ),
        {},
    )
    use_policies(area, selected)
    gate = imagegate.ImageGate(area)
    other = kubeclients.namespace(control_plane, "gate", {"team": "web"})
    ml = kubeclients.namespace(control_plane, "gate", {"team": "ml"})
    # Not selected: no policy covers the image here, which is a denial of its own.
    unselected = await gate.judge(subject(other, pod(image)), gates.Phase.VALIDATE)
    assert [f.reason for f in unselected.findings] == ["ImageNotCovered"]
    assert "no ImagePolicy applies to this namespace" in unselected.findings[0].message
    denied = await gate.judge(subject(ml, pod(image)), gates.Phase.VALIDATE)
    assert [f.reason for f in denied.findings] == ["ImageNotSigned"]
    # A policy that does not compile fails closed for what it covers, and says why.
    area.store.fail(
        "broken",
        4,
        "ConfigMap s/r key 'trusted_root.json' was not found",
        {"images": [f"{registry.host}/gate/**"], "authorities": [{"key": {"data": "x"}}]},
    )
    broken = await gate.judge(subject(other, pod(image)), gates.Phase.VALIDATE)
    assert [f.reason for f in broken.findings] == ["ImagePolicyInvalid"]
    assert "ImagePolicy 'broken' does not compile (ConfigMap s/r" in str(broken.findings[0])


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(
        tmp_path_factory.mktemp("private-images"), users={"ci": "s3cret"}
    ) as running:
        yield running


async def test_pull_secrets_of_the_service_account_are_used(
    control_plane: controlplane.ControlPlane,
    private_registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    host = private_registry.host
    digest = peers.push_image(
        private_registry, "private/app", workdir=tmp_path, credentials=("ci", "s3cret")
    )
    auth = base64.b64encode(b"ci:s3cret").decode()
    config_dir = tmp_path / "cosign-docker-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    sign_v2(signers["alice"], f"{host}/private/app@{digest}", docker_config=config_dir)
    namespace = kubeclients.namespace(control_plane, "gate")
    secret_data = json.dumps({"auths": {f"http://{host}": {"auth": auth}}}).encode()
    with kubeclients.admin(control_plane) as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "pull"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64.b64encode(secret_data).decode()},
            },
        )
        core.create_namespaced_service_account(
            namespace, {"metadata": {"name": "trainer"}, "imagePullSecrets": [{"name": "pull"}]}
        )
    async with area_with(control_plane, private_registry) as area:
        use_policies(area, policy(host, signers["alice"]))
        gate = imagegate.ImageGate(area)
        image = f"{host}/private/app@{digest}"
        anonymous = await gate.judge(subject(namespace, pod(image)), gates.Phase.VALIDATE)
        assert [f.reason for f in anonymous.findings] == ["SignatureLookupFailed"]
        assert "requires credentials" in anonymous.findings[0].message
        assert "s3cret" not in anonymous.findings[0].message
        area.verifier.forget()
        with_account = await gate.judge(
            subject(namespace, pod(image, serviceAccountName="trainer")), gates.Phase.VALIDATE
        )
        assert with_account.findings == ()
        area.verifier.forget()
        with_pod_secret = await gate.judge(
            subject(namespace, pod(image, imagePullSecrets=[{"name": "pull"}])),
            gates.Phase.VALIDATE,
        )
        assert with_pod_secret.findings == ()


# --- images no policy covers, aliases, static authorities ----------------------------------------


def static(name: str, action: str, *images: str) -> imagepolicies.CompiledPolicy:
    return imagepolicies.compile_policy(
        name,
        1,
        imagepolicies.parse_spec(
            {"images": list(images), "authorities": [{"static": {"action": action}}]}
        ),
        {},
    )


def alias(host: str) -> str:
    """The test registry (127.0.0.1:PORT) under its other name: the same registry."""
    address, _, port = host.partition(":")
    assert address == "127.0.0.1", host
    return f"localhost:{port}"


async def test_a_pinned_image_no_policy_covers_is_denied_naming_the_patterns(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/uncovered", "v1", workdir=tmp_path)
    use_policies(area, policy(registry.host, signers["alice"], name="team", images="team/**"))
    namespace = kubeclients.namespace(control_plane, "gate")
    image = f"{registry.host}/gate/uncovered@{digest}"
    before = area.verifier.requests
    result = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(image)), gates.Phase.VALIDATE
    )
    (finding,) = result.findings
    assert (finding.reason, finding.mode, finding.subject) == (
        "ImageNotCovered",
        findings.Mode.ENFORCE,
        'container "trainer"',
    )
    assert f"image '{image}' is not covered by any ImagePolicy" in finding.message
    assert f"{registry.host}/team/** (team)" in finding.message
    assert "static: {action: pass}" in finding.message
    assert area.verifier.requests == before  # decided without asking the registry
    # The mutation has nothing to do with it (pinning is for covered images).
    mutated = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(f"{registry.host}/gate/uncovered:v1")), gates.Phase.MUTATE
    )
    assert mutated.patch == ()


async def test_no_policy_at_all_admits_nothing(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/nopolicy", "v1", workdir=tmp_path)
    use_policies(area)
    namespace = kubeclients.namespace(control_plane, "gate")
    result = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(f"{registry.host}/gate/nopolicy@{digest}")), gates.Phase.VALIDATE
    )
    assert [f.reason for f in result.findings] == ["ImageNotCovered"]


async def test_the_same_registry_under_another_name_is_not_covered(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/alias", "v1", workdir=tmp_path)
    sign_v2(signers["alice"], f"{registry.host}/gate/alias@{digest}")
    use_policies(area, policy(registry.host, signers["alice"], name="by-address"))
    namespace = kubeclients.namespace(control_plane, "gate")
    gate = imagegate.ImageGate(area)
    signed = await gate.judge(
        subject(namespace, pod(f"{registry.host}/gate/alias@{digest}")), gates.Phase.VALIDATE
    )
    assert signed.findings == ()
    other = f"{alias(registry.host)}/gate/alias@{digest}"
    aliased = await gate.judge(subject(namespace, pod(other)), gates.Phase.VALIDATE)
    assert [f.reason for f in aliased.findings] == ["ImageNotCovered"]
    assert f"{registry.host}/** (by-address)" in aliased.findings[0].message
    # A spelling of the covered name is that name (here a trailing dot; case and the default
    # port in the unit tests): verified like it, against the same registry.
    address, _, port = registry.host.partition(":")
    spelled = await gate.judge(
        subject(namespace, pod(f"{address}.:{port}/gate/alias@{digest}")), gates.Phase.VALIDATE
    )
    assert spelled.findings == ()


@pytest.mark.parametrize(
    ("setting", "label", "expected"),
    [
        (imagepolicies.Uncovered.WARN, None, [("ImageNotCovered", "warn")]),
        (imagepolicies.Uncovered.ALLOW, None, []),
        (imagepolicies.Uncovered.DENY, "warn", [("ImageNotCovered", "warn")]),
        (imagepolicies.Uncovered.DENY, "allow", []),
        (imagepolicies.Uncovered.ALLOW, "deny", [("ImageNotCovered", "enforce")]),
        (imagepolicies.Uncovered.ALLOW, "yes-please", [("ImageNotCovered", "enforce")]),
    ],
)
async def test_uncovered_images_follow_the_setting_and_the_namespace_label(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
    setting: imagepolicies.Uncovered,
    label: str | None,
    expected: list[tuple[str, str]],
) -> None:
    digest = peers.push_image(registry, "gate/modes", "v1", workdir=tmp_path)
    labels = {} if label is None else {imagepolicies.UNCOVERED_LABEL: label}
    namespace = kubeclients.namespace(control_plane, "gate", labels)
    async with area_with(control_plane, registry, uncovered_images=setting) as area:
        use_policies(area, policy(registry.host, signers["alice"], images="elsewhere/**"))
        result = await imagegate.ImageGate(area).judge(
            subject(namespace, pod(f"{registry.host}/gate/modes@{digest}")), gates.Phase.VALIDATE
        )
    assert [(f.reason, f.mode.value) for f in result.findings] == expected
    if expected and label is not None:
        assert imagepolicies.UNCOVERED_LABEL in result.findings[0].message


async def test_a_static_pass_admits_a_pinned_unsigned_image_and_says_so(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "vendor/sidecar", "v1", workdir=tmp_path)
    use_policies(area, static("mesh-sidecars", "pass", f"{registry.host}/vendor/sidecar"))
    namespace = kubeclients.namespace(control_plane, "gate")
    image = f"{registry.host}/vendor/sidecar@{digest}"
    gate = imagegate.ImageGate(area)
    before = area.verifier.requests
    judged = await gate.judge(subject(namespace, pod(image)), gates.Phase.VALIDATE)
    assert area.verifier.requests == before  # no signatures looked for
    (finding,) = judged.findings
    assert (finding.reason, finding.mode) == ("ImagePassedUnsigned", findings.Mode.WARN)
    assert finding.policy == imagegate.policy_ref("mesh-sidecars")
    assert finding.message == (
        f"image '{image}' is let in without a signature by ImagePolicy 'mesh-sidecars' "
        "(static pass)"
    )
    # A tag is pinned by the mutation, as for any covered image.
    tagged = registry.ref("vendor/sidecar", "v1")
    mutated = await gate.judge(subject(namespace, pod(tagged)), gates.Phase.MUTATE)
    assert mutated.patch == (
        {"op": "replace", "path": "/spec/containers/0/image", "value": f"{tagged}@{digest}"},
    )
    # Only what it names: the next repository is not covered.
    other = peers.push_image(registry, "vendor/other", "v1", workdir=tmp_path)
    uncovered = await gate.judge(
        subject(namespace, pod(f"{registry.host}/vendor/other@{other}")), gates.Phase.VALIDATE
    )
    assert [f.reason for f in uncovered.findings] == ["ImageNotCovered"]


async def test_a_static_pass_never_overrides_a_signing_policy_and_static_fail_refuses(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/both", "v1", workdir=tmp_path)
    image = f"{registry.host}/gate/both@{digest}"
    namespace = kubeclients.namespace(control_plane, "gate")
    use_policies(
        area,
        static("pass-all", "pass", f"{registry.host}/**"),
        policy(registry.host, signers["alice"], name="signed", images="gate/**"),
    )
    both = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(image)), gates.Phase.VALIDATE
    )
    assert [(f.reason, f.mode.value) for f in both.findings] == [("ImageNotSigned", "enforce")]
    area.store.remove("signed")
    area.store.put(static("never", "fail", f"{registry.host}/gate/both"))
    refused = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(image)), gates.Phase.VALIDATE
    )
    assert [f.reason for f in refused.findings] == ["ImageDisallowed"]
    assert "ImagePolicy 'never' refuses every image it covers" in refused.findings[0].message


async def test_image_volumes_are_images_too(
    area: imagegate.ImageArea,
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
    tmp_path: Path,
) -> None:
    digest = peers.push_image(registry, "gate/weights", "v1", workdir=tmp_path)
    use_policies(area, policy(registry.host, signers["alice"], images="team/**"))
    namespace = kubeclients.namespace(control_plane, "gate")
    volume = {
        "name": "weights",
        "image": {"reference": f"{alias(registry.host)}/gate/weights@{digest}"},
    }
    signed = f"{registry.host}/team/app@sha256:" + "0" * 64
    result = await imagegate.ImageGate(area).judge(
        subject(namespace, pod(signed, volumes=[volume])), gates.Phase.VALIDATE
    )
    uncovered = [f for f in result.findings if f.reason == "ImageNotCovered"]
    assert [f.subject for f in uncovered] == ['image volume "weights"']


async def test_the_model_verifier_image_muster_injects_counts_as_covered(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    signers: dict[str, Signer],
) -> None:
    verifier = "registry.example/muster/muster:v1@sha256:" + "5e" * 32
    namespace = kubeclients.namespace(control_plane, "gate")
    async with area_with(control_plane, registry, model_verifier_image=verifier) as area:
        use_policies(area, policy(registry.host, signers["alice"], images="team/**"))
        gate = imagegate.ImageGate(area)
        injected = pod(verifier)
        assert (await gate.judge(subject(namespace, injected), gates.Phase.VALIDATE)).findings == ()
        # By digest only: the same repository at another digest is an image like any other.
        other = "registry.example/muster/muster@sha256:" + "6f" * 32
        judged = await gate.judge(subject(namespace, pod(other)), gates.Phase.VALIDATE)
        assert [f.reason for f in judged.findings] == ["ImageNotCovered"]

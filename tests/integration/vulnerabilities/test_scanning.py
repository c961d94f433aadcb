"""Real trivy scanning images in the real registry against a tiny DB the tests wrote; the
results stored as ImageScans in the real apiserver and judged by the vulnerability gate."""

from __future__ import annotations

import datetime
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from muster.admission import pipeline as admissions
from muster.admission import server
from muster.app import localoperator, runtime
from muster.images import gate as imagegate
from muster.images.rules import policies as imagepolicies
from muster.kernel import crds, findings, gates, references
from muster.platform import controlplane, kubeapi, registries
from muster.vulnerabilities import gate as vulnerabilities
from muster.vulnerabilities import scanner
from tests import kubeclients, peers, trivydb
from tests.integration.vulnerabilities.conftest import PLANTED, Images

pytestmark = pytest.mark.integration


def trivy_for(cache: Path, reader: registries.RegistryClient, **fields: Any) -> scanner.Trivy:
    return scanner.Trivy(scanner.TrivySettings(cache_dir=cache, **fields), reader)


@pytest.fixture
async def registry_client(registry: peers.Registry) -> AsyncIterator[registries.RegistryClient]:
    settings = registries.RegistrySettings(insecure_registries=frozenset({registry.host}))
    async with registries.RegistryClient(settings) as found:
        yield found


async def test_real_trivy_finds_the_planted_package(
    trivy_cache: Path,
    registry_client: registries.RegistryClient,
    planted_images: Images,
    tmp_path: Path,
) -> None:
    # The DB alone, none of trivy's cached analyses: the scan reads the whole image.
    cache = tmp_path / "trivy"
    shutil.copytree(trivy_cache / "db", cache / "db")
    status = await trivy_for(cache, registry_client).scan(planted_images.vulnerable)
    # Every byte trivy read came through Muster's registry client (the scan relay).
    assert registry_client.stats.requests >= 3  # the manifest, the config, the layer
    assert status.error == ""
    assert status.os == "debian 12.7"
    assert status.db_version == 2
    metadata = json.loads((cache / "db" / "metadata.json").read_text())
    assert status.db_updated_at == metadata["UpdatedAt"]
    assert status.counts == {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 0, "HIGH": 1, "CRITICAL": 0}
    by_id = {finding.id: finding for finding in status.findings}
    assert set(by_id) == {"CVE-2099-0001", "CVE-2099-0002"}  # "safe" 2.0-1 is past the fix
    assert by_id["CVE-2099-0001"].package == "libplanted"
    assert by_id["CVE-2099-0001"].installed_version == "1.0-1"
    assert by_id["CVE-2099-0001"].fixed_version == "1.0-2"
    assert by_id["CVE-2099-0002"].fixed_version == ""

    clean = await trivy_for(cache, registry_client).scan(planted_images.clean)
    assert sum(clean.counts.values()) == 0


async def test_scan_failures_are_errors(
    trivy_cache: Path,
    registry: peers.Registry,
    registry_client: registries.RegistryClient,
    planted_images: Images,
    tmp_path: Path,
) -> None:
    missing = f"{registry.host}/vulns/absent@sha256:{'0' * 64}"
    # Fetched before trivy starts: the registry's answer is the error, trivy never runs.
    with pytest.raises(scanner.ScanError, match=r"not scanned: manifest .* does not exist"):
        await trivy_for(trivy_cache, registry_client).scan(missing)
    with pytest.raises(scanner.ScanError, match="only digest-pinned"):
        await trivy_for(trivy_cache, registry_client).scan(f"{registry.host}/vulns/app:v1")
    with pytest.raises(scanner.ScanError, match="metadata"):
        await trivy_for(tmp_path, registry_client).scan(missing)
    with pytest.raises(scanner.ScanError, match="within"):
        slow = trivy_for(trivy_cache, registry_client, timeout=0.001)
        await slow.scan(planted_images.vulnerable)


@pytest.fixture
async def services(
    control_plane: controlplane.ControlPlane,
    registry: peers.Registry,
    tmp_path: Path,
    trivy_cache: Path,
) -> AsyncIterator[runtime.Services]:
    localoperator.install_crds(control_plane)
    cache = tmp_path / "trivy"
    shutil.copytree(trivy_cache, cache)  # tests that rewrite the DB get their own copy
    settings = runtime.OperatorSettings(
        webhook=server.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
        trivy_cache_dir=cache,
        scan_concurrency=2,
        scan_timeout=120,
    )
    built = runtime.Services(
        settings=settings,
        kube=kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig))),
        registries=registries.RegistryClient(settings.registry),
    )
    yield built
    await vulnerabilities.area_for(built).stop()
    await imagegate.area_for(built).verifier.close()
    await built.close()


def delete_scan(plane: controlplane.ControlPlane, digest: str) -> None:
    with kubeclients.admin(plane) as api:
        try:
            client.CustomObjectsApi(api).delete_cluster_custom_object(
                crds.GROUP, crds.VERSION, "imagescans", digest.replace(":", "-")
            )
        except client.ApiException as error:
            assert error.status == 404


def read_scan(plane: controlplane.ControlPlane, digest: str) -> dict[str, Any]:
    with kubeclients.admin(plane) as api:
        found: dict[str, Any] = client.CustomObjectsApi(api).get_cluster_custom_object(
            crds.GROUP, crds.VERSION, "imagescans", digest.replace(":", "-")
        )
        return found


async def test_queued_digests_are_scanned_into_imagescans_shared_by_replicas(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    planted_images: Images,
) -> None:
    delete_scan(control_plane, planted_images.digest)
    area = vulnerabilities.area_for(services)
    assert area.enqueue(planted_images.vulnerable)
    assert not area.enqueue(planted_images.vulnerable)  # already queued: once
    assert not area.enqueue("registry.example/app:latest")  # only digests are scanned
    await area.queue.join()
    stored = read_scan(control_plane, planted_images.digest)
    assert stored["spec"] == {
        "digest": planted_images.digest,
        "image": planted_images.vulnerable,
    }
    assert stored["status"]["counts"]["HIGH"] == 1
    assert stored["status"]["findings"][0]["id"] == "CVE-2099-0001"
    assert services.metrics.image_vulnerabilities.labels("HIGH")._value.get() >= 1
    # A current scan is not repeated.
    assert not area.enqueue(planted_images.vulnerable)
    # Another replica (a fresh index) finds it by listing the cluster.
    other = vulnerabilities.ScanIndex(services.kube)
    found = await other.get(planted_images.digest)
    assert found is not None
    assert found.counts["HIGH"] == 1


async def test_a_changed_db_queues_a_rescan(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    planted_images: Images,
) -> None:
    area = vulnerabilities.area_for(services)
    area.enqueue(planted_images.vulnerable)
    await area.queue.join()
    assert area.rescan_if_db_changed() == 0
    later = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(hours=1)
    cache = services.settings.trivy_cache_dir
    assert cache is not None
    trivydb.write_db(
        cache,
        [*PLANTED, trivydb.Advisory("CVE-2099-0004", "libplanted", "CRITICAL", "1.0-3")],
        updated_at=later,
    )
    assert area.rescan_if_db_changed() == 1
    await area.queue.join()
    status = read_scan(control_plane, planted_images.digest)["status"]
    assert status["counts"]["CRITICAL"] == 1
    assert status["dbUpdatedAt"] == later.isoformat().replace("+00:00", "Z")


def _policy(
    host: str, vulns: dict[str, Any], mode: str = "enforce"
) -> imagepolicies.CompiledPolicy:
    spec = {
        "images": [f"{host}/vulns/**"],
        "mode": mode,
        "authorities": [{"name": "any", "key": {"data": PUBLIC_KEY}}],
        "vulnerabilities": vulns,
    }
    return imagepolicies.compile_policy("vulns-" + mode, 1, imagepolicies.parse_spec(spec), {})


PUBLIC_KEY = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def review(namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": namespace,
            "name": "p",
            "userInfo": {"username": "tester"},
            "object": {
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": namespace},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def test_the_gate_denies_or_warns_through_the_pipeline(
    control_plane: controlplane.ControlPlane,
    services: runtime.Services,
    registry: peers.Registry,
    planted_images: Images,
) -> None:
    delete_scan(control_plane, planted_images.digest)
    namespace = kubeclients.namespace(control_plane, "vulns", {"muster.dev/enforce": "true"})
    images = imagegate.area_for(services)
    images.store.put(_policy(registry.host, {"maxSeverity": "MEDIUM", "whenUnscanned": "deny"}))
    images.store.listed_at = time.monotonic()
    images.store.refresh = 3600
    area = vulnerabilities.area_for(services)
    pipeline = admissions.Pipeline(active_gates=vulnerabilities.gate_factory(services))

    first = await pipeline.review(
        review(namespace, planted_images.vulnerable), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert first["response"]["allowed"] is False
    assert "not scanned yet" in first["response"]["status"]["message"]
    assert planted_images.digest in area.queued  # queued by admission, scanned elsewhere
    # Remembered as admission resolved it: pod events may re-queue only such digests.
    assert area.admitted[planted_images.digest] == planted_images.vulnerable

    await area.queue.join()
    denied = await pipeline.review(
        review(namespace, planted_images.vulnerable), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert denied["response"]["allowed"] is False
    message = denied["response"]["status"]["message"]
    assert "CVE-2099-0001 (HIGH, libplanted 1.0-1)" in message
    assert "CVE-2099-0002" not in message  # LOW is within MEDIUM

    # A tag resolves to the same digest and the same stored scan.
    tagged = f"{registry.host}/vulns/app:v1"
    by_tag = await pipeline.review(
        review(namespace, tagged), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert by_tag["response"]["allowed"] is False

    clean_digest = references.parse(planted_images.clean).digest
    assert clean_digest is not None
    delete_scan(control_plane, clean_digest)
    area.enqueue(planted_images.clean)
    await area.queue.join()
    clean = await pipeline.review(
        review(namespace, planted_images.clean), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert clean["response"]["allowed"] is True

    images.store.put(_policy(registry.host, {"maxSeverity": "MEDIUM"}, mode="warn"))
    images.store.remove("vulns-enforce")
    warned = await pipeline.review(
        review(namespace, planted_images.vulnerable), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert warned["response"]["allowed"] is True
    assert any("CVE-2099-0001" in w for w in warned["response"]["warnings"])

    expires = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=7)).isoformat()
    images.store.remove("vulns-warn")
    images.store.put(
        _policy(
            registry.host,
            {"maxSeverity": "MEDIUM", "allow": [{"id": "CVE-2099-0001", "expires": expires}]},
        )
    )
    excepted = await pipeline.review(
        review(namespace, planted_images.vulnerable), gates.Phase.VALIDATE, findings.Mode.ENFORCE
    )
    assert excepted["response"]["allowed"] is True
    assert not excepted["response"].get("warnings")

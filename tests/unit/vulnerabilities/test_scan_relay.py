"""What the scan relay serves and which scans are queued at all: the pure rules, without trivy.

The relay answers trivy's pulls for one scan's repository only, by digest (tags only for the
DB repository); pod events re-queue only digests admission resolved, under admission's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.admission import server
from muster.app import runtime
from muster.kernel import references
from muster.platform import objectstore, podevents, registries
from muster.vulnerabilities import gate as vulnerabilities
from muster.vulnerabilities.rules import relay as scanrelay

pytestmark = pytest.mark.unit

TOKEN = "0123456789abcdef" * 2
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
IMAGE = scanrelay.Upstream(registry="ghcr.io", repository="acme/app")
DB = scanrelay.Upstream(registry="ghcr.io", repository="aquasecurity/trivy-db", tags=True)


def test_the_relay_serves_manifest_and_blob_reads_under_a_token() -> None:
    assert scanrelay.is_ping("/v2/") and scanrelay.is_ping("/v2")
    assert scanrelay.parse_path(f"/v2/{TOKEN}/acme/app/manifests/{DIGEST}") == scanrelay.Route(
        TOKEN, "acme/app", "manifests", DIGEST
    )
    assert scanrelay.parse_path(f"/v2/{TOKEN}/acme/app/blobs/{DIGEST}") == scanrelay.Route(
        TOKEN, "acme/app", "blobs", DIGEST
    )
    # A repository may itself have components named like the API's.
    assert scanrelay.parse_path(f"/v2/{TOKEN}/a/manifests/blobs/{DIGEST}") == scanrelay.Route(
        TOKEN, "a/manifests", "blobs", DIGEST
    )
    assert scanrelay.parse_path(f"/v2/{TOKEN}/aquasecurity/trivy-db/manifests/2") == (
        scanrelay.Route(TOKEN, "aquasecurity/trivy-db", "manifests", "2")
    )


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/v1/x",
        f"/v2/{TOKEN}/acme/app/blobs/latest",  # blobs by digest only
        f"/v2/{TOKEN}/acme/app/tags/list",
        f"/v2/{TOKEN}/acme/app/blobs/uploads/",
        f"/v2/{TOKEN}/acme/app/manifests/",
        f"/v2/{TOKEN}/manifests/{DIGEST}",  # no repository
        f"/v2/{TOKEN.upper()}/acme/app/manifests/{DIGEST}",
        f"/v2/short/acme/app/manifests/{DIGEST}",
        f"/v2/{TOKEN}/acme/../app/manifests/{DIGEST}",
        f"/v2/{TOKEN}/Acme/app/manifests/{DIGEST}",
        f"/v2/{TOKEN}/acme/app/manifests/sha256:{'ab' * 31}",  # a digest of the wrong length
        f"/v2/{TOKEN}/acme/app/manifests/md5:{'ab' * 16}",
    ],
)
def test_anything_else_is_not_served(path: str) -> None:
    assert scanrelay.parse_path(path) is None


def test_a_token_opens_one_repository_by_digest() -> None:
    route = scanrelay.Route(TOKEN, "acme/app", "manifests", DIGEST)
    assert scanrelay.route_refusal(IMAGE, route) is None
    assert (
        scanrelay.route_refusal(IMAGE, scanrelay.Route(TOKEN, "acme/app", "blobs", OTHER)) is None
    )
    assert "unknown or finished" in str(scanrelay.route_refusal(None, route))
    other = scanrelay.Route(TOKEN, "acme/other", "manifests", DIGEST)
    assert scanrelay.route_refusal(IMAGE, other) == (
        "this scan reads ghcr.io/acme/app only, not repository 'acme/other'"
    )
    by_tag = scanrelay.Route(TOKEN, "acme/app", "manifests", "latest")
    assert "by digest only" in str(scanrelay.route_refusal(IMAGE, by_tag))
    # The DB repository is read by tag (trivy asks for its schema version's tag).
    db_tag = scanrelay.Route(TOKEN, "aquasecurity/trivy-db", "manifests", "2")
    assert scanrelay.route_refusal(DB, db_tag) is None


def test_trivy_names_what_it_pulls_by_the_relay() -> None:
    relay = "127.0.0.1:4000"
    assert scanrelay.relay_reference(relay, TOKEN, IMAGE, DIGEST) == (
        f"127.0.0.1:4000/{TOKEN}/acme/app@{DIGEST}"
    )
    assert scanrelay.relay_reference(relay, TOKEN, DB, "2") == (
        f"127.0.0.1:4000/{TOKEN}/aquasecurity/trivy-db:2"
    )
    assert scanrelay.relay_reference(relay, TOKEN, DB, None) == (
        f"127.0.0.1:4000/{TOKEN}/aquasecurity/trivy-db"
    )
    # Whatever trivy is handed parses back to the same repository and digest under the token.
    parsed = references.parse(scanrelay.relay_reference(relay, TOKEN, IMAGE, DIGEST))
    assert (parsed.registry, parsed.repository, parsed.digest) == (
        relay,
        f"{TOKEN}/acme/app",
        DIGEST,
    )


def test_upstreams_are_read_from_references() -> None:
    assert scanrelay.upstream_of(f"ghcr.io/acme/app:v1@{DIGEST}") == (IMAGE, DIGEST)
    hub, digest = scanrelay.upstream_of(f"alpine@{DIGEST}")
    assert (hub.registry, hub.repository, digest) == ("docker.io", "library/alpine", DIGEST)
    # No tag written: none given (trivy picks the DB's schema tag), not "latest".
    assert scanrelay.upstream_of("ghcr.io/aquasecurity/trivy-db", tags=True) == (DB, None)
    assert scanrelay.upstream_of("ghcr.io/aquasecurity/trivy-db:2", tags=True) == (DB, "2")
    assert scanrelay.upstream_of("registry:5000/mirror/trivy-db", tags=True)[1] is None
    metadata = scanrelay.upstream_of(f"169.254.169.254/x@{DIGEST}")[0]
    assert metadata.registry == "169.254.169.254"  # judged by the client's egress rule
    with pytest.raises(references.InvalidReference):
        scanrelay.upstream_of("Not A Reference")


def test_proxied_requests_are_named_in_the_refusal() -> None:
    refusal = scanrelay.proxy_refusal("CONNECT", "169.254.169.254:443")
    assert refusal.startswith("trivy tried to reach 169.254.169.254:443 (CONNECT)")
    assert "only through Muster's registry client" in refusal
    assert "x" * 201 not in scanrelay.proxy_refusal("GET", "http://" + "x" * 500)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="/abcdef0123456789:.-_v2ABmnifstlob", max_size=120))
def test_no_path_is_served_that_names_no_token_repository_and_reference(path: str) -> None:
    route = scanrelay.parse_path(path)
    if route is not None:
        assert path == f"/v2/{route.token}/{route.repository}/{route.kind}/{route.reference}"
        assert len(route.token) == 32
        assert route.kind == "manifests" or ":" in route.reference


# ---------------------------------------------------------------------------------------------
# Which digests are scanned at all


def scanning_services(cache: Path) -> runtime.Services:
    configured = runtime.OperatorSettings(webhook=server.WebhookSettings(), trivy_cache_dir=cache)
    return runtime.Services(
        settings=configured,
        kube=objectstore.ObjectStore([]),
        registries=registries.RegistryClient(configured.registry),
    )


def pod(namespace: str, image: str, image_id: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "uid": "uid-p"},
        "spec": {"containers": [{"name": "c", "image": image}]},
        "status": {"containerStatuses": [{"name": "c", "imageID": image_id}]},
    }


def queued(area: vulnerabilities.ScanArea) -> list[tuple[str, str]]:
    found = []
    while not area.queue.empty():
        found.append(area.queue.get_nowait())
    return found


def test_pod_events_queue_only_digests_admission_resolved(tmp_path: Path) -> None:
    shared = scanning_services(tmp_path)
    registry = runtime.build_registry(shared)
    area = vulnerabilities.area_for(shared)
    area.started = True  # no trivy workers: this test reads the queue itself
    subscribers = podevents.subscribers(registry)  # what the operator's pod watch calls

    def deliver(body: dict[str, Any]) -> None:
        subscribers(body, "ADDED")

    # A pod in a namespace Muster does not judge names whatever it likes: nothing is queued.
    deliver(pod("unjudged", f"169.254.169.254/latest/meta-data@{DIGEST}"))
    deliver(pod("unjudged", "r/app:1", image_id=f"docker-pullable://127.0.0.1:8080/x@{OTHER}"))
    assert queued(area) == []
    # Admission resolved DIGEST (in a judged namespace): a pod running it re-queues it, under
    # the name admission resolved, never the pod's.
    area.note_admitted(f"ghcr.io/acme/app@{DIGEST}", DIGEST)
    deliver(pod("unjudged", f"169.254.169.254/latest/meta-data@{DIGEST}"))
    assert queued(area) == [(f"ghcr.io/acme/app@{DIGEST}", DIGEST)]
    # So does a digest an ImageScan exists for (Muster writes those only for such digests).
    area.queued.clear()
    area.index.images[OTHER] = f"ghcr.io/acme/tool@{OTHER}"
    deliver(pod("unjudged", "r/app:1", image_id=f"docker-pullable://127.0.0.1:8080/x@{OTHER}"))
    assert queued(area) == [(f"ghcr.io/acme/tool@{OTHER}", OTHER)]


def test_the_admitted_digests_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vulnerabilities, "MAX_ADMITTED", 2)
    area = vulnerabilities.area_for(scanning_services(tmp_path))
    for number in range(3):
        digest = f"sha256:{number:064x}"
        area.note_admitted(f"r.example/a@{digest}", digest)
    area.note_admitted(f"r.example/a@sha256:{1:064x}", f"sha256:{1:064x}")  # used again: kept
    assert list(area.admitted) == [f"sha256:{2:064x}", f"sha256:{1:064x}"]

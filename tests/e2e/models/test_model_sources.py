"""Models from any source, through the real apiserver and a real ``muster run``:

* a KServe InferenceService's pod (as KServe's controller and pod webhook make it) whose
  storage-initializer downloads ``hf://org/model@revision``: denied until an approved Model names
  that source, then admitted with the verifier right after the storage-initializer; the download
  is then done for real from a local HTTP server serving real safetensors shards, and the
  verifier's own command line from the admitted pod is run on the result (passes; a flipped byte
  fails);
* a TrainJob (the real Kubeflow Trainer CRD) whose model initializer downloads a source;
* a ModelPack artifact in the test registry: the operator writes status.modelPack, and an image
  volume of it is admitted by digest.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from muster.models import files as modelfiles
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane
from tests import kubeclients, peers, workloadkinds
from tests.e2e.models.conftest import NAMESPACE_LABELS, SUITE_LABEL, VERIFIER_IMAGE
from tests.e2e.workloads import create_as_admin, denial_as_admin, registered
from tests.modelpacks import push_modelpack, shards

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("models_operator")]

SERVER = "registry.example/kserve/huggingfaceserver@sha256:" + "cd" * 32
INITIALIZER = "registry.example/kserve/storage-initializer@sha256:" + "ef" * 32
REVISION = "3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"
INTERNAL_URI = "internal.serving.kserve.io/storage-initializer-sourceuri"


@pytest.fixture(scope="module", autouse=True)
def policy(control_plane: controlplane.ControlPlane) -> Iterator[str]:
    name = f"e2e-sources-{uuid.uuid4().hex[:6]}"
    spec = {"namespaceSelector": {"matchLabels": {SUITE_LABEL: "models"}}}
    with kubeclients.muster_object(control_plane, "modelpolicies", "ModelPolicy", name, spec):
        yield name


def _model(objects: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return registered(objects, "models", "Model", name, spec)


def _inference_pod(name: str, uri: str, *, initializer: bool = True) -> dict[str, Any]:
    """The predictor pod of an InferenceService with storageUri ``uri``, as KServe makes it."""
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "kserve-container",
                "image": SERVER,
                "args": ["--model_name=tiny", "--model_dir=/mnt/models"],
                "volumeMounts": [
                    {
                        "name": "kserve-provision-location",
                        "mountPath": "/mnt/models",
                        "readOnly": True,
                    }
                ],
            }
        ],
        "volumes": [{"name": "kserve-provision-location", "emptyDir": {}}],
    }
    if initializer:
        spec["initContainers"] = [
            {
                "name": "storage-initializer",
                "image": INITIALIZER,
                "args": [uri, "/mnt/models"],
                "volumeMounts": [{"name": "kserve-provision-location", "mountPath": "/mnt/models"}],
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": {INTERNAL_URI: uri}},
        "spec": spec,
    }


@contextlib.contextmanager
def _hub(root: Path) -> Iterator[str]:
    """A local HTTP server laid out as the Hugging Face Hub serves files
    (``/<org>/<name>/resolve/<revision>/<file>``)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


def _download(base: str, repo: str, revision: str, target: Path) -> list[str]:
    """What the storage-initializer does for hf://repo@revision: the index, then every shard it
    names, fetched over HTTP into the provisioned volume."""

    def fetch(name: str) -> bytes:
        url = f"{base}/{repo}/resolve/{revision}/{name}"
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback test server
            data: bytes = response.read()
        (target / name).write_bytes(data)
        return data

    index = json.loads(fetch("model.safetensors.index.json"))
    names = sorted(set(index["weight_map"].values()))
    for name in names:
        fetch(name)
    return ["model.safetensors.index.json", *names]


def test_an_hf_model_is_admitted_only_from_an_approved_pinned_source_and_verified_after_download(
    control_plane: controlplane.ControlPlane, objects: Any, tmp_path: Path
) -> None:
    repo = f"acme/tiny-{uuid.uuid4().hex[:6]}"
    uri = f"hf://{repo}@{REVISION}"
    namespace = kubeclients.namespace(control_plane, "sources", NAMESPACE_LABELS)

    message = denial_as_admin(control_plane, namespace, _inference_pod("unapproved", uri))
    assert f"model source {uri!r}" in message
    assert "is not an approved Model: no Model has spec.source" in message

    digest = modelfiles.measure(shards()).digest
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    _model(objects, name, {"digest": digest, "source": uri, "format": "safetensors"})

    unpinned = denial_as_admin(control_plane, namespace, _inference_pod("unpinned", f"hf://{repo}"))
    assert "names no revision" in unpinned
    other = denial_as_admin(control_plane, namespace, _inference_pod("other", f"hf://{repo}@main"))
    assert "is not an approved Model" in other
    bare = denial_as_admin(control_plane, namespace, _inference_pod("bare", uri, initializer=False))
    assert f"matches Model {name!r}, but no storage-initializer init container" in bare

    # A Deployment's template has no storage-initializer yet (KServe's pod webhook adds it to
    # each pod, judged then): the source is judged, the missing initializer is not held against it.
    def deployment(name: str, source: str) -> dict[str, Any]:
        pod = _inference_pod(name, source, initializer=False)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {**pod["metadata"], "labels": {"app": name}},
                    "spec": pod["spec"],
                },
            },
        }

    with kubeclients.admin(control_plane) as api:
        apps: Any = client.AppsV1Api(api)
        kept = apps.create_namespaced_deployment(namespace, deployment("predictor", uri))
        assert kept.spec.template.spec.init_containers is None
        with pytest.raises(client.ApiException) as raised:
            apps.create_namespaced_deployment(namespace, deployment("stray", f"hf://{repo}@v0"))
        assert raised.value.status == 403
        assert "is not an approved Model" in json.loads(raised.value.body)["message"]

    # KServe's own spelling of the revision (``:``) is the same source.
    created = create_as_admin(
        control_plane, namespace, _inference_pod("served", f"hf://{repo}:{REVISION}")
    )
    init = created.spec.init_containers
    assert [c.name for c in init] == [
        "storage-initializer",
        "muster-verify-kserve-provision-location",
    ]
    verifier = init[1]
    assert verifier.image == VERIFIER_IMAGE
    assert verifier.args == [
        "model",
        "verify",
        "/models/kserve-provision-location",
        "--digest",
        digest,
    ]
    assert [(m.name, m.mount_path, m.read_only) for m in verifier.volume_mounts] == [
        ("kserve-provision-location", "/models/kserve-provision-location", True)
    ]
    assert json.loads(created.metadata.annotations[modelregistry.MODELS_ANNOTATION]) == [
        {"name": name, "digest": digest}
    ]

    # The download, done for real over HTTP, then the verifier's exact command on it.
    hub = tmp_path / "hub" / repo / "resolve" / REVISION
    shutil.copytree(shards(), hub)
    volume = tmp_path / "provisioned"
    volume.mkdir()
    with _hub(tmp_path / "hub") as base:
        fetched = _download(base, repo, REVISION, volume)
    assert len(fetched) == 7
    argv = [*verifier.command, *verifier.args]
    assert argv[3] == "/models/kserve-provision-location"
    argv[3] = str(volume)
    command = [sys.executable, "-m", "muster", *argv[1:]]
    passed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith(f"OK {volume} {digest}")
    shard = volume / fetched[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))
    failed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"expected {digest}" in failed.stdout


def test_a_trainjobs_model_initializer_must_download_an_approved_source(
    control_plane: controlplane.ControlPlane, objects: Any
) -> None:
    workloadkinds.install_crds(control_plane)
    namespace = kubeclients.namespace(control_plane, "sources", NAMESPACE_LABELS)
    repo = f"acme/base-{uuid.uuid4().hex[:6]}"
    uri = f"hf://{repo}@{REVISION}"

    with kubeclients.admin(control_plane) as api:

        def create(name: str) -> Any:
            body = workloadkinds.downloading_trainjob(name, "model", uri)
            return workloadkinds.create_trainjob(api, namespace, body)

        with pytest.raises(client.ApiException) as raised:
            create("unapproved")
        assert raised.value.status == 403, raised.value.body
        message = json.loads(raised.value.body or "{}")["message"]
        assert f"model source {uri!r} (TrainJob model initializer)" in message
        assert "is not an approved Model" in message

        _model(
            objects,
            f"base-{uuid.uuid4().hex[:6]}",
            {"digest": "sha256:" + "0a" * 32, "source": uri},
        )
        admitted = create("approved")
        assert admitted["spec"]["initializer"]["model"]["storageUri"] == uri


def test_a_modelpack_artifact_gets_status_model_pack_and_mounts_by_digest(
    control_plane: controlplane.ControlPlane, objects: Any, registry: peers.Registry
) -> None:
    suffix = uuid.uuid4().hex[:6]
    pushed = push_modelpack(
        registry, f"models/pack-{suffix}", "v1", shards(), name=f"pack-{suffix}"
    )
    name = f"pack-{suffix}"
    model = _model(
        objects,
        name,
        {"digest": modelfiles.measure(shards()).digest, "ociReference": pushed.reference},
    )
    pack = model["status"]["modelPack"]
    assert pack["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert pack["configDigest"] == pushed.manifest["config"]["digest"]
    assert pack["config"]["descriptor"]["name"] == f"pack-{suffix}"
    assert pack["layerCount"] == 7
    assert [layer["title"] for layer in pack["layers"]] == sorted(
        p.name for p in shards().iterdir()
    )

    namespace = kubeclients.namespace(control_plane, "sources", NAMESPACE_LABELS)
    body = _inference_pod("pack", "unused", initializer=False)
    body["metadata"]["annotations"] = {}
    body["spec"]["volumes"] = [{"name": "weights", "image": {"reference": pushed.reference}}]
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "weights", "mountPath": "/mnt/models"}
    ]
    created = create_as_admin(control_plane, namespace, body)
    assert json.loads(created.metadata.annotations[modelregistry.MODELS_ANNOTATION]) == [
        {"name": name, "digest": modelfiles.measure(shards()).digest}
    ]
    assert not created.spec.init_containers  # content-addressed: no verifier

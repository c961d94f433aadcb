"""A Kubeflow Trainer TrainJob's initializer downloads, re-measured in its trainer pods, through
the real apiserver and a real ``muster run``.

The trainer pod is the ``node`` job of Trainer v2.3.0's own torchtune-llama3.2-1b
ClusterTrainingRuntime (vendored in tests/fixtures/crds), labelled as the JobSet controller
labels it. No kubelet runs: the downloads are done here over HTTP from a local server into a
directory laid out as the initializer volume, and the verifiers' exact command lines from the
admitted pod are run on it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import http.server
import json
import shutil
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from muster.app import localoperator
from muster.kernel import trainerpods
from muster.models import files as modelfiles
from muster.platform import controlplane
from tests import kubeclients, paths, tenants, workloadkinds
from tests.e2e import workloads
from tests.e2e.datasets.conftest import NAMESPACE_LABELS, SUITE_LABEL, VERIFIER_IMAGE
from tests.e2e.workloads import GROUP, TRAINER, VERSION, registered
from tests.modelpacks import shards

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("datasets_operator")]

RUN = uuid.uuid4().hex[:6]
SELECT_LABEL = "e2e.muster.dev/trainer-downloads"
STRICT_LABEL = "e2e.muster.dev/trainer-strict"
REVISION = "0123456789abcdef0123456789abcdef01234567"
DATASET_REPO = f"datasets/acme/instructions-{RUN}"
MODEL_REPO = f"acme/tiny-{RUN}"
DATASET_URI = f"hf://{DATASET_REPO}@{REVISION}"
MODEL_URI = f"hf://{MODEL_REPO}@{REVISION}"
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"


@pytest.fixture(scope="module", autouse=True)
def policies(objects: Any) -> Iterator[None]:
    """A DatasetPolicy and a ModelPolicy selecting only this module's namespaces."""
    selector = {"matchLabels": {SUITE_LABEL: "datasets", SELECT_LABEL: RUN}}
    made = [
        ("datasetpolicies", "DatasetPolicy", f"e2e-trainer-data-{RUN}"),
        ("modelpolicies", "ModelPolicy", f"e2e-trainer-models-{RUN}"),
    ]
    for plural, kind, name in made:
        kubeclients.create_cluster_object(
            objects, plural, kind, name, {"namespaceSelector": selector}
        )
    yield
    for plural, _, name in made:
        with contextlib.suppress(client.ApiException):
            objects.delete_cluster_custom_object(GROUP, VERSION, plural, name)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A local HTTP server laid out as the Hugging Face Hub serves files
    (``/<repo>/resolve/<revision>/<file>``): a small instruction dataset and a real sharded
    safetensors model."""
    root = tmp_path_factory.mktemp("hub")
    data = root / DATASET_REPO / "resolve" / REVISION
    data.mkdir(parents=True)
    for split, size in (("train", 40), ("test", 8)):
        rows = [
            {"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)}
            for i in range(size)
        ]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "README.md").write_text("# instructions\n\nArithmetic instructions.\n")
    shutil.copytree(shards(), root / MODEL_REPO / "resolve" / REVISION)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()


@pytest.fixture(scope="module")
def approved(objects: Any, hub: tuple[str, Path]) -> dict[str, str]:
    """The Dataset and the Model whose sources the TrainJob downloads, with the OMS digests of
    the files the hub serves."""
    _, root = hub
    dataset_digest = modelfiles.measure(root / DATASET_REPO / "resolve" / REVISION).digest
    model_digest = modelfiles.measure(root / MODEL_REPO / "resolve" / REVISION).digest
    dataset, model = f"instructions-{RUN}", f"tiny-{RUN}"
    registered(
        objects,
        "datasets",
        "Dataset",
        dataset,
        {"digest": dataset_digest, "sources": [DATASET_URI], "license": "Apache-2.0"},
    )
    registered(objects, "models", "Model", model, {"digest": model_digest, "source": MODEL_URI})
    return {"dataset": dataset_digest, "model": model_digest}


def _namespace(plane: controlplane.ControlPlane) -> tenants.Tenant:
    name = kubeclients.namespace(plane, "trainer", {**NAMESPACE_LABELS, SELECT_LABEL: RUN})
    return tenants.tenant(plane, name)


def _trainjob(tenant: tenants.Tenant, name: str) -> dict[str, Any]:
    body = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": {
            "runtimeRef": {"name": "torchtune-llama3.2-1b"},
            "initializer": {
                "dataset": {"storageUri": DATASET_URI},
                "model": {"storageUri": MODEL_URI},
            },
        },
    }
    with contextlib.closing(tenant.api()) as api:
        custom: Any = client.CustomObjectsApi(api)
        created: dict[str, Any] = custom.create_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", tenant.namespace, "trainjobs", body
        )
    return created


def _node_pod(trainjob: str, name: str, job: str = "node") -> dict[str, Any]:
    """The pod the JobSet controller makes for the runtime's ``node`` job: its template, the
    labels JobSet writes over it, and the PVC of the runtime's ``initializer`` claim template
    (JobSet names it <template>-<jobset>). The image is the suite's pinned trainer image and
    the GPU request is left out (no GPU gate business here)."""
    path = paths.fixture("crds", "kubeflow-trainer-v2.3.0", "runtimes", "llama3_2_1B.yaml")
    runtime = yaml.safe_load(path.read_text())
    jobs = {j["name"]: j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"]}
    node = copy.deepcopy(jobs[job]["template"])
    spec = node["spec"]["template"]["spec"]
    for container in spec["containers"]:
        container["image"] = TRAINER
        container.pop("resources", None)
        # Trainer's JobSet builder sets each initializer's STORAGE_URI to the TrainJob's.
        uri = {"dataset-initializer": DATASET_URI, "model-initializer": MODEL_URI}.get(job)
        if uri is not None:
            container["env"] = [{"name": "STORAGE_URI", "value": uri}]
    spec["volumes"] = [
        {"name": "initializer", "persistentVolumeClaim": {"claimName": f"initializer-{trainjob}"}}
    ]
    labels = {
        **node["metadata"]["labels"],
        trainerpods.JOBSET_NAME_LABEL: trainjob,
        "jobset.sigs.k8s.io/replicatedjob-name": job,
        "jobset.sigs.k8s.io/job-index": "0",
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }


def _download(base: str, repo: str, names: list[str], target: Path) -> None:
    """What an initializer does: each file of ``repo`` fetched over HTTP into ``target``."""
    target.mkdir(parents=True)
    for name in names:
        url = f"{base}/{repo}/resolve/{REVISION}/{name}"
        with urllib.request.urlopen(url, timeout=10) as response:  # loopback test server
            (target / name).write_bytes(response.read())


def _run_verifier(container: dict[str, Any], directory: Path) -> subprocess.CompletedProcess[str]:
    """The verifier's own command line, its mount path replaced by ``directory``."""
    argv = [*container["command"], *container["args"]]
    assert argv[:3] == ["muster", "model", "verify"]
    argv[3] = str(directory)
    return subprocess.run(
        [sys.executable, "-m", "muster", *argv[1:]], capture_output=True, text=True, check=False
    )


def _as_dict(created: Any) -> dict[str, Any]:
    with contextlib.closing(client.ApiClient()) as api:
        untyped: Any = api  # the client's serializer has no annotations
        result: dict[str, Any] = untyped.sanitize_for_serialization(created)
    return result


def _validate(
    operator: localoperator.LocalOperator,
    namespace: str,
    pod: dict[str, Any],
    kind: str = "validate",
) -> Any:
    """The validating webhook's answer for creating ``pod`` (what the apiserver would send
    after the mutating pass; a pod cannot be sent through the apiserver without that pass)."""
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "name": pod["metadata"]["name"],
            "operation": "CREATE",
            "userInfo": {"username": "tenant"},
            "object": pod,
        },
    }
    context = ssl.create_default_context(cafile=str(operator.ca_file))
    request = urllib.request.Request(
        operator.url + f"/{kind}/enforce",
        data=json.dumps(review).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())["response"]


def test_a_trainer_pod_re_measures_both_downloads_and_a_tampered_file_fails(
    plane: controlplane.ControlPlane,
    hub: tuple[str, Path],
    approved: dict[str, str],
    datasets_operator: localoperator.LocalOperator,
    tmp_path: Path,
) -> None:
    workloadkinds.install_crds(plane)
    tenant = _namespace(plane)
    _trainjob(tenant, "tune")
    with contextlib.closing(tenant.api()) as api:
        created = _as_dict(workloads.create_pod(api, tenant.namespace, _node_pod("tune", "node-0")))
        # The initializer pods run first, side by side: they are the downloads, nothing is
        # re-measured in them.
        for job in ("dataset-initializer", "model-initializer"):
            step = _as_dict(
                workloads.create_pod(api, tenant.namespace, _node_pod("tune", job, job))
            )
            assert not step["spec"].get("initContainers"), step["spec"]["initContainers"]
    verifiers = {c["name"]: c for c in created["spec"]["initContainers"]}
    assert set(verifiers) == {
        "muster-verify-initializer-dataset",
        "muster-verify-initializer-model",
    }
    for part in ("dataset", "model"):
        verifier = verifiers[f"muster-verify-initializer-{part}"]
        assert verifier["image"] == VERIFIER_IMAGE
        assert verifier["args"] == [
            "model",
            "verify",
            f"/models/initializer-{part}",
            "--digest",
            approved[part],
        ]
        assert verifier["volumeMounts"] == [
            {
                "name": "initializer",
                "mountPath": f"/models/initializer-{part}",
                "readOnly": True,
                "subPath": part,
            }
        ]
    # The trainer container is as the runtime made it: the volume whole at /workspace.
    (node,) = created["spec"]["containers"]
    assert node["volumeMounts"] == [{"name": "initializer", "mountPath": "/workspace"}]

    # The initializers' downloads, done for real over HTTP into the volume's layout.
    base, root = hub
    workspace = tmp_path / "initializer"
    dataset_files = sorted(p.name for p in (root / DATASET_REPO / "resolve" / REVISION).iterdir())
    _download(base, DATASET_REPO, dataset_files, workspace / "dataset")
    model_files = sorted(p.name for p in shards().iterdir())
    _download(base, MODEL_REPO, model_files, workspace / "model")
    for part in ("dataset", "model"):
        passed = _run_verifier(verifiers[f"muster-verify-initializer-{part}"], workspace / part)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert passed.stdout.startswith(f"OK {workspace / part} {approved[part]}")
    train = workspace / "dataset" / "train.jsonl"
    train.write_text(train.read_text().replace('"output": "3"', '"output": "4"', 1))
    failed = _run_verifier(verifiers["muster-verify-initializer-dataset"], workspace / "dataset")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"expected {approved['dataset']}" in failed.stdout
    # The model download is untouched and still passes.
    kept = _run_verifier(verifiers["muster-verify-initializer-model"], workspace / "model")
    assert kept.returncode == 0, kept.stdout + kept.stderr

    # Validating: the verifiers as admitted pass; one removed or altered is refused.
    assert _validate(datasets_operator, tenant.namespace, created)["allowed"] is True
    removed = copy.deepcopy(created)
    removed["spec"]["initContainers"] = [
        c for c in removed["spec"]["initContainers"] if not c["name"].endswith("-dataset")
    ]
    answer = _validate(datasets_operator, tenant.namespace, removed)
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "[DatasetVerifierMissing]" in message
    assert "muster-verify-initializer-dataset" in message and DATASET_URI in message
    altered = copy.deepcopy(created)
    for container in altered["spec"]["initContainers"]:
        if container["name"].endswith("-model"):
            container["args"][4] = "sha256:" + "00" * 32
    answer = _validate(datasets_operator, tenant.namespace, altered)
    assert answer["allowed"] is False
    assert "[ModelVerifierMissing]" in answer["status"]["message"]
    assert MODEL_URI in answer["status"]["message"]


def test_a_forged_trainjob_label_adds_verifiers_and_removes_no_check(
    plane: controlplane.ControlPlane, approved: dict[str, str]
) -> None:
    workloadkinds.install_crds(plane)
    tenant = _namespace(plane)
    _trainjob(tenant, "real")
    unregistered = f"nowhere-{RUN}"
    with contextlib.closing(tenant.api()) as api:
        core: Any = client.CoreV1Api(api)
        core.create_namespaced_persistent_volume_claim(
            tenant.namespace,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "corpus", "labels": {"muster.dev/dataset": unregistered}},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )

        def hand_made(name: str, trainjob: str, *, corpus: bool) -> dict[str, Any]:
            volumes = [{"name": "scratch", "emptyDir": {}}]
            mounts = [{"name": "scratch", "mountPath": "/workspace"}]
            if corpus:
                volumes.append({"name": "corpus", "persistentVolumeClaim": {"claimName": "corpus"}})
                mounts.append({"name": "corpus", "mountPath": "/data"})
            return {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "labels": {trainerpods.JOBSET_NAME_LABEL: trainjob, ANCESTOR_LABEL: "trainer"},
                },
                "spec": {
                    "containers": [{"name": "main", "image": TRAINER, "volumeMounts": mounts}],
                    "volumes": volumes,
                },
            }

        # Claiming a real TrainJob gains its verifiers on whatever the pod mounts there.
        forged = _as_dict(
            workloads.create_pod(api, tenant.namespace, hand_made("f1", "real", corpus=False))
        )
        names = sorted(c["name"] for c in forged["spec"]["initContainers"])
        assert names == ["muster-verify-scratch-dataset", "muster-verify-scratch-model"]
        # ... and loses nothing: its unregistered dataset PVC is refused as without the label,
        # whether the label names a real TrainJob or none.
        for trainjob in ("real", "none"):
            message = workloads.denial(
                api, tenant.namespace, hand_made(f"f-{trainjob}", trainjob, corpus=True)
            )
            assert "[DatasetNotApproved]" in message and unregistered in message
        # A label naming no TrainJob adds nothing and takes nothing away.
        plain = _as_dict(
            workloads.create_pod(api, tenant.namespace, hand_made("f2", "none", corpus=False))
        )
        assert not plain["spec"].get("initContainers")


def test_strict_volume_mode_counts_the_re_measured_initializer_volume_as_declared(
    plane: controlplane.ControlPlane,
    approved: dict[str, str],
    datasets_operator: localoperator.LocalOperator,
) -> None:
    workloadkinds.install_crds(plane)
    strict = f"e2e-trainer-strict-{RUN}"
    selector = {"matchLabels": {SUITE_LABEL: "datasets", SELECT_LABEL: RUN, STRICT_LABEL: "true"}}
    with kubeclients.muster_object(
        plane,
        "modelpolicies",
        "ModelPolicy",
        strict,
        {"namespaceSelector": selector, "volumes": "declaredOnly"},
    ):
        name = kubeclients.namespace(
            plane, "trainer", {**NAMESPACE_LABELS, SELECT_LABEL: RUN, STRICT_LABEL: "true"}
        )
        tenant = tenants.tenant(plane, name)
        _trainjob(tenant, "tune")

        def strict_applies() -> bool:
            # Until the operator has indexed the strict policy, a plain PVC still passes.
            with contextlib.closing(tenant.api()) as api:
                body = _node_pod("none", f"probe-{uuid.uuid4().hex[:4]}")
                try:
                    workloads.create_pod(api, tenant.namespace, body)
                except client.ApiException as error:
                    return error.status == 403 and "[VolumeNotDeclared]" in str(error.body)
                return False

        workloads.eventually(strict_applies, "the strict ModelPolicy to be indexed")
        with contextlib.closing(tenant.api()) as api:
            # The trainer pod: its initializer PVC holds the re-measured downloads.
            created = _as_dict(
                workloads.create_pod(api, tenant.namespace, _node_pod("tune", "node-0"))
            )
            assert {c["name"] for c in created["spec"]["initContainers"]} == {
                "muster-verify-initializer-dataset",
                "muster-verify-initializer-model",
            }
            # Another unmarked PVC beside it is still refused, and only it is named.
            extra = _node_pod("tune", "node-1")
            extra["spec"]["volumes"].append(
                {"name": "weights", "persistentVolumeClaim": {"claimName": "weights"}}
            )
            extra["spec"]["containers"][0]["volumeMounts"].append(
                {"name": "weights", "mountPath": "/weights"}
            )
            message = workloads.denial(api, tenant.namespace, extra)
        assert "[VolumeNotDeclared]" in message and 'volume "weights"' in message
        assert 'volume "initializer"' not in message
        # Without the dataset verifier the volume is no longer declared.
        removed = copy.deepcopy(created)
        removed["spec"]["initContainers"] = [
            c for c in removed["spec"]["initContainers"] if not c["name"].endswith("-dataset")
        ]
        answer = _validate(datasets_operator, tenant.namespace, removed)
        assert answer["allowed"] is False
        refused = answer["status"]["message"]
        assert "[DatasetVerifierMissing]" in refused
        assert "[VolumeNotDeclared]" in refused and 'volume "initializer"' in refused

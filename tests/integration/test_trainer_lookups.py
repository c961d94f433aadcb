"""A trainer pod whose TrainJob cannot be read fails closed, in both gates: the TrainJob is read
from the real apiserver by an identity that may not get it (as an operator missing the
``get trainjobs`` rule would be), and one that may, for contrast."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from muster.datasets import catalog as datasetcatalog
from muster.datasets import trainerpods as datasettrainer
from muster.kernel import findings, gates, reviews, subjects, trainerpods
from muster.models import gate as modeladmission
from muster.models import trainerpods as modeltrainer
from muster.platform import controlplane, kubeapi
from muster.platform import namespaces as platformnamespaces
from tests import kubeclients, workloadkinds
from tests.unit.admission.test_reviews import review

pytestmark = pytest.mark.integration

SOURCE = "hf://acme/tiny@0123456789abcdef0123456789abcdef01234567"
DATA = "hf://datasets/acme/rows@0123456789abcdef0123456789abcdef01234567"
IMAGE = "registry.example/muster@sha256:" + "44" * 32
TRAINER = "registry.example/trainer@sha256:" + "55" * 32
SELECTED = {"team": "ml"}


@pytest.fixture
async def setting(
    control_plane: controlplane.ControlPlane,
) -> AsyncIterator[tuple[str, kubeapi.KubeApi, kubeapi.KubeApi]]:
    """A namespace holding a TrainJob, and two API clients: the admin, and a ServiceAccount
    with no rights at all."""
    workloadkinds.install_crds(control_plane)
    namespace = kubeclients.namespace(control_plane, "lookups")
    with kubeclients.admin(control_plane) as api:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "trainer.kubeflow.org",
            "v1alpha1",
            namespace,
            "trainjobs",
            {
                "apiVersion": "trainer.kubeflow.org/v1alpha1",
                "kind": "TrainJob",
                "metadata": {"name": "tune"},
                "spec": {
                    "runtimeRef": {"name": "torchtune-llama3.2-1b"},
                    "initializer": {
                        "dataset": {"storageUri": DATA},
                        "model": {"storageUri": SOURCE},
                    },
                },
            },
        )
    with contextlib.closing(kubeclients.service_account(control_plane, namespace, "nobody")) as sa:
        token = sa.configuration.api_key["BearerToken"].split(" ", 1)[-1]
    admin = kubeapi.KubeApi(kubeapi.Credentials.resolve(str(control_plane.kubeconfig)))
    nobody = kubeapi.KubeApi(
        kubeapi.Credentials(
            host=control_plane.url, ca_file=control_plane.state.ca_file, token=token
        )
    )
    try:
        yield namespace, admin, nobody
    finally:
        await admin.close()
        await nobody.close()


def _pod(namespace: str) -> subjects.Subject:
    pod = {
        "metadata": {"name": "node-0", "labels": {trainerpods.JOBSET_NAME_LABEL: "tune"}},
        "spec": {
            "containers": [
                {
                    "name": "node",
                    "image": TRAINER,
                    "volumeMounts": [{"name": "initializer", "mountPath": "/workspace"}],
                }
            ],
            "volumes": [
                {"name": "initializer", "persistentVolumeClaim": {"claimName": "initializer-tune"}}
            ],
        },
    }
    data = reviews.validate(review(namespace=namespace, object=pod))
    found = subjects.from_review(data, mode=findings.Mode.ENFORCE, own_namespace="muster-system")
    assert found is not None
    return found


def _gates(namespace: str, kube: kubeapi.KubeApi) -> list[Any]:
    # Catalogs and namespace labels as the watches feed them; only the TrainJob is read.
    namespaces = platformnamespaces.NamespaceIndex(kube, ttl=float("inf"))
    namespaces.update(namespace, SELECTED)
    selector = {"namespaceSelector": {"matchLabels": SELECTED}}
    models = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    assert models.policy_changed("ml", selector) is None
    assert (
        models.model_changed("tiny", {"digest": "sha256:" + "11" * 32, "source": SOURCE}, {}, 1)
        is None
    )
    datasets = datasetcatalog.DatasetCatalog(kube, max_age=float("inf"))
    assert datasets.policy_changed("ml", selector) is None
    assert (
        datasets.dataset_changed(
            "rows", {"digest": "sha256:" + "22" * 32, "sources": [DATA]}, {}, 1
        )
        is None
    )
    return [
        modeltrainer.TrainerModelGate(
            catalog=models, namespaces=namespaces, kube=kube, verifier_image=IMAGE
        ),
        datasettrainer.TrainerDatasetGate(
            catalog=datasets, namespaces=namespaces, kube=kube, verifier_image=IMAGE
        ),
    ]


async def test_an_unreadable_trainjob_refuses_the_trainer_pod(
    setting: tuple[str, kubeapi.KubeApi, kubeapi.KubeApi],
) -> None:
    namespace, _, nobody = setting
    subject = _pod(namespace)
    for gate, reason in zip(
        _gates(namespace, nobody), ("ModelLookupFailed", "DatasetLookupFailed"), strict=True
    ):
        refused = await gate.judge(subject, gates.Phase.VALIDATE)
        assert [(f.reason, f.subject, f.mode) for f in refused.findings] == [
            (reason, 'TrainJob "tune"', findings.Mode.ENFORCE)
        ]
        assert "cannot read the TrainJob this pod belongs to" in refused.findings[0].message
        assert "403" in refused.findings[0].message or "forbidden" in refused.findings[0].message
        assert (await gate.judge(subject, gates.Phase.MUTATE)).patch == ()


async def test_a_readable_trainjob_gives_the_pod_its_verifiers(
    setting: tuple[str, kubeapi.KubeApi, kubeapi.KubeApi],
) -> None:
    namespace, admin, _ = setting
    subject = _pod(namespace)
    names = []
    for gate in _gates(namespace, admin):
        mutated = await gate.judge(subject, gates.Phase.MUTATE)
        ((operation,),) = [mutated.patch]
        names += [c["name"] for c in operation["value"]]
        # Without the verifier the pod is refused.
        refused = await gate.judge(subject, gates.Phase.VALIDATE)
        assert [f.reason for f in refused.findings] in (
            ["ModelVerifierMissing"],
            ["DatasetVerifierMissing"],
        )
    assert names == ["muster-verify-initializer-model", "muster-verify-initializer-dataset"]

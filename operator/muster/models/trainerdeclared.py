"""Strict volume mode for Kubeflow Trainer pods: the volume a TrainJob's initializers downloaded
into counts as declared where this pod re-measures every download it reads from it.

The trainer pod mounts the initializer volume whole (``/workspace``); its ``dataset`` and
``model`` sub-directories are the approved downloads, re-measured by the verifiers the model and
dataset gates add (:mod:`muster.models.trainerpods`, :mod:`muster.datasets.trainerpods`). A
download whose part no policy judges (no ModelPolicy for the model, no DatasetPolicy for the
data) is not re-measured, and its volume stays undeclared.

What a forged ``jobset.sigs.k8s.io/jobset-name`` label can do here: make a volume count as
declared only when that very pod carries verifiers that re-measure the named TrainJob's approved
downloads in it; the rest of such a volume is as unchecked as the rest of a genuine trainer's
workspace (its outputs). Every other volume of the pod is judged as before.
"""

from __future__ import annotations

from collections.abc import Mapping

from muster.datasets.rules import approval as datasetapproval
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import subjects, trainerpods
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, trainjobs
from muster.platform import namespaces as platformnamespaces
from muster.signatures.rules.verifiers import has_verifier, verifier_container

__all__ = ["verified_volumes"]


async def verified_volumes(
    kube: kubeapi.KubeApi,
    subject: subjects.Subject,
    template: subjects.PodTemplate,
    *,
    models: modelregistry.Index,
    model_policy: modelregistry.ModelPolicySpec | None,
    datasets: datasetregistry.DatasetIndex,
    dataset_policies: Mapping[str, datasetregistry.DatasetPolicySpec],
    image: str,
) -> set[str]:
    """The volumes of ``template`` from which the pod reads TrainJob downloads only through
    verifiers present in the pod exactly as the gates write them (none when the TrainJob cannot
    be read: strict mode then refuses, and the trainer gates say why)."""
    if not subject.is_pod:
        return set()
    trainjob = trainerpods.trainjob_name(subject.object.get("metadata") or {})
    if trainjob is None:
        return set()
    try:
        obj = await trainjobs.read_trainjob(kube, subject.namespace, trainjob)
    except platformnamespaces.UNREADABLE_ERRORS:
        return set()
    if obj is None:
        return set()
    dataset_policy = datasetapproval.effective_policy(list(dataset_policies.values()))
    verified: dict[str, bool] = {}
    for download in trainerpods.downloads(trainjob, obj, template):
        expected = None
        if download.part == "model" and model_policy is not None:
            use = modelgate.ModelUse("sourceUri", trainjob, download.uri, fetcher=True)
            match = modelgate.judge_use(use, models, model_policy)
            if match.model is not None and match.finding is None:
                expected = (match.model.spec.digest, match.model.spec.hashing)
        elif download.part == "dataset" and dataset_policy is not None:
            used = datasetapproval.DatasetUse("sourceUri", trainjob, download.uri)
            judged = datasetapproval.judge_use(used, datasets, dataset_policy)
            if judged.dataset is not None and judged.finding is None:
                expected = (judged.dataset.spec.digest, judged.dataset.spec.hashing)
        ok = False
        if expected is not None:
            digest, hashing = expected
            want = verifier_container(
                download.volume, digest, image, hashing, sub_path=download.sub_path or None
            )
            ok = has_verifier(template, want)
        verified[download.volume] = verified.get(download.volume, True) and ok
    return {volume for volume, ok in verified.items() if ok}

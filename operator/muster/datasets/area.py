"""The dataset area's one registration: approved datasets at admission, their status, lineage
and revocation."""

from __future__ import annotations

from muster.admission import areas
from muster.datasets import controllers, gate, trainerpods
from muster.datasets.rules import resources
from muster.kernel import crds

__all__ = ["AREA", "CHECK"]

# The check its findings carry (muster.datasets.rules.approval.CHECK).
CHECK = "datasets"

# The gate reads the verifier image besides what the controllers read.
AREA = areas.Area[gate.DatasetGateSettings](
    name="datasets",
    checks=(CHECK,),
    drift_checks=(CHECK,),
    not_drift=frozenset(
        {"DatasetRegistryUnavailable", "DatasetLookupFailed", "DatasetReferenceUnresolved"}
    ),
    drift_watches=(
        (crds.GROUP, crds.VERSION, "datasets"),
        (crds.GROUP, crds.VERSION, "datasetpolicies"),
    ),
    # The in-memory Dataset index (a miss is a re-list from the API).
    caches=("datasets",),
    resources=(resources.dataset, resources.dataset_policy),
    gates=trainerpods.gates_for,
    controllers=controllers.controllers,
    reasons={
        "DatasetNotApproved": "a dataset the workload uses is not a registered Dataset",
        "DatasetRevoked": "a Dataset was revoked, directly or through its lineage (on the "
        "Dataset, each descendant and each Pod using them)",
        "DatasetSignatureNotVerified": "the policy requires a verified signature the Dataset lacks",
        "DatasetLicenseNotAllowed": "the Dataset's licence is not allowed by the policy",
        "DatasetLineageInvalid": "the Dataset's lineage does not hold (a missing or invalid "
        "parent, a cycle, naming itself)",
        "DatasetReferenceInvalid": "a dataset reference does not parse",
        "DatasetReferenceUnresolved": "a dataset image's tag could not be resolved to a digest",
        "DatasetVolumeUnknown": "the dataset-volumes annotation names a volume the pod lacks",
        "DatasetVolumesInvalid": "the dataset-volumes annotation is not valid",
        "DatasetVerifierMissing": "a dataset volume has no verifying init container",
        "DatasetLookupFailed": "a PVC could not be read to tell whether it holds a dataset, or "
        "a trainer pod's TrainJob to tell what it downloaded",
        "DatasetRegistryUnavailable": "the Datasets and DatasetPolicies could not be listed",
    },
)

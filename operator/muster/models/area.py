"""The model area's one registration: approved models at admission, their status and revocation."""

from __future__ import annotations

from muster.admission import areas
from muster.kernel import crds
from muster.models import controllers, flags
from muster.models.rules import approval, resources

__all__ = ["AREA"]

AREA = areas.Area[controllers.ModelSettings](
    name="models",
    checks=(approval.CHECK,),
    drift_checks=(approval.CHECK,),
    not_drift=frozenset(
        {"ModelRegistryUnavailable", "ModelLookupFailed", "ModelReferenceUnresolved"}
    ),
    drift_watches=(
        (crds.GROUP, crds.VERSION, "models"),
        (crds.GROUP, crds.VERSION, "modelpolicies"),
    ),
    # The in-memory Model index (a miss is a re-list from the API).
    caches=("models",),
    resources=(resources.model, resources.model_policy),
    gates=controllers.gates_for,
    controllers=controllers.controllers,
    flags=flags.FLAGS,
    reasons={
        # models
        "ModelNotApproved": "a model reference does not match an approved digest",
        "ModelRevoked": "a Model's approval was revoked (on the Model and each Pod using it)",
        "ModelDigestChanged": "a Model's digest changed under running pods (on the Model and Pods)",
        "ModelSignatureNotVerified": "the policy requires a verified signature the Model lacks",
        "ModelProvenanceNotVerified": "the policy requires verified provenance the Model lacks",
        "ModelUnsafeSerialization": "the Model's files use a format the policy refuses (pickle)",
        "ModelTrainingDataRevoked": "a Model was trained on a Dataset revoked directly or through "
        "its lineage (at admission, and on the Model and each Pod using it)",
        "ModelTrainingDataNotApproved": "the policy requires approved datasets and a Model's "
        "spec.datasets names one that is not (unregistered, another digest, lineage, signature)",
        "VolumeNotDeclared": "strict volume mode: a pod volume that can hold data is no Model, "
        "Dataset nor PVC labelled muster.dev/not-model-data",
        "ModelLicenseNotAllowed": "a ModelPolicy's licenses refuse the Model's licence",
        "ModelReferenceInvalid": "a model reference does not parse",
        "ModelReferenceUnresolved": "a model image's tag could not be resolved to a digest",
        "ModelVolumeUnknown": "the model-volumes annotation names a volume the pod lacks",
        "ModelVolumesInvalid": "the model-volumes annotation is not valid",
        "ModelVerifierMissing": "a model volume has no verifying init container",
        "ModelSourceNotPinned": "an hf:// model source names no revision",
        "ModelSourceNotVerifiable": "a downloaded model has no initializer to verify after",
        "ModelLookupFailed": "a PVC could not be read to tell whether it holds a model, or a "
        "trainer pod's TrainJob to tell what it downloaded",
        "ModelRegistryUnavailable": "the Models and ModelPolicies could not be listed",
    },
)

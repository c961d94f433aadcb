"""Marks on objects that say which volumes hold no model or training data.

``muster.dev/not-model-data: "true"`` on a PersistentVolumeClaim is the platform's statement that
the claim holds neither model weights nor data sets (scratch space, caches, logs). Strict mode
(``volumes: declaredOnly`` on a ModelPolicy or DatasetPolicy) admits such a claim without a
Model or Dataset behind it, so only namespace managers may set, change or remove the label: the
namespace guard's ValidatingAdmissionPolicy refuses anyone else (guards/rules/namespaces.py).

``NON_DATA_VOLUME_SOURCES`` are the volume kinds that never hold model or training data: they are
empty at start (emptyDir) or carry small API objects (configMap, secret, downwardAPI, projected).
Every other kind (hostPath, nfs, csi, ephemeral, image, persistentVolumeClaim, ...) can.
"""

from __future__ import annotations

__all__ = ["NON_DATA_VOLUME_SOURCES", "NOT_MODEL_DATA_LABEL", "NOT_MODEL_DATA_VALUE"]

NOT_MODEL_DATA_LABEL = "muster.dev/not-model-data"
NOT_MODEL_DATA_VALUE = "true"  # the only value that marks a claim

NON_DATA_VOLUME_SOURCES = frozenset({"emptyDir", "configMap", "secret", "downwardAPI", "projected"})

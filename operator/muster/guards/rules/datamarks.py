"""The data-marks guard: only namespace managers may mark a claim as holding no model data.

A PersistentVolumeClaim labelled ``muster.dev/not-model-data: "true"`` is admitted by strict mode
(``volumes: declaredOnly``) without a Model or Dataset behind it: the label is the platform's
word that the claim holds neither weights nor training data. A team that may write its own
claims could otherwise label a claim full of unapproved weights and mount it. The guard is a
ValidatingAdmissionPolicy on PersistentVolumeClaims (CREATE and UPDATE, subresources included)
that refuses anyone but a namespace manager (the namespace guard's managers, chart
``namespaceGuard.managers``: groups and users) who creates a claim with the label, or adds,
changes or removes it. Claims without the label, and every other change, pass.

As for the namespace guard (guards/rules/namespaces.py), the policy is written here once:
:func:`policy` builds it for ``muster dev up`` and tests, ``hack/generate-default-policies.py``
writes :data:`STATIC_SPEC` into the chart (``files/data-marks-guard.yaml``), which adds the
managers as the first variables, and :func:`decide` is its Python twin, which a test compares
with the real apiserver's answers for a matrix of label changes and users.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from muster.guards.rules import namespaces as namespaceguard
from muster.kernel import datamarks

__all__ = [
    "DEV_NAME",
    "GUARDED_LABELS",
    "STATIC_SPEC",
    "binding",
    "decide",
    "issues",
    "policy",
    "policy_spec",
]

DEV_NAME = "muster-data-marks-guard"  # the policy and binding `muster dev up` installs
# Labels on claims that only managers may add, change or remove.
GUARDED_LABELS = (datamarks.NOT_MODEL_DATA_LABEL,)


def _shown(labels: Mapping[str, str], key: str) -> str:
    return f"'{labels[key]}'" if key in labels else "(unset)"


def issues(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str, ...]:
    """The guarded labels a change adds, changes or removes, in the policy's words."""
    return tuple(
        f"{key} from {_shown(before, key)} to {_shown(after, key)}"
        for key in GUARDED_LABELS
        if before.get(key) != after.get(key)
    )


def _listed(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"


def decide(
    namespace: str,
    claim: str,
    old_labels: Mapping[str, str] | None,
    new_labels: Mapping[str, str],
    *,
    username: str,
    groups: Sequence[str],
    settings: namespaceguard.GuardSettings,
) -> str | None:
    """The policy's refusal, word for word, for a claim's labels going from ``old_labels``
    (None on CREATE) to ``new_labels``; None when it is allowed. The Python twin of
    :data:`STATIC_SPEC`."""
    found = issues(old_labels or {}, new_labels)
    if not settings.enabled or not found or namespaceguard.is_manager(username, groups, settings):
        return None
    return (
        f"muster: {username} may not mark PersistentVolumeClaim {namespace}/{claim}: "
        f"{'; '.join(found)}. The label admits the claim as holding no model or training data "
        f"under volumes: declaredOnly; only namespace managers may set it: groups "
        f"{_listed(settings.manager_groups)}; users {_listed(settings.manager_users)}"
    )


# -- the rule, in CEL -----------------------------------------------------------------------


def _shown_cel(labels: str, key: str) -> str:
    return f"({key} in {labels} ? \"'\" + {labels}[{key}] + \"'\" : '(unset)')"


def _listed_cel(values: str) -> str:
    return f"(size({values}) == 0 ? '(none)' : {values}.join(', '))"


# The policy's variables after the two settings (managerGroups, managerUsers), which the chart
# and policy_spec() put first.
_VARIABLES: tuple[tuple[str, str], ...] = (
    ("guarded", namespaceguard.cel_list(GUARDED_LABELS)),
    ("before", "oldObject == null ? {} : oldObject.metadata.?labels.orValue({})"),
    ("after", "object.metadata.?labels.orValue({})"),
    (
        "isManager",
        "request.userInfo.username in variables.managerUsers || "
        "(has(request.userInfo.groups) && "
        "request.userInfo.groups.exists(g, g in variables.managerGroups))",
    ),
    (
        "issues",
        "variables.guarded.filter(k, (k in variables.before) != (k in variables.after) || "
        "(k in variables.before && variables.before[k] != variables.after[k]))"
        f".map(k, k + ' from ' + {_shown_cel('variables.before', 'k')} + ' to ' + "
        f"{_shown_cel('variables.after', 'k')})",
    ),
)

# Everything of the policy's spec but the settings: the chart reads it from
# files/data-marks-guard.yaml (hack/generate-default-policies.py writes it from here).
STATIC_SPEC: dict[str, Any] = {
    # An expression that cannot be evaluated refuses the change; managers pass first.
    "failurePolicy": "Fail",
    "matchConstraints": {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                # Labels can also be written through the status subresource.
                "resources": ["persistentvolumeclaims", "persistentvolumeclaims/*"],
            }
        ]
    },
    "variables": [{"name": name, "expression": expression} for name, expression in _VARIABLES],
    "validations": [
        {
            "expression": "variables.isManager || size(variables.issues) == 0",
            "messageExpression": (
                "'muster: ' + request.userInfo.username + ' may not mark PersistentVolumeClaim "
                "' + request.namespace + '/' + object.metadata.?name.orValue('') + ': ' + "
                "variables.issues.join('; ') + '. The label admits the claim as holding no "
                "model or training data under volumes: declaredOnly; only namespace managers "
                "may set it: groups ' + "
                f"{_listed_cel('variables.managerGroups')} + '; users ' + "
                f"{_listed_cel('variables.managerUsers')}"
            ),
            "message": (
                f"muster: only namespace managers may set {datamarks.NOT_MODEL_DATA_LABEL} "
                "on a PersistentVolumeClaim"
            ),
            "reason": "Forbidden",
        }
    ],
}


def _settings_variables(settings: namespaceguard.GuardSettings) -> list[dict[str, str]]:
    return [
        {"name": "managerGroups", "expression": namespaceguard.cel_list(settings.manager_groups)},
        {"name": "managerUsers", "expression": namespaceguard.cel_list(settings.manager_users)},
    ]


def policy_spec(settings: namespaceguard.GuardSettings) -> dict[str, Any]:
    spec = json.loads(json.dumps(STATIC_SPEC))  # a deep copy callers may change
    spec["variables"] = [*_settings_variables(settings), *spec["variables"]]
    return dict(spec)


def policy(settings: namespaceguard.GuardSettings, name: str = DEV_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "muster"}},
        "spec": policy_spec(settings),
    }


def binding(name: str = DEV_NAME, policy_name: str | None = None) -> dict[str, Any]:
    return namespaceguard.binding(name, policy_name)

"""The namespace guard: those a namespace's enforcement binds cannot lower it.

A namespace's Muster mode lives in its own labels (``muster.dev/enforce``, ``muster.dev/ignore``),
and a team is often allowed to patch its own Namespace. Without a guard, such a team switches
Muster off for itself. The guard is a ValidatingAdmissionPolicy on Namespaces (CREATE and
UPDATE) that refuses, unless the requester is a namespace manager (chart
``namespaceGuard.managers``: groups and users):

* ``muster.dev/enforce`` lowered: from ``true``/``enforce`` to ``warn``, or from either to
  anything that does not select a mode (another value, or removed). In cluster scope (every
  namespace judged, chart ``enforcement.scope: cluster``) only a change to ``warn`` lowers it;
* ``muster.dev/ignore`` set to ``true`` where it was not;
* ``muster.dev/uncovered-images`` lowered: from ``deny`` to ``warn`` or ``allow``, or from
  ``warn`` to ``allow`` (unset counts as the operator's default, chart ``images.uncovered``;
  a value the image gate does not know counts as ``deny``, as it does there);
* a label in ``namespaceGuard.protectedLabels`` added, changed or removed (for installations
  whose webhooks select namespaces by labels of their own, chart
  ``webhook.namespaceSelectorExpressions``).

Raising enforcement is always allowed, and so is creating a namespace without the labels (in
the default scope that is simply not opting in).

The policy is written here once: :func:`policy` builds it for ``muster dev up`` and tests, and
``hack/generate-default-policies.py`` writes :data:`STATIC_SPEC` into the chart
(``files/namespace-guard.yaml``), which adds the settings as the first variables. The same rule
in Python, :func:`decide`, classifies every attempt for the record (an Event on the Namespace and
``muster_namespace_mode_changes_total``); a test asks the real apiserver to evaluate the policy
for a matrix of label changes and users and compares its answers with :func:`decide`'s.

The record comes from a mutating webhook that never patches (``/namespace-modes``): a refusal by
the policy happens in validating admission, after every mutating webhook has been called, so the
mutating webhook sees the attempts the policy refuses as well as those it allows.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

from muster.images.rules import policies as imagepolicies
from muster.kernel import observations, scopes

__all__ = [
    "BINDING_ACTIONS",
    "DEFAULT_MANAGER_GROUPS",
    "DEV_NAME",
    "MANAGER_GROUP",
    "NOT_A_DRY_RUN",
    "RECORD_CONDITION_FORMAT",
    "RECORD_PATH",
    "RECORD_TIMEOUT_SECONDS",
    "STATIC_SPEC",
    "GuardSettings",
    "ModeChange",
    "NamespaceMode",
    "binding",
    "cel_list",
    "decide",
    "from_review",
    "notice",
    "policy",
    "policy_spec",
    "record_condition",
    "watched_labels",
]

# The documented group whose members may change any namespace's Muster mode (beside the
# cluster's own administrators, system:masters).
MANAGER_GROUP = "muster:namespace-managers"
DEFAULT_MANAGER_GROUPS = ("system:masters", MANAGER_GROUP)
DEV_NAME = "muster-namespace-guard"  # the policy and binding `muster dev up` installs
BINDING_ACTIONS = ("Deny",)

_ENFORCE = scopes.ENFORCE_LABEL
_IGNORE = scopes.OPT_OUT_LABEL
_UNCOVERED = imagepolicies.UNCOVERED_LABEL
_MUSTER_LABELS = (_ENFORCE, _IGNORE, _UNCOVERED)
_ENFORCING = ("true", "enforce")  # the values the enforce webhooks' namespaceSelector selects


class NamespaceMode(enum.StrEnum):
    """What a namespace's labels make of it, from the most to the least enforced."""

    ENFORCE = "enforce"
    WARN = "warn"
    OFF = "off"
    IGNORED = "ignored"


@dataclasses.dataclass(frozen=True, slots=True)
class GuardSettings:
    """Chart ``namespaceGuard`` (and ``enforcement.scope``); ``muster run --namespace-*``."""

    enabled: bool = True
    manager_groups: tuple[str, ...] = DEFAULT_MANAGER_GROUPS
    manager_users: tuple[str, ...] = ()
    protected_labels: tuple[str, ...] = ()
    cluster_scope: bool = False
    # What an image no ImagePolicy covers gets where muster.dev/uncovered-images is not set
    # (chart images.uncovered, muster run --uncovered-images).
    uncovered_default: str = "deny"


# -- the rule, in Python --------------------------------------------------------------------


def _rank(value: str | None, cluster_scope: bool) -> int:
    """How strongly ``muster.dev/enforce=value`` enforces (2 enforce, 1 warn, 0 not at all),
    exactly as the webhooks' namespaceSelectors select it (label values are case-sensitive)."""
    if cluster_scope:
        return 1 if value == "warn" else 2
    if value in _ENFORCING:
        return 2
    return 1 if value == "warn" else 0


def _uncovered_rank(labels: Mapping[str, str], default: str) -> int:
    """How strictly uncovered images are treated (2 deny, 1 warn, 0 allow); a value that is
    none of them counts as deny, as the image gate reads it."""
    return {"allow": 0, "warn": 1}.get(labels.get(_UNCOVERED, default).lower(), 2)


def mode(labels: Mapping[str, str], *, cluster_scope: bool = False) -> NamespaceMode:
    if labels.get(_IGNORE) == "true":
        return NamespaceMode.IGNORED
    rank = _rank(labels.get(_ENFORCE), cluster_scope)
    return (NamespaceMode.OFF, NamespaceMode.WARN, NamespaceMode.ENFORCE)[rank]


def _shown(labels: Mapping[str, str], key: str) -> str:
    return f"'{labels[key]}'" if key in labels else "(unset)"


def issues(
    before: Mapping[str, str], after: Mapping[str, str], settings: GuardSettings
) -> tuple[str, ...]:
    """What a change does that only managers may do, in the policy's words and order."""
    found = []
    if _rank(after.get(_ENFORCE), settings.cluster_scope) < _rank(
        before.get(_ENFORCE), settings.cluster_scope
    ):
        found.append(f"{_ENFORCE} from {_shown(before, _ENFORCE)} to {_shown(after, _ENFORCE)}")
    if after.get(_IGNORE) == "true" and before.get(_IGNORE) != "true":
        found.append(f"{_IGNORE} set to 'true'")
    default = settings.uncovered_default
    if _uncovered_rank(after, default) < _uncovered_rank(before, default):
        shown = f"{_shown(before, _UNCOVERED)} to {_shown(after, _UNCOVERED)}"
        found.append(f"{_UNCOVERED} from {shown}")
    for key in settings.protected_labels:
        if key in _MUSTER_LABELS or before.get(key) == after.get(key):
            continue
        found.append(f"{key} from {_shown(before, key)} to {_shown(after, key)}")
    return tuple(found)


def is_manager(username: str, groups: Sequence[str], settings: GuardSettings) -> bool:
    return username in settings.manager_users or any(
        group in settings.manager_groups for group in groups
    )


def _listed(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"


def refusal(username: str, namespace: str, found: Sequence[str], settings: GuardSettings) -> str:
    """The policy's message, word for word (a test compares it with the apiserver's)."""
    return (
        f"muster: {username} may not lower the enforcement of namespace {namespace}: "
        f"{'; '.join(found)}. Only namespace managers may: groups "
        f"{_listed(settings.manager_groups)}; users {_listed(settings.manager_users)}"
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ModeChange:
    """One attempt to change a namespace's labels, as the guard judges it."""

    namespace: str
    operation: str  # CREATE or UPDATE
    username: str
    before: NamespaceMode
    after: NamespaceMode
    issues: tuple[str, ...]  # what only managers may do (empty: nothing guarded)
    refused: bool
    message: str  # the refusal ("" when allowed)

    @property
    def outcome(self) -> str:
        return "refused" if self.refused else "allowed"

    @property
    def worth_recording(self) -> bool:
        """Anything guarded (allowed or not), or a mode change of an existing namespace: a
        namespace created in a mode changed nothing (and is not worth an Event per namespace)."""
        if self.operation == "CREATE":
            return bool(self.issues)
        return self.before is not self.after or bool(self.issues)


def decide(
    namespace: str,
    old_labels: Mapping[str, str] | None,
    new_labels: Mapping[str, str],
    *,
    username: str,
    groups: Sequence[str],
    settings: GuardSettings,
    operation: str = "UPDATE",
) -> ModeChange:
    """How the guard judges labels going from ``old_labels`` (None on CREATE) to
    ``new_labels``: the Python twin of :data:`STATIC_SPEC`."""
    before = old_labels or {}
    found = issues(before, new_labels, settings)
    refused = settings.enabled and bool(found) and not is_manager(username, groups, settings)
    return ModeChange(
        namespace=namespace,
        operation=operation,
        username=username,
        before=mode(before, cluster_scope=settings.cluster_scope),
        after=mode(new_labels, cluster_scope=settings.cluster_scope),
        issues=found,
        refused=refused,
        message=refusal(username, namespace, found, settings) if refused else "",
    )


def _labels(obj: Any) -> dict[str, str]:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): str(v) for k, v in labels.items() if isinstance(v, str)}


def from_review(request: Mapping[str, Any], settings: GuardSettings) -> ModeChange | None:
    """The change a Namespace admission request makes, or None when there is nothing to
    record (a dry run, another resource or operation, nothing guarded and no mode change)."""
    resource = request.get("resource") or {}
    if (resource.get("group"), resource.get("resource")) != ("", "namespaces"):
        return None
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE") or request.get("dryRun"):
        return None
    obj = request.get("object") or {}
    name = request.get("name") or (obj.get("metadata") or {}).get("name") or ""
    user = request.get("userInfo") or {}
    groups = user.get("groups") or []
    change = decide(
        str(name),
        _labels(request.get("oldObject")) if operation == "UPDATE" else None,
        _labels(obj),
        username=str(user.get("username") or ""),
        groups=[str(g) for g in groups if isinstance(g, str)],
        settings=settings,
        operation=str(operation),
    )
    return change if change.worth_recording else None


def notice(change: ModeChange, own_namespace: str) -> observations.Notice:
    """The Event recording ``change``: on the Namespace (once it exists, for a CREATE); a
    refused CREATE leaves no namespace, so its Event goes to Muster's own Namespace."""
    what = f"namespace {change.namespace} from {change.before} to {change.after}"
    detail = f" ({'; '.join(change.issues)})" if change.issues else ""
    if change.refused:
        note = f"{change.username} tried to change {what}{detail}: refused"
    else:
        note = f"{change.username} changed {what}{detail}"
    own = observations.namespace_ref(own_namespace)
    if change.refused and change.operation == "CREATE":
        target, delivery = own, observations.Delivery.NOW
    elif change.operation == "CREATE":
        target = observations.namespace_ref(change.namespace)
        delivery = observations.Delivery.WHEN_CREATED
    else:
        target = observations.namespace_ref(change.namespace)
        delivery = observations.Delivery.NOW
    return observations.Notice(
        target=target,
        delivery=delivery,
        type=observations.EventType.WARNING if change.refused else observations.EventType.NORMAL,
        reason="NamespaceModeChangeRefused" if change.refused else "NamespaceModeChanged",
        action="Denied" if change.refused else "Changed",
        note=observations.truncate_note(note),
        namespace=change.namespace,
        fallback=own,
    )


# -- the rule, in CEL -----------------------------------------------------------------------


def cel_list(values: Sequence[str]) -> str:
    """A CEL list of strings, written exactly as Helm's ``toJson`` writes it (Go's
    encoding/json: no spaces, <, > and & escaped), so the chart and this code agree."""
    text = json.dumps(list(values), separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _rank_cel(value: str) -> str:
    return (
        f"variables.clusterScope ? ({value} == 'warn' ? 1 : 2) : "
        f"({value} in ['true', 'enforce'] ? 2 : ({value} == 'warn' ? 1 : 0))"
    )


def _shown_cel(labels: str, key: str) -> str:
    return f"({key} in {labels} ? \"'\" + {labels}[{key}] + \"'\" : '(unset)')"


_E, _I, _U = f"'{_ENFORCE}'", f"'{_IGNORE}'", f"'{_UNCOVERED}'"


def _uncovered_rank_cel(labels: str) -> str:
    value = f"{labels}[?{_U}].orValue(variables.uncoveredDefault).lowerAscii()"
    return f"({value} == 'allow' ? 0 : ({value} == 'warn' ? 1 : 2))"


# The policy's variables after the five settings (managerGroups, managerUsers, protectedLabels,
# clusterScope, uncoveredDefault), which the chart and policy_spec() put first.
_VARIABLES: tuple[tuple[str, str], ...] = (
    ("before", "oldObject == null ? {} : oldObject.metadata.?labels.orValue({})"),
    ("after", "object.metadata.?labels.orValue({})"),
    (
        "isManager",
        "request.userInfo.username in variables.managerUsers || "
        "(has(request.userInfo.groups) && "
        "request.userInfo.groups.exists(g, g in variables.managerGroups))",
    ),
    ("enforceBefore", f"variables.before[?{_E}].orValue('')"),
    ("enforceAfter", f"variables.after[?{_E}].orValue('')"),
    ("rankBefore", _rank_cel("variables.enforceBefore")),
    ("rankAfter", _rank_cel("variables.enforceAfter")),
    ("uncoveredRankBefore", _uncovered_rank_cel("variables.before")),
    ("uncoveredRankAfter", _uncovered_rank_cel("variables.after")),
    (
        "issues",
        "(variables.rankAfter < variables.rankBefore ? "
        f"[{_E} + ' from ' + {_shown_cel('variables.before', _E)} + ' to ' + "
        f"{_shown_cel('variables.after', _E)}] : []) + "
        f"(variables.after[?{_I}].orValue('') == 'true' && "
        f"variables.before[?{_I}].orValue('') != 'true' ? [{_I} + \" set to 'true'\"] : []) + "
        "(variables.uncoveredRankAfter < variables.uncoveredRankBefore ? "
        f"[{_U} + ' from ' + {_shown_cel('variables.before', _U)} + ' to ' + "
        f"{_shown_cel('variables.after', _U)}] : []) + "
        f"variables.protectedLabels.filter(k, k != {_E} && k != {_I} && k != {_U} && "
        "((k in variables.before) != (k in variables.after) || "
        "(k in variables.before && variables.before[k] != variables.after[k])))"
        f".map(k, k + ' from ' + {_shown_cel('variables.before', 'k')} + ' to ' + "
        f"{_shown_cel('variables.after', 'k')})",
    ),
)


def _listed_cel(values: str) -> str:
    return f"(size({values}) == 0 ? '(none)' : {values}.join(', '))"


# Everything of the policy's spec but the settings: the chart reads it from
# files/namespace-guard.yaml (hack/generate-default-policies.py writes it from here).
STATIC_SPEC: dict[str, Any] = {
    # An expression that cannot be evaluated refuses the change; managers pass first
    # (``isManager ||``), so an error can never lock them out.
    "failurePolicy": "Fail",
    "matchConstraints": {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["*"],
                "operations": ["CREATE", "UPDATE"],
                # Labels can also be written through the status and finalize subresources.
                "resources": ["namespaces", "namespaces/*"],
            }
        ]
    },
    "variables": [{"name": name, "expression": expression} for name, expression in _VARIABLES],
    "validations": [
        {
            "expression": "variables.isManager || size(variables.issues) == 0",
            "messageExpression": (
                "'muster: ' + request.userInfo.username + ' may not lower the enforcement of "
                "namespace ' + object.metadata.name + ': ' + variables.issues.join('; ') + "
                "'. Only namespace managers may: groups ' + "
                f"{_listed_cel('variables.managerGroups')} + '; users ' + "
                f"{_listed_cel('variables.managerUsers')}"
            ),
            "message": "muster: only namespace managers may lower a namespace's enforcement",
            "reason": "Forbidden",
        }
    ],
}


def _settings_variables(settings: GuardSettings) -> list[dict[str, str]]:
    return [
        {"name": "managerGroups", "expression": cel_list(settings.manager_groups)},
        {"name": "managerUsers", "expression": cel_list(settings.manager_users)},
        {"name": "protectedLabels", "expression": cel_list(settings.protected_labels)},
        {"name": "clusterScope", "expression": "true" if settings.cluster_scope else "false"},
        {"name": "uncoveredDefault", "expression": f"'{settings.uncovered_default}'"},
    ]


def policy_spec(settings: GuardSettings) -> dict[str, Any]:
    spec = json.loads(json.dumps(STATIC_SPEC))  # a deep copy callers may change
    spec["variables"] = [*_settings_variables(settings), *spec["variables"]]
    return dict(spec)


def policy(settings: GuardSettings, name: str = DEV_NAME) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "muster"}},
        "spec": policy_spec(settings),
    }


def binding(name: str = DEV_NAME, policy_name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "muster"}},
        "spec": {"policyName": policy_name or name, "validationActions": list(BINDING_ACTIONS)},
    }


# -- what the recording webhook is sent -----------------------------------------------------


def watched_labels(settings: GuardSettings) -> list[str]:
    """The Muster labels and the protected ones, each once, in that order."""
    return list(dict.fromkeys([*_MUSTER_LABELS, *settings.protected_labels]))


RECORD_PATH = "/namespace-modes"  # where muster run serves the record
RECORD_TIMEOUT_SECONDS = 5  # it answers at once: a recorder must never hold a change up
NOT_A_DRY_RUN = "!(has(request.dryRun) && request.dryRun)"

# The recording webhook's match condition with the watched labels left out (%s): on CREATE,
# any of them set; on UPDATE, any of them added, changed or removed. ' ' stands for "unset":
# no label value can contain a space. The chart fills it with toJson, this code with cel_list.
RECORD_CONDITION_FORMAT = (
    "request.operation == 'CREATE' ? "
    "%s.exists(k, k in object.metadata.?labels.orValue({})) : "
    "%s.exists(k, object.metadata.?labels.orValue({})[?k].orValue(' ') != "
    "oldObject.metadata.?labels.orValue({})[?k].orValue(' '))"
)


def record_condition(settings: GuardSettings) -> str:
    watched = cel_list(watched_labels(settings))
    return RECORD_CONDITION_FORMAT % (watched, watched)

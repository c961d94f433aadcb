"""The namespace guard's ``muster run`` flags: who may lower a namespace's enforcement.

The guard itself is a ValidatingAdmissionPolicy the chart installs; Muster records each
namespace mode change as the guard judges it, with these same settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from muster.admission import areas
from muster.guards.rules import namespaces as namespaceguard

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("namespace guard")
    group.add_argument(
        "--namespace-manager-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="members of this group may lower a namespace's enforcement (repeatable; default, "
        "when neither this nor --namespace-manager-user is given: "
        + " and ".join(namespaceguard.DEFAULT_MANAGER_GROUPS)
        + ")",
    )
    group.add_argument(
        "--namespace-manager-user",
        action="append",
        default=[],
        metavar="USER",
        help="this user may lower a namespace's enforcement (repeatable)",
    )
    group.add_argument(
        "--protected-namespace-label",
        action="append",
        default=[],
        metavar="KEY",
        help="a namespace label only namespace managers may add, change or remove (repeatable)",
    )
    group.add_argument(
        "--namespace-guard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the namespace guard is installed, so changes it forbids are recorded as refused "
        "(default; --no-namespace-guard records every change as allowed)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    managers = bool(args.namespace_manager_group or args.namespace_manager_user)
    guard = namespaceguard.GuardSettings(
        enabled=args.namespace_guard,
        manager_groups=tuple(args.namespace_manager_group)
        if managers
        else namespaceguard.DEFAULT_MANAGER_GROUPS,
        manager_users=tuple(args.namespace_manager_user),
        protected_labels=tuple(args.protected_namespace_label),
    )
    return {"namespace_guard": guard}


FLAGS = areas.Flags(
    add=_add,
    settings=_settings,
    chart_values={
        "--namespace-guard": "namespaceGuard.enabled",
        "--namespace-manager-group": "namespaceGuard.managers.groups",
        "--namespace-manager-user": "namespaceGuard.managers.users",
        "--protected-namespace-label": "namespaceGuard.protectedLabels",
    },
)

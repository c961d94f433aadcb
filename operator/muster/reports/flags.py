"""The report area's ``muster run`` flags: whether PolicyReports are written, their bound, and
audit of namespaces that have not opted in."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from muster.admission import areas
from muster.reports.rules import policyreports

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PolicyReports")
    group.add_argument(
        "--policy-reports",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MUSTER_POLICY_REPORTS", "true") != "false",
        help="after each drift pass, write what it found as wgpolicyk8s.io/v1alpha2 "
        "PolicyReports (one per namespace, named muster) and a ClusterPolicyReport; nothing is "
        "written while their CRDs are not installed (default on)",
    )
    group.add_argument(
        "--policy-report-max-results",
        type=int,
        default=int(
            os.environ.get("MUSTER_POLICY_REPORT_MAX_RESULTS", policyreports.DEFAULT_MAX_RESULTS)
        ),
        metavar="N",
        help="results listed per PolicyReport, failures first; the summary counts all and the "
        f"annotation {policyreports.OMITTED_ANNOTATION} says how many were left out "
        f"(default {policyreports.DEFAULT_MAX_RESULTS})",
    )
    group.add_argument(
        "--audit-namespaces",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MUSTER_AUDIT_NAMESPACES", "false") == "true",
        help="drift passes also judge the running pods of namespaces that have not opted in "
        "(never muster.dev/ignore=true ones) and report what enforcement would deny as warn "
        "results marked audit: no Events, no drift gauge (default off)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    if args.policy_report_max_results < 1:
        raise areas.FlagError("--policy-report-max-results must be at least 1")
    if args.audit_namespaces and not args.policy_reports:
        raise areas.FlagError(
            "--audit-namespaces needs --policy-reports: audit results are only reported there"
        )
    return {
        "policy_reports": args.policy_reports,
        "policy_report_max_results": args.policy_report_max_results,
        "audit_namespaces": args.audit_namespaces,
    }


FLAGS = areas.Flags(
    add=_add,
    settings=_settings,
    chart_values={
        "--policy-reports": "policyReports.enabled",
        "--policy-report-max-results": "policyReports.maxResults",
        "--audit-namespaces": "policyReports.auditNamespaces",
    },
)

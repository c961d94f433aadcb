"""PolicyReports kept current after each drift pass (``muster run --policy-reports``).

The keeper listens to the drift controller (``muster.drift.controller``): after each pass it
builds the reports (``muster.reports.rules.policyreports``), lists the ones it wrote before
(label ``app.kubernetes.io/managed-by=muster``, name ``muster``), and writes only what changed:
a new namespace's report is created, a changed one replaced (optimistic concurrency: a conflict
waits for the next pass), a namespace with nothing judged left loses its report. A namespace
whose pods could not be listed keeps its report as it was. With ``--audit-namespaces`` it turns
the drift controller's audit on, so namespaces that have not opted in are reported too.

The report API's CRDs (``wgpolicyk8s.io``) often belong to another tool (Kyverno), so Muster
does not need them: when they are not installed the keeper says so once and writes nothing.
"""

from __future__ import annotations

import datetime
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from muster.drift import controller as driftcontroller
from muster.drift.rules import passes
from muster.images import gate as imagegate
from muster.platform import kubeapi
from muster.platform.services import Services
from muster.reports.rules import policyreports as reports
from muster.vulnerabilities import gate as vulnerabilitygate
from muster.vulnerabilities.rules import scans

__all__ = ["AREA", "ReportKeeper", "ReportSettings", "register_controller"]

logger = logging.getLogger("muster.reports")

AREA = "reports"
BASE = f"/apis/{reports.GROUP}/{reports.VERSION}"
SELECTOR = ",".join(f"{key}={value}" for key, value in reports.MANAGED_BY.items())


class ReportSettings(vulnerabilitygate.ScanSettings, driftcontroller.DriftSettings, Protocol):
    """What the report keeper reads: whether to write reports, their bound, and audit (it reads
    the image and scan areas' stores and drives the drift controller)."""

    @property
    def policy_reports(self) -> bool: ...

    @property
    def policy_report_max_results(self) -> int: ...

    @property
    def audit_namespaces(self) -> bool: ...


def _path(namespace: str | None, name: str | None = None) -> str:
    if namespace is None:
        where = f"{BASE}/clusterpolicyreports"
    else:
        where = f"{BASE}/namespaces/{urllib.parse.quote(namespace, safe='')}/policyreports"
    return where if name is None else f"{where}/{urllib.parse.quote(name, safe='')}"


class ReportKeeper:
    """One per process; :meth:`after_pass` is the drift controller's listener."""

    def __init__(self, services: Services[ReportSettings], *, max_results: int) -> None:
        self.services = services
        self.max_results = max_results
        self.writes = 0  # creates, replaces and deletes (what a pass that found the same avoids)
        self._absent = False  # the CRDs were missing at the last look (said once)
        self._no_cluster_reports = False

    def attach(self, drift: driftcontroller.DriftController, *, audit: bool) -> None:
        drift.audit = audit
        if self.after_pass not in drift.listeners:
            drift.listeners.append(self.after_pass)

    async def after_pass(self, outcome: passes.PassOutcome) -> None:
        try:
            existing = await self._existing()
        except kubeapi.ApiError as error:
            if error.status != 404:
                raise
            if not self._absent:
                logger.warning(
                    "the PolicyReport CRDs (%s) are not installed: no PolicyReports are "
                    "written until they are (chart value policyReports.installCRDs, or the "
                    "tool that owns them, such as Kyverno)",
                    reports.API_VERSION,
                )
            self._absent = True
            return
        if self._absent:
            logger.info("the PolicyReport CRDs are installed now: writing PolicyReports")
            self._absent = False
        try:
            policies = await imagegate.area_for(self.services).store.snapshot()
        except imagegate.PoliciesUnavailable as error:
            # Without them, vulnerability results would vanish and come back: keep the reports.
            logger.warning("cannot read ImagePolicies, PolicyReports left as they are: %s", error)
            return
        index = vulnerabilitygate.area_for(self.services).index
        # Scans are judged only against ImagePolicy vulnerability rules: none, no look-ups.
        ruled = any(policy.vulnerabilities is not None for policy in policies)
        today = datetime.datetime.now(datetime.UTC).date()
        found: dict[str, list[reports.Result]] = {}
        for judged in outcome.judged:
            namespace = str((judged.pod.get("metadata") or {}).get("namespace") or "")
            if namespace not in outcome.namespaces or namespace in outcome.unlisted:
                continue
            images = vulnerabilitygate.image_ids(judged.pod) if ruled else []
            stored: dict[str, scans.ImageScanStatus | None] = {}
            for image in images:
                digest = image.rpartition("@")[2]
                if digest.startswith("sha256:") and digest not in stored:
                    stored[digest] = await index.get(digest)
            found.setdefault(namespace, []).extend(
                [
                    *reports.drift_results(judged, outcome.checks),
                    *reports.scan_results(
                        judged,
                        images,
                        labels=outcome.namespaces[namespace],
                        policies=policies,
                        scans_by_digest=stored,
                        today=today,
                    ),
                ]
            )
        now = datetime.datetime.now(datetime.UTC)
        totals = dict.fromkeys(("pass", "fail", "warn", "error", "skip"), 0)
        for namespace, results in sorted(found.items()):
            desired = reports.report(
                namespace,
                results,
                previous=existing.get(namespace),
                now=now,
                max_results=self.max_results,
            )
            for outcome_, count in desired["summary"].items():
                totals[outcome_] += count
            await self._write(namespace, existing.get(namespace), desired)
        for listed, body in existing.items():
            if listed is None or listed in found or listed in outcome.unlisted:
                continue
            await self._delete(listed, body)
        if not self._no_cluster_reports:
            cluster = reports.report(None, (), previous=existing.get(None), now=now, totals=totals)
            await self._write(None, existing.get(None), cluster)

    async def _existing(self) -> dict[str | None, Mapping[str, Any]]:
        """The reports this installation wrote: namespace (None: the cluster's) -> body."""
        kube = self.services.kube
        found: dict[str | None, Mapping[str, Any]] = {}
        params = {"labelSelector": SELECTOR}
        listing = await kube.get(f"{BASE}/policyreports", params=params)
        for item in listing.get("items") or ():
            metadata = item.get("metadata") or {}
            if metadata.get("name") == reports.NAME and metadata.get("namespace"):
                found[str(metadata["namespace"])] = item
        try:
            listing = await kube.get(f"{BASE}/clusterpolicyreports", params=params)
        except kubeapi.ApiError as error:
            if error.status != 404:
                raise
            self._no_cluster_reports = True  # only the namespaced CRD is installed
            return found
        self._no_cluster_reports = False
        for item in listing.get("items") or ():
            if (item.get("metadata") or {}).get("name") == reports.NAME:
                found[None] = item
        return found

    async def _write(
        self,
        namespace: str | None,
        previous: Mapping[str, Any] | None,
        desired: dict[str, Any],
    ) -> None:
        if reports.same(previous, desired):
            return
        kube = self.services.kube
        try:
            if previous is None:
                await kube.create(_path(namespace), desired)
            else:
                version = (previous.get("metadata") or {}).get("resourceVersion")
                desired["metadata"]["resourceVersion"] = version
                await kube.request("PUT", _path(namespace, reports.NAME), body=desired)
            self.writes += 1
        except kubeapi.ApiError as error:
            if error.status == 404 and namespace is not None:
                return  # the namespace is gone: its reports went with it
            # Someone else's report of that name, a concurrent write (409), a namespace being
            # deleted (403): one report's trouble must not stop the others; the next pass retries.
            logger.warning(
                "PolicyReport %s/%s not written, trying again at the next pass: %s",
                namespace or "(cluster)",
                reports.NAME,
                error,
            )

    async def _delete(self, namespace: str, body: Mapping[str, Any]) -> None:
        try:
            await self.services.kube.delete(_path(namespace, reports.NAME))
            self.writes += 1
        except kubeapi.ApiError as error:
            if error.status != 404:
                logger.warning(
                    "PolicyReport %s/%s not deleted, trying again at the next pass: %s",
                    namespace,
                    reports.NAME,
                    error,
                )


def register_controller(
    registry: kopf.OperatorRegistry, services: Services[ReportSettings]
) -> None:
    """Write PolicyReports after each drift pass (they need drift passes: none without them)."""
    settings = services.settings
    if not settings.policy_reports:
        return
    keeper = services.areas[AREA] = ReportKeeper(
        services, max_results=settings.policy_report_max_results
    )

    @kopf.on.startup(registry=registry)
    async def follow_drift(**_: Any) -> None:
        # On startup, whatever order the areas registered in: drift's controller exists by then.
        drift = services.areas.get(driftcontroller.AREA)
        if not isinstance(drift, driftcontroller.DriftController):
            logger.warning(
                "drift passes are off (--drift-interval 0): no PolicyReports are written"
            )
            return
        keeper.attach(drift, audit=settings.audit_namespaces)

"""The model gate at admission: the Model index it reads, and the lookups it needs (PVC labels,
tag resolution; namespace labels come from the process's one index, muster.platform.namespaces).

The index is fed and re-listed as every catalog is (:mod:`muster.platform.catalogs`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import pydantic

from muster.datasets import catalog as datasetcatalog
from muster.datasets.rules import registry as datasetregistry
from muster.kernel import findings, gates, messages, references, sources, subjects
from muster.models import trainerdeclared
from muster.models.rules import approval as modelgate
from muster.models.rules import lineage as modellineage
from muster.models.rules import registry as modelregistry
from muster.models.rules import storageuris, strictvolumes
from muster.platform import catalogs, kubeapi, pvcs, registries
from muster.platform import namespaces as platformnamespaces
from muster.signatures.rules import verifiers

__all__ = ["ModelCatalog", "ModelGate"]

logger = logging.getLogger("muster.models")

MODELS_PATH = "/apis/muster.dev/v1alpha1/models"
POLICIES_PATH = "/apis/muster.dev/v1alpha1/modelpolicies"
TRAINJOBS = ("trainer.kubeflow.org", "trainjobs")


class ModelCatalog(catalogs.Catalog[modelregistry.Index, modelregistry.ModelPolicySpec]):
    """Models and ModelPolicies, in memory."""

    def __init__(
        self,
        kube: kubeapi.KubeApi,
        *,
        max_age: float = 30.0,
        min_reload_interval: float = 1.0,
    ) -> None:
        super().__init__(
            kube,
            objects_path=MODELS_PATH,
            policies_path=POLICIES_PATH,
            policy_kind="ModelPolicy",
            parse_policy=modelregistry.ModelPolicySpec.model_validate,
            empty=modelregistry.Index,
            max_age=max_age,
            min_reload_interval=min_reload_interval,
        )

    # -- fed by the operator's watches ------------------------------------------------------

    def model_changed(
        self, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], generation: object
    ) -> str | None:
        """Index a Model; returns why it is invalid (and drops it) when it is. ``generation``
        (``metadata.generation``) decides whether its SignatureVerified condition counts."""
        try:
            self.index.put_model(
                modelregistry.parse_model(name, spec, status, generation=generation)
            )
        except (pydantic.ValidationError, ValueError) as error:
            self.index.models.pop(name, None)
            why = messages.first_error(error)
            self.index.invalid[f"Model/{name}"] = why
            return why
        return None

    object_changed = model_changed

    def model_deleted(self, name: str) -> None:
        self.index.models.pop(name, None)
        self.index.invalid.pop(f"Model/{name}", None)


@dataclasses.dataclass
class ModelGate:
    """Pods in namespaces a ModelPolicy selects may mount approved, non-revoked Models only."""

    catalog: ModelCatalog
    # The process's one namespace index, shared with the other gates.
    namespaces: platformnamespaces.NamespaceIndex
    kube: kubeapi.KubeApi
    registries: registries.RegistryClient
    verifier_image: str
    name: str = modelgate.CHECK
    # The process's one Dataset catalog (what Models were trained on, which image volumes are
    # Datasets, DatasetPolicies asking for strict volume mode); None: no Dataset is known.
    datasets: datasetcatalog.DatasetCatalog | None = None

    async def judge(self, subject: subjects.Subject, phase: gates.Phase) -> gates.GateResult:
        if subject.subresource or (subject.is_pod and subject.operation != "CREATE"):
            # A pod's volumes and init containers are immutable: what it mounts was judged at
            # CREATE. Judging updates again would block finalizer removal on revoked models.
            return gates.GateResult()
        try:
            labels = await self.namespaces.labels(subject.namespace)
            index = await self.catalog.current()
        except kubeapi.ApiError as error:
            return _unavailable(f"cannot read the model registry ({error})")
        try:
            datasets = await self._datasets()
        except kubeapi.ApiError as error:
            return _unavailable(f"cannot read the Datasets models are trained on ({error})")
        named = index.named_policies_for(labels)
        policy = modelgate.effective_policy(named)
        dataset_policies = datasets.named_policies_for(labels)
        # Strict volume mode is this gate's even where only a DatasetPolicy asks for it: it sees
        # both catalogs.
        strict = strictvolumes.strictness(named, dataset_policies)
        if policy is None and (strict is None or phase is gates.Phase.MUTATE):
            return gates.GateResult()  # strict mode alone only refuses: nothing to write
        deciding = modelgate.deciding_policy(named)
        # Without a ModelPolicy (strict mode only), uses are matched to tell registered Models
        # apart, never judged.
        judging = policy or modelregistry.ModelPolicySpec(
            mode=strict.mode if strict else findings.Mode.ENFORCE
        )
        signatures = modellineage.signatures_required(dataset_policies.values())
        found: list[findings.Finding] = []
        patch: list[Mapping[str, Any]] = []
        for template in subject.templates:
            if template.partial:
                continue  # a part of a runtime's template: judged on the pods it ends up in
            claims, lookups = await self._claims(subject.namespace, template, judging.mode)
            pvc_models = {c: m.model for c, m in claims.items() if m.model is not None}
            uses, declared_problems = modelgate.model_uses(template, pvc_models)
            if dataset_policies:
                # Image volumes declared as Datasets are the dataset gate's, where it judges
                # them; elsewhere a declaration must not let a model image pass unjudged.
                declared = strictvolumes.declared_datasets(template)
                uses = [u for u in uses if not (u.kind == "imageVolume" and u.where in declared)]
            problems = lookups + [
                dataclasses.replace(p, mode=judging.mode, policy=deciding)
                for p in declared_problems
            ]
            matches, dataset_images = await self._matches(uses, index, judging, datasets)
            if any(m.model is None for m in matches):
                # A Model created a moment ago may not have reached this replica's index yet.
                try:
                    reloaded = await self.catalog.reload(
                        if_older_than=self.catalog.min_reload_interval
                    )
                except kubeapi.ApiError as error:
                    return _unavailable(f"cannot read the model registry ({error})")
                if reloaded:
                    self.catalog.observe(hit=False)  # an unknown Model forced a re-list
                    index = self.catalog.index
                    matches, dataset_images = await self._matches(uses, index, judging, datasets)
            if policy is not None:
                judged = await self._training(matches, datasets, policy, signatures)
                if judged is None:
                    return _unavailable("cannot read the Datasets models are trained on")
                matches = judged
            unaccounted: list[findings.Finding] = []
            if phase is gates.Phase.VALIDATE and strict is not None:
                covered = set(dataset_images)
                for m in matches:
                    # A use another gate or policy judges counts; without a ModelPolicy only
                    # content-addressed bytes of a registered Model do.
                    if policy is not None or (m.use.is_oci and m.model is not None):
                        covered.update(v for v in (m.use.where, m.use.volume) if v)
                # A Trainer pod's initializer volume, where it re-measures every download in it.
                covered.update(
                    await trainerdeclared.verified_volumes(
                        self.kube,
                        subject,
                        template,
                        models=index,
                        model_policy=policy,
                        datasets=datasets,
                        dataset_policies=dataset_policies,
                        image=self.verifier_image,
                    )
                )
                unaccounted = strictvolumes.undeclared(
                    template,
                    strict,
                    covered=covered,
                    claims=claims,
                    models_judged=policy is not None,
                    datasets_judged=bool(dataset_policies),
                )
            if policy is None:
                if phase is gates.Phase.VALIDATE:
                    # What could not be read cannot be declared: strict mode fails closed.
                    found.extend(findings.attributed(lookups, strict.policy if strict else None))
                    found.extend(unaccounted)
                continue
            if phase is gates.Phase.VALIDATE:
                found.extend(problems)
                found.extend(
                    findings.attributed(
                        (m.finding for m in matches if m.finding is not None), deciding
                    )
                )
                found.extend(
                    findings.attributed(
                        self._missing_verifiers(template, matches, policy.mode), deciding
                    )
                )
                if subject.is_pod:
                    # A workload's template gets KServe's storage-initializer only in its pods.
                    found.extend(findings.attributed(_unverifiable(matches, policy.mode), deciding))
                found.extend(unaccounted)
            else:
                patch.extend(
                    modelgate.verifier_patch(
                        template,
                        matches,
                        self.verifier_image,
                    )
                )
        if phase is gates.Phase.VALIDATE and policy is not None:
            found.extend(findings.attributed(self._initializers(subject, index, policy), deciding))
        return gates.GateResult(findings=tuple(found), patch=tuple(patch))

    async def _datasets(self) -> datasetregistry.DatasetIndex:
        if self.datasets is None:
            return datasetregistry.DatasetIndex()
        return await self.datasets.current()

    async def _training(
        self,
        matches: list[modelgate.Match],
        datasets: datasetregistry.DatasetIndex,
        policy: modelregistry.ModelPolicySpec,
        signatures: bool,
    ) -> list[modelgate.Match] | None:
        """``matches`` judged for what their Models were trained on; None when the Datasets
        could not be re-listed."""

        def judge(index: datasetregistry.DatasetIndex) -> list[modelgate.Match]:
            return [
                modellineage.judge_training(m, index, policy, dataset_signature_required=signatures)
                for m in matches
            ]

        judged = judge(datasets)
        if self.datasets is not None and any(
            m.finding is not None and m.finding.reason == modellineage.NOT_APPROVED for m in judged
        ):
            # A Dataset registered a moment ago may not have reached this replica's index yet.
            try:
                reloaded = await self.datasets.reload(
                    if_older_than=self.datasets.min_reload_interval
                )
            except kubeapi.ApiError:
                return None
            if reloaded:
                self.datasets.observe(hit=False)
                judged = judge(self.datasets.index)
        return judged

    def _initializers(
        self,
        subject: subjects.Subject,
        index: modelregistry.Index,
        policy: modelregistry.ModelPolicySpec,
    ) -> list[findings.Finding]:
        """A TrainJob's model initializer downloads its storageUri in a pod of its own: the URI
        must be an approved Model's source (the initializer pod is judged again when made)."""
        if (subject.group, subject.resource) != TRAINJOBS:
            return []
        uri = sources.trainer_initializer_uris(subject.object).get("model")
        if uri is None:
            return []
        use = modelgate.ModelUse("sourceUri", "TrainJob model initializer", uri, fetcher=True)
        match = modelgate.judge_use(use, index, policy)
        return [] if match.finding is None else [match.finding]

    async def _claims(
        self, namespace: str, template: subjects.PodTemplate, mode: findings.Mode
    ) -> tuple[dict[str, strictvolumes.ClaimMarks], list[findings.Finding]]:
        """What marks each PVC the template mounts carries (read once each); a claim that
        cannot be read is left out, with a finding that says so."""
        found, failed = await pvcs.read_claims(self.kube, namespace, template)
        # One not created yet (None) carries no mark: a model, a Dataset, not model data.
        marks = {claim: strictvolumes.claim_marks(pvc) for claim, pvc in found.items()}
        problems = [
            findings.Finding(
                check=modelgate.CHECK,
                reason="ModelLookupFailed",
                subject=f'PVC "{claim}"',
                message=f"cannot tell whether it holds a model ({error})",
                mode=mode,
            )
            for claim, error in failed.items()
        ]
        return marks, problems

    async def _matches(
        self,
        uses: list[modelgate.ModelUse],
        index: modelregistry.Index,
        policy: modelregistry.ModelPolicySpec,
        datasets: datasetregistry.DatasetIndex,
    ) -> tuple[list[modelgate.Match], set[str]]:
        """The matches of the uses, less the image volumes whose digest is a registered
        Dataset's and no Model's (returned by volume name: they are dataset uses)."""

        async def one(use: modelgate.ModelUse) -> modelgate.Match | None:
            digest, error = None, None
            if use.is_oci and use.reference:
                try:
                    reference = references.parse(use.reference)
                except references.InvalidReference:
                    reference = None  # judge_use names the problem
                if reference is not None and reference.digest is None:
                    try:
                        digest = await self.registries.resolve(reference)
                    except registries.RegistryError as failure:
                        error = str(failure)
                pinned = reference.digest if reference is not None else None
                if use.kind == "imageVolume" and strictvolumes.is_dataset_image(
                    pinned or digest, index, datasets
                ):
                    return None
            return modelgate.judge_use(use, index, policy, oci_digest=digest, resolve_error=error)

        results = await asyncio.gather(*(one(use) for use in uses))
        matches = [m for m in results if m is not None]
        images = {use.where for use, m in zip(uses, results, strict=True) if m is None}
        return matches, images

    def _missing_verifiers(
        self,
        template: subjects.PodTemplate,
        matches: list[modelgate.Match],
        mode: findings.Mode,
    ) -> list[findings.Finding]:
        expected = [
            (
                match.use.label,
                modelgate.verifier_container(
                    volume, match.model.spec.digest, self.verifier_image, match.model.spec.hashing
                ),
            )
            for match in matches
            if match.model is not None
            and match.finding is None
            and (volume := match.use.verifier_volume) is not None
        ]
        return verifiers.missing_verifiers(
            template, expected, check=modelgate.CHECK, reason="ModelVerifierMissing", mode=mode
        )


def _unverifiable(matches: list[modelgate.Match], mode: findings.Mode) -> list[findings.Finding]:
    """Approved downloads with nothing to re-measure them after: refused, never admitted
    unverified (a KServe pod has its storage-initializer by the time it is validated)."""
    return [
        findings.Finding(
            check=modelgate.CHECK,
            reason="ModelSourceNotVerifiable",
            subject=match.use.label,
            message=f"matches Model {match.model.name!r}, but no {storageuris.STORAGE_INITIALIZER} "
            f"init container downloads it into a whole volume (args [uri, dest] with a volume "
            f"mounted at dest, by default {storageuris.KSERVE_MOUNT}), so its bytes cannot be "
            "re-measured before the workload starts; serve it through KServe's "
            "storage-initializer, or from an OCI artifact or a PVC labelled with the Model",
            mode=mode,
        )
        for match in matches
        if match.model is not None
        and match.finding is None
        and match.use.kind == "sourceUri"
        and match.use.needs_verifier
        and match.use.verifier_volume is None
    ]


def _unavailable(message: str) -> gates.GateResult:
    return gates.registry_unavailable(modelgate.CHECK, "ModelRegistryUnavailable", message)

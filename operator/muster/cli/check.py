"""``muster check FILE...``: the admission answer for manifests, before they are applied.

Each Pod, workload or training job in the files becomes an AdmissionReview and goes through
the same admission pipeline and gates as ``muster run`` serves: the mutation phase first (its
patch applied, as the apiserver does), then validation. Messages are the ones ``kubectl apply``
would print. Policies come from files (``--policy``: ImagePolicy, GPUStackPolicy, ModelPolicy,
Model, DatasetPolicy, Dataset, Namespace, Node, Secret, ConfigMap, ...) or from a cluster
(``--kubeconfig``). Only image signatures and CUDA needs read a registry; everything else is
offline.

Exit 0 when everything would be admitted, 1 when something would be denied, 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import dataclasses
import datetime
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import yaml

import muster
from muster.admission import pipeline as admissions
from muster.admission import webhooksettings
from muster.app import admissiongates
from muster.app.settings import OperatorSettings
from muster.cli.parsers.check import register
from muster.datasets.rules import registry as datasetregistry
from muster.gpu.rules import policies as gpupolicies
from muster.images.rules import policies as imagepolicies
from muster.kernel import findings, gates, jsonpatches, reviews, scopes, subjects
from muster.models import provenancing
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi, objectstore, registries
from muster.platform import services as services_

from . import common

__all__ = ["register"]

MAX_FILE_BYTES = 16 * 1024 * 1024
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/muster-dev/muster"
USER = "muster-check"

# Objects that are not judged but that gates read: policies and what they refer to.
_POLICY_KINDS = {
    ("muster.dev", "ImagePolicy"),
    ("muster.dev", "GPUStackPolicy"),
    ("muster.dev", "ModelPolicy"),
    ("muster.dev", "Model"),
    ("muster.dev", "DatasetPolicy"),
    ("muster.dev", "Dataset"),
}


# ---------------------------------------------------------------------------------------------
# Input


@dataclasses.dataclass(frozen=True)
class Document:
    file: str  # as named on the command line; "-" is stdin
    index: int  # 1-based, within the file
    line: int  # 1-based line where the document starts
    body: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{'stdin' if self.file == '-' else self.file}:{self.line}"


def _read_text(name: str) -> str:
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        try:
            with Path(name).open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise common.CommandError(f"cannot read {name}: {error.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise common.CommandError(f"{name} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise common.CommandError(f"{name} is not UTF-8 text") from None


def load_documents(name: str, text: str) -> list[Document]:
    """Every non-empty YAML document of a file, with where it starts; bad input raises."""
    shown = "stdin" if name == "-" else name
    loader = yaml.SafeLoader(text)
    found: list[Document] = []
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            body = loader.construct_document(node)
            line = node.start_mark.line + 1
            if body is None:
                continue
            where = f"{shown}:{line} (document {index})"
            if not isinstance(body, dict):
                raise common.CommandError(f"{where} is not a Kubernetes object (not a mapping)")
            if body.get("kind") == "List" and isinstance(body.get("items"), list):
                for item in body["items"]:
                    if not isinstance(item, dict):
                        raise common.CommandError(f"{where}: a List item is not a mapping")
                    found.append(_checked(Document(name, index, line, item), where))
                continue
            found.append(_checked(Document(name, index, line, body), where))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise common.CommandError(f"{shown}{at} is not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return found


def _checked(document: Document, where: str) -> Document:
    body = document.body
    for field in ("apiVersion", "kind"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise common.CommandError(f"{where} has no {field}")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise common.CommandError(f"{where}: metadata is not a mapping")
    return document


def _validate_policy(document: Document) -> None:
    """Policy files fail fast with the field that is wrong (exit 2), before judging."""
    body = document.body
    group = body["apiVersion"].rpartition("/")[0]
    kind = body["kind"]
    if (group, kind) not in _POLICY_KINDS:
        return
    name = str((body.get("metadata") or {}).get("name") or "")
    where = f"{document.where}: {kind} {name!r}"
    spec = body.get("spec")
    try:
        if kind == "ImagePolicy":
            imagepolicies.parse_spec(spec)
        elif kind == "GPUStackPolicy":
            gpupolicies.parse_spec(spec)
        elif kind == "ModelPolicy":
            modelregistry.ModelPolicySpec.model_validate(spec)
        elif kind == "DatasetPolicy":
            datasetregistry.DatasetPolicySpec.model_validate(spec)
        elif kind == "Dataset":
            datasetregistry.parse_dataset(
                name,
                spec or {},
                body.get("status") or {},
                generation=(body.get("metadata") or {}).get("generation"),
            )
        else:
            modelregistry.parse_model(
                name,
                spec or {},
                body.get("status") or {},
                generation=(body.get("metadata") or {}).get("generation"),
            )
    except imagepolicies.InvalidImagePolicy as error:
        raise common.CommandError(f"{where} is invalid: {error}") from None
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        raise common.CommandError(f"{where} is invalid: {field}: {first.get('msg')}") from None
    except ValueError as error:
        raise common.CommandError(f"{where} is invalid: {error}") from None


# ---------------------------------------------------------------------------------------------
# Judging


@dataclasses.dataclass
class Outcome:
    document: Document
    display: str
    judged: bool
    note: str = ""
    verdict: findings.Verdict = dataclasses.field(default_factory=findings.Verdict)
    patch: list[Mapping[str, Any]] = dataclasses.field(default_factory=list)
    mode: str = ""

    @property
    def denied(self) -> bool:
        return self.judged and not self.verdict.allowed


class _Capture:
    """An admission observer that keeps the verdict of the last validation."""

    def __init__(self) -> None:
        self.verdict: findings.Verdict | None = None

    def decided(
        self,
        subject: subjects.Subject,
        phase: gates.Phase,
        verdict: findings.Verdict,
        durations: dict[str, float],
    ) -> None:
        del subject, durations
        if phase is gates.Phase.VALIDATE:
            self.verdict = verdict


def _resource(body: Mapping[str, Any]) -> tuple[str, str, str]:
    group, _, version = str(body["apiVersion"]).rpartition("/")
    return group, version, objectstore.plural_of(str(body["kind"]))


def review_for(body: Mapping[str, Any], namespace: str) -> reviews.Review:
    """The AdmissionReview the apiserver would send for creating ``body`` (a dry run)."""
    group, version, plural = _resource(body)
    metadata = body.get("metadata") or {}
    request: reviews.RequestPayload = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": str(body["kind"])},
        "resource": {"group": group, "version": version, "resource": plural},
        "namespace": namespace,
        "name": str(metadata.get("name") or ""),
        "operation": "CREATE",
        "userInfo": {"username": USER},
        "object": dict(body),
        "oldObject": None,
        "dryRun": True,
    }
    return {"apiVersion": reviews.API_VERSION, "kind": reviews.KIND, "request": request}


def _patch_of(response: reviews.Response) -> list[Mapping[str, Any]]:
    encoded = response["response"].get("patch")
    if not encoded:
        return []
    try:
        decoded = json.loads(base64.b64decode(encoded))
    except (binascii.Error, ValueError):
        raise common.CommandError("the mutation phase answered an unreadable patch") from None
    return decoded if isinstance(decoded, list) else []


async def _cluster_labels(
    kube: kubeapi.KubeApi, namespace: str, explicit: str | None, default: str
) -> dict[str, str]:
    """The namespace's labels in the cluster; ``--mode`` (or the default) when it has none."""
    try:
        found = await kube.get(f"/api/v1/namespaces/{namespace}")
    except kubeapi.ApiError as error:
        if error.status != 404:
            raise common.CommandError(f"cannot read namespace {namespace}: {error}") from None
        found = {}
    except (OSError, TimeoutError) as error:
        raise common.CommandError(f"cannot reach the cluster: {error}") from None
    labels = {
        str(k): str(v) for k, v in ((found.get("metadata") or {}).get("labels") or {}).items()
    }
    labels[scopes.ENFORCE_LABEL] = explicit or labels.get(scopes.ENFORCE_LABEL) or default
    return labels


async def judge(
    pipeline: admissions.Pipeline,
    capture: _Capture,
    document: Document,
    namespace: str,
    labels: Mapping[str, str],
) -> Outcome:
    body = document.body
    metadata = body.get("metadata") or {}
    name = metadata.get("name") or f"{metadata.get('generateName', '')}*"
    display = f"{body['kind']} {namespace}/{name}"
    chosen = scopes.mode_for_namespace(namespace, labels, own_namespace=pipeline.own_namespace)
    if chosen is None:
        never = namespace in scopes.NEVER_JUDGED or namespace == pipeline.own_namespace
        note = "not judged by Muster" if never else f"namespace {namespace} does not opt in"
        return Outcome(document, display, False, note)
    review = review_for(body, namespace)
    subject = subjects.from_review(review, mode=chosen, own_namespace=pipeline.own_namespace)
    if subject is None:
        return Outcome(document, display, False, "not judged by Muster")
    mutated = await pipeline.review(review, gates.Phase.MUTATE, chosen)
    patch = _patch_of(mutated)
    if patch:
        try:
            patched = jsonpatches.apply(body, patch)
        except jsonpatches.InvalidPatch as error:
            raise common.CommandError(
                f"{document.where}: cannot apply the patch: {error}"
            ) from None
        review = review_for(patched, namespace)
    capture.verdict = None
    await pipeline.review(review, gates.Phase.VALIDATE, chosen)
    verdict = capture.verdict if capture.verdict is not None else findings.Verdict()
    return Outcome(document, display, True, "", verdict, patch, chosen.value)


def _services(
    args: argparse.Namespace, objects: Sequence[Mapping[str, Any]]
) -> services_.Services[OperatorSettings]:
    settings = OperatorSettings(
        webhook=webhooksettings.WebhookSettings(),
        kubeconfig=args.kubeconfig,
        admission_deadline=args.timeout,
        model_verifier_image=args.verifier_image,
        uncovered_images=args.uncovered_images,
        registry=registries.RegistrySettings(
            insecure_registries=frozenset(args.insecure_registry), ca_file=args.registry_ca_file
        ),
    )
    if args.kubeconfig:
        try:
            kube: kubeapi.KubeApi = kubeapi.KubeApi(kubeapi.Credentials.resolve(args.kubeconfig))
        except Exception as error:  # the kubernetes client raises many kinds on a bad file
            raise common.CommandError(f"cannot use kubeconfig {args.kubeconfig}: {error}") from None
    else:
        kube = objectstore.ObjectStore(objects)
    return services_.Services(
        settings=settings, kube=kube, registries=registries.RegistryClient(settings.registry)
    )


def _judged_resource(body: Mapping[str, Any]) -> bool:
    group, _, plural = _resource(body)
    return (group, plural) in subjects.DEFAULT_TEMPLATE_PATHS


async def _run(
    args: argparse.Namespace, manifests: list[Document], policy_documents: list[Document]
) -> list[Outcome]:
    """Judge the workloads among ``manifests``; every other object is a policy source."""
    workloads = [d for d in manifests if _judged_resource(d.body)]
    others = [d for d in manifests if not _judged_resource(d.body)]
    policies = [] if args.kubeconfig else [d.body for d in [*others, *policy_documents]]
    services = _services(args, policies)
    if isinstance(services.kube, objectstore.ObjectStore):
        await _verify_model_provenance(services.kube, policies, services.registries)
    default_mode = args.mode or findings.Mode.ENFORCE.value
    try:
        capture = _Capture()
        pipeline = admissions.Pipeline(
            active_gates=admissiongates.gates(services),
            own_namespace=services.settings.own_namespace,
            deadline=args.timeout,
            observers=[capture],
        )
        outcomes: list[Outcome] = []
        for document in workloads:
            metadata = document.body.get("metadata") or {}
            namespace = str(metadata.get("namespace") or args.namespace)
            if isinstance(services.kube, objectstore.ObjectStore):
                labels = _file_labels(services.kube, namespace, args.mode, default_mode)
            else:
                labels = await _cluster_labels(services.kube, namespace, args.mode, default_mode)
            outcomes.append(await judge(pipeline, capture, document, namespace, labels))
        outcomes.extend(
            Outcome(d, f"{d.body['kind']} {(d.body.get('metadata') or {}).get('name', '')}", False)
            for d in others
        )
        return outcomes
    finally:
        await services.close()


async def _verify_model_provenance(
    store: objectstore.ObjectStore,
    objects: Sequence[Mapping[str, Any]],
    client: registries.RegistryClient,
) -> None:
    """Models from files have the provenance they name verified here, as the operator would
    (keys and roots from the files' Secrets and ConfigMaps), not read from the files' status."""
    models = [
        o
        for o in objects
        if o.get("kind") == "Model" and o.get("apiVersion") == "muster.dev/v1alpha1"
    ]
    now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    read = provenancing.reader(store)
    for body in await provenancing.verify_objects(models, read, now, client):
        store.add(body)


def _file_labels(
    store: objectstore.ObjectStore, namespace: str, explicit: str | None, default: str
) -> dict[str, str]:
    """A namespace from the files keeps its labels; the enforce label is added when missing."""
    found = store.namespace(namespace) or {}
    labels = dict((found.get("metadata") or {}).get("labels") or {})
    mode = explicit or labels.get(scopes.ENFORCE_LABEL) or default
    labels[scopes.ENFORCE_LABEL] = mode
    store.add(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {**(found.get("metadata") or {}), "name": namespace, "labels": labels},
        }
    )
    return {str(k): str(v) for k, v in labels.items()}


# ---------------------------------------------------------------------------------------------
# Output


def _policy_data(finding: findings.Finding) -> dict[str, str] | None:
    """The policy object that decided a finding, as ``kind`` and ``name`` (None: no policy's)."""
    if finding.policy is None:
        return None
    data = {"kind": finding.policy.kind, "name": finding.policy.name}
    if finding.policy.namespace:
        data["namespace"] = finding.policy.namespace
    return data


def _finding_data(finding: findings.Finding) -> dict[str, Any]:
    return {
        "check": finding.check,
        "reason": finding.reason,
        "subject": finding.subject,
        "message": finding.message,
        "mode": finding.mode.value,
        "policy": _policy_data(finding),
    }


def _as_data(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    return {
        "allowed": not any(o.denied for o in outcomes),
        "results": [
            {
                "file": o.document.file,
                "document": o.document.index,
                "line": o.document.line,
                "object": o.display,
                "judged": o.judged,
                **({"note": o.note} if o.note else {}),
                **(
                    {
                        "mode": o.mode,
                        "allowed": o.verdict.allowed,
                        "message": None if o.verdict.allowed else o.verdict.message(),
                        "denials": [_finding_data(f) for f in o.verdict.denials],
                        "warnings": [_finding_data(f) for f in o.verdict.warnings],
                        "patch": list(o.patch),
                    }
                    if o.judged
                    else {}
                ),
            }
            for o in outcomes
        ],
    }


def _short(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= 100 else text[:97] + "..."


def _as_text(outcomes: Sequence[Outcome]) -> str:
    lines: list[str] = []
    for o in outcomes:
        if not o.judged:
            if o.note:
                lines.append(f"{o.document.where}  {o.display}: skipped ({o.note})")
            continue
        state = "admitted" if o.verdict.allowed else "DENIED"
        lines.append(f"{o.document.where}  {o.display}: {state} ({o.mode})")
        if not o.verdict.allowed:
            lines.extend(f"  {line}" for line in o.verdict.message().splitlines())
        lines.extend(f"  Warning: {line}" for line in o.verdict.warning_lines())
        lines.extend(
            f"  changes: {op.get('op')} {op.get('path')}"
            + (f" = {_short(op['value'])}" if "value" in op else "")
            for op in o.patch
        )
    judged = [o for o in outcomes if o.judged]
    denied = sum(o.denied for o in judged)
    warned = sum(bool(o.verdict.warnings) for o in judged)
    lines.append(
        f"{len(judged)} judged: {denied} denied, {len(judged) - denied} admitted"
        + (f" ({warned} with warnings)" if warned else "")
    )
    return "\n".join(lines) + "\n"


def as_sarif(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """SARIF 2.1.0: one result per finding, located at the document in its file."""
    rules: dict[str, dict[str, Any]] = {}
    results: list[dict[str, Any]] = []
    for o in outcomes:
        for level, found in (("error", o.verdict.denials), ("warning", o.verdict.warnings)):
            for finding in found:
                rules.setdefault(
                    finding.reason,
                    {
                        "id": finding.reason,
                        "name": finding.reason,
                        "shortDescription": {"text": f"{finding.check}: {finding.reason}"},
                        "helpUri": f"{INFORMATION_URI}/blob/main/docs/troubleshooting.md",
                        "properties": {"check": finding.check},
                    },
                )
                results.append(
                    {
                        "ruleId": finding.reason,
                        "level": level,
                        "message": {"text": f"{o.display}: {finding}"},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {
                                        "uri": "stdin"
                                        if o.document.file == "-"
                                        else o.document.file
                                    },
                                    "region": {"startLine": o.document.line},
                                },
                                "logicalLocations": [
                                    {"name": o.display, "kind": "object"},
                                ],
                            }
                        ],
                        "properties": {
                            "document": o.document.index,
                            "check": finding.check,
                            "subject": finding.subject,
                            "mode": finding.mode.value,
                            **(
                                {"policy": str(finding.policy)}
                                if finding.policy is not None
                                else {}
                            ),
                        },
                    }
                )
    rule_list = sorted(rules.values(), key=lambda rule: str(rule["id"]))
    order = {str(rule["id"]): index for index, rule in enumerate(rule_list)}
    for result in results:
        result["ruleIndex"] = order[result["ruleId"]]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "muster",
                        "version": muster.__version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rule_list,
                    }
                },
                "results": results,
            }
        ],
    }


def _expand(names: Sequence[str]) -> list[str]:
    """Policy files, with every ``*.yaml``/``*.yml`` of a folder, in name order."""
    found: list[str] = []
    for name in names:
        path = Path(name)
        if name != "-" and path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
            if not files:
                raise common.CommandError(f"policy folder {name} holds no .yaml or .yml file")
            found.extend(str(p) for p in files)
        else:
            found.append(name)
    return found


def check(args: argparse.Namespace) -> int:
    if args.kubeconfig and args.policy:
        raise common.CommandError("use --policy files or --kubeconfig, not both")
    if args.timeout <= 0:
        raise common.CommandError("--timeout must be positive")
    if args.files.count("-") > 1:
        raise common.CommandError("stdin (-) can be read only once")
    manifests = [d for name in args.files for d in load_documents(name, _read_text(name))]
    policy_documents: list[Document] = []
    for name in _expand(args.policy):
        if name == "-" and "-" in args.files:
            raise common.CommandError("stdin (-) can be read only once")
        policy_documents.extend(load_documents(name, _read_text(name)))
    for document in [*manifests, *policy_documents]:
        _validate_policy(document)
    if not any(_judged_resource(d.body) for d in manifests):
        raise common.CommandError(
            "no Pod, workload or training job found in " + ", ".join(args.files)
        )
    outcomes = asyncio.run(_run(args, manifests, policy_documents))
    if args.format == "sarif":
        json.dump(as_sarif(outcomes), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        common.emit(args, _as_text(outcomes), _as_data(outcomes))
    return common.EXIT_FAIL if any(o.denied for o in outcomes) else common.EXIT_OK

"""Write docs/reference.md: every custom resource field and every label/annotation Muster uses.

python hack/generate-reference.py          # write docs/reference.md
python hack/generate-reference.py --check  # exit 1 when docs/reference.md is out of date

Fields come from muster.app.catalog (the CRDs generated from the pydantic models the gates
validate with), so the reference cannot drift from what the apiserver accepts. Labels and
annotations are found in the package source (every ``muster.dev/<key>`` string); each one must
be described in KEYS below, or this script fails naming it.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from muster.app import catalog
from muster.gpu.rules import stack as gpustack

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "reference.md"
PACKAGE = ROOT / "operator" / "muster"

# Strings under muster.dev/ that are not labels or annotations.
NOT_KEYS = {"muster.dev/v1alpha1", "muster.dev/operator"}

# key -> (label|annotation, on what, who writes it, what it means)
KEYS: dict[str, tuple[str, str, str, str]] = {
    "muster.dev/enforce": (
        "label", "Namespace", "you",
        "`true`/`enforce` or `warn`: the namespace opts in to Muster; violations deny "
        "(enforce) or admit with a warning (warn). Without it Muster never judges the namespace "
        "in the default scope; in cluster scope (chart `enforcement.scope: cluster`) every "
        "namespace is judged in enforce mode and only `warn` lowers it. Only namespace managers "
        "may remove or lower it (namespace guard).",
    ),
    "muster.dev/ignore": (
        "label", "Namespace", "you",
        "`true`: Muster leaves the namespace alone even if it carries `muster.dev/enforce`. Only "
        "namespace managers may set it (namespace guard).",
    ),
    "muster.dev/uncovered-images": (
        "label", "Namespace", "you (platform team)",
        "`deny`, `warn` or `allow`: what happens to an image no ImagePolicy covers in this "
        "namespace, overriding `muster run --uncovered-images` (chart `images.uncovered`, default "
        "`deny`); any other value counts as `deny`. The namespace guard keeps tenants from "
        "lowering it.",
    ),
    "muster.dev/cuda-requirement": (
        "annotation", "Pod / pod template", "you",
        "the CUDA requirement of the pod, in NVIDIA_REQUIRE_CUDA grammar (`cuda>=12.4`), when "
        "its images' configs do not say it",
    ),
    "muster.dev/gpu-stack": (
        "label", "Node", "Muster (operator)",
        "`compliant`, `non-compliant` or `unknown`: the node's GPU stack judged against every "
        "GPUStackPolicy; admission steers GPU pods to `compliant` nodes. Only the operator may "
        "write it (trust-anchor guard)",
    ),
    "muster.dev/cuda-capability": (
        "label", "Node", "Muster (operator)",
        "the highest CUDA version the node's driver supports, as NVML's integer (12.4 -> 12040), "
        "so node affinity can compare it with `Gt`. Only the operator may write it (trust-anchor "
        "guard)",
    ),
    "muster.dev/gpu-attestation": (
        "annotation", "Node", "Muster node agent",
        "JSON measurement of the node (driver, kernel module digest, container toolkit), "
        "read by the operator when judging the node. Only the agent of that node (or the "
        "operator) may write it (trust-anchor guard)",
    ),
    "muster.dev/not-model-data": (
        "label", "PersistentVolumeClaim", "namespace managers",
        '`"true"`: the claim holds neither model weights nor training data (scratch, caches); '
        "strict volume mode (`volumes: declaredOnly`) admits it. Only namespace managers may "
        "add, change or remove it (data-marks guard)",
    ),
    "muster.dev/dataset": (
        "label or annotation", "PersistentVolumeClaim", "you",
        "the name of the Dataset the volume holds: pods mounting it are judged by the dataset "
        "gate and get a verifier init container",
    ),
    "muster.dev/dataset-volumes": (
        "annotation", "Pod / pod template", "you",
        'JSON `{"<volume>": "<Dataset>"}`: volumes that hold the named Datasets (verified on the '
        "node)",
    ),
    "muster.dev/datasets": (
        "annotation", "Pod", "Muster (admission)",
        'JSON list `[{"name", "digest"}]` of the Datasets the pod uses; used for revocation',
    ),
    "muster.dev/uses-datasets": (
        "label", "Pod", "Muster (admission)",
        "`true` on pods that use Datasets, so a revoked Dataset (or one revoked through its "
        "lineage) finds its pods with one list",
    ),
    "muster.dev/model": (
        "label or annotation", "PersistentVolumeClaim", "you",
        "the name of the Model the volume holds: pods mounting it are judged by the model gate "
        "and get a verifier init container",
    ),
    "muster.dev/model-volumes": (
        "annotation", "Pod / pod template", "you",
        'JSON `{"<volume>": "<Model>"}`: volumes that hold the named Models (verified on the node)',
    ),
    "muster.dev/models": (
        "annotation", "Pod", "Muster (admission)",
        'JSON list `[{"name", "digest"}]` of the Models the pod mounts; used for revocation',
    ),
    "muster.dev/uses-models": (
        "label", "Pod", "Muster (admission)",
        "`true` on pods that mount Models, so a revoked Model finds its pods with one list",
    ),
    "muster.dev/results-omitted": (
        "annotation", "PolicyReport / ClusterPolicyReport `muster`", "Muster (operator)",
        "how many results a report left out to stay within `muster run "
        "--policy-report-max-results` (its summary counts them all)",
    ),
    "muster.dev/exemption": (
        "annotation", "Pod / workload / pod template", "you",
        "break-glass: a reason; honoured only for users in an exemption group "
        "(`muster run --exemption-group`), turning denials into audited warnings",
    ),
    "muster.dev/bom": (
        "label", "ConfigMap", "Muster (operator)",
        "`true` on the ConfigMaps holding a workload's CycloneDX AI-BOM (key `bom.json`)",
    ),
    "muster.dev/bom-content-sha256": (
        "annotation", "ConfigMap", "Muster (operator)",
        "digest of the AI-BOM content, so it is rewritten only when it changes",
    ),
    "muster.dev/bom-workload": (
        "annotation", "ConfigMap", "Muster (operator)",
        "the workload (`Kind/name`) the AI-BOM describes",
    ),
}  # fmt: skip


def keys_in_source() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("muster.dev/")
                and " " not in node.value
                and not node.value.endswith("/")
                and node.value not in NOT_KEYS
            ):
                found.add(node.value)
    return found


def _type(schema: Mapping[str, Any]) -> str:
    kind = str(schema.get("type", "object" if "properties" in schema else "any"))
    if kind == "array":
        return f"[]{_type(schema.get('items') or {})}"
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    return kind


def _details(schema: Mapping[str, Any], required: bool) -> str:
    text = str(schema.get("description", "")).replace("\n", " ").replace("|", "\\|").strip()
    if text and not text.endswith((".", "!", "?")):
        text += "."
    parts = [text]
    if required:
        parts.insert(0, "**required**.")
    if "enum" in schema:
        parts.append("One of " + ", ".join(f"`{value}`" for value in schema["enum"]) + ".")
    if "default" in schema:
        parts.append(f"Default `{json.dumps(schema['default'])}`.")
    for bound, word in (("minimum", "at least"), ("maximum", "at most")):
        if bound in schema:
            parts.append(f"{word.capitalize()} {schema[bound]}.")
    if "pattern" in schema:
        parts.append(f"Pattern `{schema['pattern']}`.".replace("|", "\\|"))
    return " ".join(part for part in parts if part).strip()


def fields(schema: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str, str]]:
    required = set(schema.get("required") or ())
    for name, child in (schema.get("properties") or {}).items():
        path = f"{prefix}.{name}"
        yield path, _type(child), _details(child, name in required)
        target = child.get("items") if child.get("type") == "array" else child
        if isinstance(target, Mapping) and "properties" in target:
            suffix = "[]" if child.get("type") == "array" else ""
            yield from fields(target, path + suffix)


def render() -> str:
    out = [
        "# Reference",
        "",
        "<!-- Generated by hack/generate-reference.py from the CRD catalog and the package "
        "source: do not edit. -->",
        "",
        "Every field of Muster's custom resources (group `muster.dev`, version `v1alpha1`) and "
        "every label and annotation Muster reads or writes. `kubectl explain <kind>.spec` shows "
        "the same descriptions from the installed CRDs.",
        "",
    ]
    definitions = sorted(catalog.definitions(), key=lambda crd: crd["spec"]["names"]["kind"])
    out.append("Resources: " + ", ".join(
        f"[{crd['spec']['names']['kind']}](#{crd['spec']['names']['kind'].lower()})"
        for crd in definitions
    ) + ", [labels and annotations](#labels-and-annotations).")  # fmt: skip
    out.append("")
    for crd in definitions:
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        schema = version["schema"]["openAPIV3Schema"]
        short = ", ".join(f"`{n}`" for n in names.get("shortNames") or ())
        out += [
            f"## {names['kind']}",
            "",
            f"`{crd['spec']['group']}/{version['name']}`, {crd['spec']['scope'].lower()}-scoped;"
            f" `kubectl get {names['plural']}`" + (f" (short: {short})" if short else "") + ".",
            "",
            str(schema.get("description", "")),
            "",
            "| field | type | description |",
            "|---|---|---|",
        ]
        for section in ("spec", "status"):
            part = (schema.get("properties") or {}).get(section)
            if isinstance(part, Mapping):
                rows = list(fields(part, section))
                if not rows:
                    rows = [(section, _type(part), _details(part, False))]
                out += [f"| `{path}` | {kind} | {text} |" for path, kind, text in rows]
        columns = version.get("additionalPrinterColumns") or []
        if columns:
            out += ["", "`kubectl get` columns: " + ", ".join(c["name"] for c in columns) + "."]
        out.append("")
    out += [
        "## Labels and annotations",
        "",
        "| key | kind | on | set by | meaning |",
        "|---|---|---|---|---|",
    ]
    for key in sorted(KEYS):
        kind, where, who, meaning = KEYS[key]
        out.append(f"| `{key}` | {kind} | {where} | {who} | {meaning} |")
    gfd = [
        gpustack.DRIVER_FULL, *gpustack.DRIVER_PARTS, *gpustack.DRIVER_PARTS_OLD,
        gpustack.CUDA_FULL, *gpustack.CUDA_PARTS, *gpustack.CUDA_PARTS_OLD,
    ]  # fmt: skip
    out += [
        "",
        "Muster also reads these node labels written by NVIDIA GPU Feature Discovery (the "
        "`full` values first, then the parts, then the deprecated keys): "
        + ", ".join(f"`{key}`" for key in gfd)
        + "; and `nvidia.com/gpu.product`, `nvidia.com/gpu.count` and the other "
        "`nvidia.com/` labels for the AI-BOM. Pods request GPUs with `nvidia.com/gpu` or "
        "`nvidia.com/mig-<profile>` resources.",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    undocumented = sorted(keys_in_source() - set(KEYS))
    if undocumented:
        print(
            "describe these keys in hack/generate-reference.py KEYS: " + ", ".join(undocumented),
            file=sys.stderr,
        )
        return 1
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(
                "out of date: docs/reference.md (run hack/generate-reference.py)", file=sys.stderr
            )
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

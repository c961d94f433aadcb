"""CustomResourceDefinitions generated from the pydantic models the code validates with.

One source for both: the apiserver rejects a malformed policy with the same schema Muster
parses it with, and ``hack/generate-crds.py`` writes the chart's CRDs from here (a test fails
when they drift).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic

__all__ = ["GROUP", "VERSION", "definition", "structural"]

GROUP = "muster.dev"
VERSION = "v1alpha1"


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Make pydantic's JSON schema a Kubernetes structural schema: inline ``$ref``s, turn
    ``anyOf [X, null]`` into ``nullable``, drop what the apiserver rejects or ignores."""
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) == 1 and len(options) < len(node["anyOf"]):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = {**structural(options[0], defs), **rest, "nullable": True}
            return structural(merged, defs)
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "$defs"):
            continue
        if key == "additionalProperties":
            if value is False:
                continue  # pruning already drops unknown fields; structural schemas forbid it
            if value is True or value == {}:
                result["x-kubernetes-preserve-unknown-fields"] = True
                continue
        if key == "properties":
            result[key] = {name: structural(sub, defs) for name, sub in value.items()}
            continue
        result[key] = structural(value, defs)
    # An object with neither fields nor a map value schema keeps whatever it is given.
    if (
        result.get("type") == "object"
        and "properties" not in result
        and "additionalProperties" not in result
    ):
        result.setdefault("x-kubernetes-preserve-unknown-fields", True)
    if "default" in result and result["default"] is None:
        del result["default"]
    return result


def spec_schema(model: type[pydantic.BaseModel], description: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    spec: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    spec["description"] = description
    return spec


def definition(
    *,
    kind: str,
    plural: str,
    spec_model: type[pydantic.BaseModel],
    description: str,
    scope: str = "Cluster",
    short_names: Sequence[str] = (),
    printer_columns: Sequence[dict[str, Any]] = (),
    status_schema: dict[str, Any] | None = None,
    categories: Sequence[str] = ("muster",),
) -> dict[str, Any]:
    """A complete ``apiextensions.k8s.io/v1`` CRD with a status subresource."""
    schema = {
        "type": "object",
        "description": description,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(spec_model, description),
            "status": status_schema
            or {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "muster", "app.kubernetes.io/part-of": "muster"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
                "categories": list(categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        *printer_columns,
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }

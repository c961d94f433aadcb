"""The GPUStackPolicy spec, its CRD schema and the seed policy from NVIDIA's bulletins."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
import pytest

from muster.gpu.rules import cuda
from muster.gpu.rules import policies as gpupolicies

pytestmark = pytest.mark.unit


def test_the_default_policy_encodes_the_known_vulnerable_list() -> None:
    policy = gpupolicies.default_policy()
    assert policy.mode == "enforce"
    denied = {rule.branch: rule.max for rule in policy.denied_drivers.ranges}
    assert denied == {535: "535.309.01", 580: "580.159.03", 595: "595.71.05"}
    assert [branch.branch for branch in policy.end_of_life_branches] == [550, 560, 565, 570, 575]
    assert policy.minimum_toolkit_version == "1.17.8"
    toolkit = {rule.max: rule.source or "" for rule in policy.denied_toolkit_versions}
    assert set(toolkit) == {"1.17.8", "1.16.2"}
    assert "CVE-2025-23266" in toolkit["1.17.8"] and "CVE-2025-23267" in toolkit["1.17.8"]
    assert "CVE-2024-0132" in toolkit["1.16.2"] and "CVE-2024-0133" in toolkit["1.16.2"]


def test_every_default_entry_cites_its_source() -> None:
    policy = gpupolicies.default_policy()
    entries: list[Any] = [
        *policy.denied_drivers.ranges,
        *policy.end_of_life_branches,
        *policy.denied_toolkit_versions,
    ]
    assert len(entries) == 10
    for entry in entries:
        assert entry.source and "NVIDIA" in entry.source and "https://" in entry.source


def test_the_default_policy_is_plain_data_that_roundtrips() -> None:
    policy = gpupolicies.default_policy()
    dumped = policy.model_dump(by_alias=True, exclude_defaults=True)
    assert gpupolicies.parse_spec(json.loads(json.dumps(dumped))) == policy
    assert "deniedDrivers" in dumped and "endOfLifeBranches" in dumped
    # The module constant is not shared state: changing a copy changes nothing.
    gpupolicies.default_policy()
    assert gpupolicies.DEFAULT_POLICY["minimumToolkitVersion"] == "1.17.8"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="allowedDriver"):
        gpupolicies.parse_spec({"allowedDriver": {}})
    with pytest.raises(pydantic.ValidationError):
        gpupolicies.parse_spec({"deniedDrivers": {"ranges": [{"branch": 535, "below": "1"}]}})


def test_specs_are_frozen() -> None:
    policy = gpupolicies.default_policy()
    with pytest.raises(pydantic.ValidationError):
        policy.mode = "warn"  # type: ignore[misc]


def test_snake_case_names_work_in_python() -> None:
    policy = gpupolicies.GPUStackPolicySpec(require_attestation=True, mode="warn")
    assert policy.require_attestation and policy.mode == "warn"


@pytest.mark.parametrize(
    "spec",
    [
        {"mode": "audit"},
        {"minimumToolkitVersion": "1.17.x"},
        {"minimumToolkitVersion": "v1.17.8"},
        {"allowedDrivers": {"versions": ["580.95.05", "latest"]}},
        {"deniedDrivers": {"ranges": [{"min": "580.2", "max": "580.1"}]}},
        {"deniedDrivers": {"ranges": [{"branch": -1}]}},
        {"allowedCudaVersions": [{"min": "13.0", "max": "13"}]},
        {"knownGoodModuleDigests": ["sha256:ABC"]},
        {"knownGoodModuleDigests": ["md5:" + "0" * 32]},
        {"requireAttestation": "sometimes"},
        [],
    ],
)
def test_bad_specs_are_value_errors(spec: Any) -> None:
    with pytest.raises(ValueError):
        gpupolicies.parse_spec(spec)


def test_ranges() -> None:
    rule = gpupolicies.DriverRange(branch=580, min="580.65.06", max="580.159.03")
    assert rule.contains(cuda.parse_version("580.95.05"))
    assert not rule.contains(cuda.parse_version("580.159.03"))  # max is exclusive
    assert rule.contains(cuda.parse_version("580.65.6"))  # min inclusive, numerically
    assert not rule.contains(cuda.parse_version("575.100"))
    assert rule.describe() == "R580 >= 580.65.06 and < 580.159.03"
    assert gpupolicies.VersionRange().contains(cuda.parse_version("1"))


def _walk(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_the_crd_schema_is_structural() -> None:
    schema = gpupolicies.openapi_schema()
    assert schema["type"] == "object"
    spec = schema["properties"]["spec"]
    assert schema["properties"]["metadata"] == {"type": "object"}  # the apiserver owns it
    for node in _walk(spec):
        assert not {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title"} & node.keys(), node
        if node.get("type") == "object":
            # Fields, or a map's value schema, or explicitly anything: never two of these.
            kinds = {"properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields"}
            assert len(kinds & node.keys()) == 1, node
    assert set(spec["properties"]) == {
        "mode",
        "unknownNodes",
        "namespaceSelector",
        "allowedDrivers",
        "deniedDrivers",
        "endOfLifeBranches",
        "allowedCudaVersions",
        "minimumToolkitVersion",
        "deniedToolkitVersions",
        "requireAttestation",
        "requireEnvvarDevicesOff",
        "knownGoodModuleDigests",
        "denial",
    }
    assert spec["properties"]["mode"]["enum"] == ["enforce", "warn"]
    selector = spec["properties"]["namespaceSelector"]
    assert selector["nullable"] is True
    assert selector["properties"]["matchLabels"]["additionalProperties"] == {"type": "string"}
    assert spec["properties"]["minimumToolkitVersion"]["nullable"] is True
    assert spec["properties"]["minimumToolkitVersion"]["pattern"]
    ranges = spec["properties"]["deniedDrivers"]["properties"]["ranges"]["items"]
    assert set(ranges["properties"]) == {"branch", "min", "max", "source"}
    digests = spec["properties"]["knownGoodModuleDigests"]["items"]
    assert digests["pattern"] == "^sha256:[0-9a-f]{64}$"


def _conforms(value: Any, schema: dict[str, Any]) -> bool:
    """The subset of OpenAPI v3 validation the generated schema uses."""
    if value is None:
        return bool(schema.get("nullable"))
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        props = schema.get("properties")
        if props is None:
            return True
        if set(value) - set(props) or set(schema.get("required", [])) - set(value):
            return False
        return all(_conforms(item, props[key]) for key, item in value.items())
    if kind == "array":
        return isinstance(value, list) and all(_conforms(i, schema["items"]) for i in value)
    if kind == "string":
        ok = isinstance(value, str)
        if ok and "enum" in schema:
            ok = value in schema["enum"]
        if ok and "pattern" in schema:
            ok = re.search(schema["pattern"], value) is not None
        return ok
    if kind == "integer":
        return isinstance(value, int) and value >= schema.get("minimum", value)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def test_the_default_policy_fits_the_crd_schema() -> None:
    spec = gpupolicies.openapi_schema()["properties"]["spec"]
    assert _conforms(gpupolicies.DEFAULT_POLICY, spec)
    assert not _conforms({**gpupolicies.DEFAULT_POLICY, "minimumToolkitVersion": "1.x"}, spec)
    assert not _conforms({**gpupolicies.DEFAULT_POLICY, "surprise": True}, spec)

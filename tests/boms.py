"""Validating AI-BOMs against the CycloneDX 1.6 JSON schema bundled with cyclonedx-python-lib."""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

__all__ = ["schema_errors"]

_VALIDATOR = JsonStrictValidator(SchemaVersion.V1_6)


def schema_errors(bom: dict[str, Any]) -> str | None:
    """None when ``bom`` is valid CycloneDX 1.6; else the validator's first error, shortened."""
    error = _VALIDATOR.validate_str(json.dumps(bom))
    if error is None:
        return None
    return str(error).split("\n\n", 1)[0][:2000]

"""ModelPolicy licence rules: a Model's SPDX licence judged at admission (ModelLicenseNotAllowed),
and a Model whose licence is not SPDX is invalid (never approved)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from muster.kernel import findings
from muster.models import gate as modeladmission
from muster.models.rules import approval as modelgate
from muster.models.rules import registry as modelregistry
from muster.platform import kubeapi

pytestmark = pytest.mark.unit

OMS = "sha256:" + "11" * 32
USE = modelgate.ModelUse("declaredVolume", "weights", "llama")


def index(**spec: Any) -> modelregistry.Index:
    found = modelregistry.Index()
    fields: dict[str, Any] = {"digest": OMS, **spec}
    found.put_model(
        modelregistry.ModelEntry("llama", modelregistry.ModelSpec.model_validate(fields))
    )
    return found


def policy(**licenses: Any) -> modelregistry.ModelPolicySpec:
    return modelregistry.ModelPolicySpec.model_validate({"licenses": licenses})


def judged(
    licence: str | None, policies: dict[str, modelregistry.ModelPolicySpec]
) -> findings.Finding | None:
    combined = modelgate.effective_policy(policies)
    assert combined is not None
    spec = {} if licence is None else {"license": licence}
    return modelgate.judge_use(USE, index(**spec), combined).finding


def test_a_denied_licence_in_a_conjunction_is_refused_naming_everything() -> None:
    found = judged("Apache-2.0 AND CC-BY-NC-4.0", {"prod": policy(deny=["CC-BY-NC-*"])})
    assert found is not None
    assert found.reason == "ModelLicenseNotAllowed"
    assert found.subject == 'volume "weights"'
    assert found.message == (
        "Model 'llama' is not allowed by ModelPolicy 'prod': licence 'Apache-2.0 AND "
        "CC-BY-NC-4.0' is refused: CC-BY-NC-4.0 matches deny CC-BY-NC-* (use a Model whose "
        "licence the policy allows, or change the policy's licenses)"
    )


def test_a_choice_with_an_allowed_branch_is_admitted() -> None:
    assert judged("MIT OR CC-BY-NC-4.0", {"prod": policy(deny=["CC-BY-NC-*"])}) is None


def test_every_selecting_policy_must_allow_the_licence() -> None:
    policies = {
        "a-legal": policy(allow=["Apache-2.0", "MIT"]),
        "b-team": policy(deny=["MIT"]),
        "c-none": policy(),
    }
    assert judged("Apache-2.0", policies) is None
    mit = judged("MIT", policies)
    assert mit is not None
    assert "ModelPolicy 'b-team'" in mit.message
    assert "MIT matches deny MIT" in mit.message
    bsd = judged("BSD-3-Clause", policies)
    assert bsd is not None
    assert "ModelPolicy 'a-legal'" in bsd.message
    assert "BSD-3-Clause is not in allow [Apache-2.0, MIT]" in bsd.message


def test_a_model_without_a_licence_fails_an_allow_list_only() -> None:
    found = judged(None, {"prod": policy(allow=["Apache-2.0"])})
    assert found is not None
    assert "no licence is declared, so it is not in allow [Apache-2.0]" in found.message
    assert judged(None, {"prod": policy(deny=["CC-BY-NC-*"])}) is None


def test_licence_refusals_follow_the_policy_mode() -> None:
    warn = modelregistry.ModelPolicySpec.model_validate(
        {"mode": "warn", "licenses": {"deny": ["GPL-*"]}}
    )
    found = judged("GPL-3.0-only", {"soft": warn})
    assert found is not None
    assert found.mode is findings.Mode.WARN


def test_a_single_policy_judges_with_its_own_rules() -> None:
    # judge_use with one ModelPolicySpec as written (not combined): its licenses count.
    found = modelgate.judge_use(USE, index(license="CC-BY-NC-4.0"), policy(deny=["CC-BY-NC-*"]))
    assert found.finding is not None
    assert "by the ModelPolicy:" in found.finding.message


def test_a_revoked_model_is_reported_as_revoked_not_by_licence() -> None:
    combined = modelgate.effective_policy({"prod": policy(deny=["CC-BY-NC-*"])})
    assert combined is not None
    match = modelgate.judge_use(USE, index(license="CC-BY-NC-4.0", revoked=True), combined)
    assert match.finding is not None
    assert match.finding.reason == "ModelRevoked"


def test_the_model_licence_is_normalised() -> None:
    spec = modelregistry.ModelSpec.model_validate({"digest": OMS, "license": "apache-2.0 or mit"})
    assert spec.license == "Apache-2.0 OR MIT"


@pytest.mark.parametrize(
    ("licence", "says"),
    [
        ("llama3.1", "'llama3.1' is not an SPDX licence id"),
        ("Apache-2.0 AND", "not a valid SPDX licence expression"),
        ("Apache-2.0 Or MIT", "operator 'Or' must be written 'OR'"),
    ],
)
def test_a_model_whose_licence_is_not_spdx_is_invalid(licence: str, says: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        modelregistry.ModelSpec.model_validate({"digest": OMS, "license": licence})
    assert says in str(raised.value)
    # The catalog drops it and says why: such a Model approves nothing.
    kube = kubeapi.KubeApi(kubeapi.Credentials(host="https://127.0.0.1:9", ca_file=None))
    catalog = modeladmission.ModelCatalog(kube, max_age=float("inf"))
    why = catalog.model_changed("llama", {"digest": OMS, "license": licence}, {}, 1)
    assert why is not None
    assert says in why
    assert "llama" not in catalog.index.models


def test_a_policy_with_a_pattern_that_matches_nothing_is_invalid() -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        policy(deny=["CC-BY-NCC-*"])
    assert "matches no SPDX licence id" in str(raised.value)


def test_the_combined_policy_keeps_every_licence_rule_by_name() -> None:
    combined = modelgate.effective_policy(
        {"b": policy(deny=["GPL-*"]), "a": policy(allow=["MIT"]), "c": policy()}
    )
    assert combined is not None
    assert [name for name, _ in combined.licence_rules] == ["a", "b"]
    unnamed = modelgate.effective_policy([policy(deny=["GPL-*"])])
    assert unnamed is not None
    assert [name for name, _ in unnamed.licence_rules] == [None]

"""Chart values for cloud registries: credential helpers per registry, the init container and
volume that put their executables on PATH, and workload-identity ServiceAccount annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muster.kernel import credhelpers
from tests.integration import docblocks
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

HELPERS = {"123456789012.dkr.ecr.*.amazonaws.com": "ecr-login", "*-docker.pkg.dev": "gcr"}


def test_helpers_render_as_run_options_with_their_executables_on_path(tmp_path: Path) -> None:
    default = rendering.one(rendering.documents(rendering.template()), "Deployment")
    (container,) = default["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith("--credential-helper") for a in container["args"])
    assert "initContainers" not in default["spec"]["template"]["spec"]

    copy = {
        "name": "credential-helpers",
        "image": "registry.example/helpers@sha256:" + "1" * 64,
        "command": ["cp", "/helpers/docker-credential-ecr-login", "/opt/credential-helpers/"],
        "volumeMounts": [{"name": "credential-helpers", "mountPath": "/opt/credential-helpers"}],
    }
    values = {
        "operator": {
            "registryCredentialHelpers": HELPERS,
            "registryCredentialHelperTTLSeconds": 300,
            "extraInitContainers": [copy],
            "extraVolumes": [{"name": "credential-helpers", "emptyDir": {"sizeLimit": "64Mi"}}],
            "extraVolumeMounts": [
                {"name": "credential-helpers", "mountPath": "/opt/credential-helpers"}
            ],
            "extraEnv": [{"name": "PATH", "value": "/opt/credential-helpers:/opt/muster/bin"}],
        },
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/muster"}
        },
    }
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    documents = rendering.documents(rendering.template(f"--values={path}"))
    pod = rendering.one(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    options = [a for a in container["args"] if a.startswith("--credential-helper")]
    assert options == [
        "--credential-helper=*-docker.pkg.dev=gcr",
        "--credential-helper=123456789012.dkr.ecr.*.amazonaws.com=ecr-login",
        "--credential-helper-ttl=300",
    ]
    # What the chart renders is what `muster run` parses.
    parsed = [credhelpers.parse_rule(a.split("=", 1)[1]) for a in options[:2]]
    assert credhelpers.helper_for(parsed, "123456789012.dkr.ecr.eu-west-1.amazonaws.com") == (
        "ecr-login"
    )
    assert pod["initContainers"] == [copy]
    assert {"name": "credential-helpers", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert {
        "name": "credential-helpers",
        "mountPath": "/opt/credential-helpers",
    } in container["volumeMounts"]
    assert {"name": "PATH", "value": "/opt/credential-helpers:/opt/muster/bin"} in container["env"]
    # The operator's own ServiceAccount (the node agent has another) carries the identity.
    (account,) = [
        doc
        for doc in rendering.by_kind(documents, "ServiceAccount")
        if doc["metadata"]["name"] == pod["serviceAccountName"]
    ]
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/muster"
    }


def test_the_schema_refuses_a_helper_name_that_is_a_path() -> None:
    refused = rendering.helm(
        "template",
        "muster",
        str(rendering.CHART),
        '--set-json=operator.registryCredentialHelpers={"ghcr.io": "../../bin/sh"}',
        check=False,
    )
    assert refused.returncode != 0
    assert "registryCredentialHelpers" in refused.stderr


def test_the_documented_cloud_registry_values_render(tmp_path: Path) -> None:
    """The values docs/images.md shows for ECR and Artifact Registry, rendered by helm."""
    (b,) = docblocks.named("delegated", "tests/integration/chart/test_credential_helper_values.py")
    assert b.doc == "docs/images.md"
    values = tmp_path / "cloud.yaml"
    values.write_text(b.body)
    documents = rendering.documents(rendering.template(f"--values={values}"))
    pod = rendering.one(documents, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    rules = [
        credhelpers.parse_rule(a.split("=", 1)[1])
        for a in container["args"]
        if a.startswith("--credential-helper=")
    ]
    assert credhelpers.helper_for(rules, "123456789012.dkr.ecr.us-east-1.amazonaws.com") == (
        "ecr-login"
    )
    assert credhelpers.helper_for(rules, "europe-west4-docker.pkg.dev") == "gcr"
    assert "--credential-helper-ttl=600" in container["args"]
    (init,) = pod["initContainers"]
    (mount,) = init["volumeMounts"]
    assert mount["mountPath"] == "/opt/credential-helpers"
    assert any(
        m["name"] == mount["name"] and m["mountPath"] == mount["mountPath"]
        for m in container["volumeMounts"]
    )
    path = next(e["value"] for e in container["env"] if e["name"] == "PATH")
    assert path.split(":")[:2] == ["/opt/credential-helpers", "/opt/muster/bin"]
    assert any(v["name"] == mount["name"] and "emptyDir" in v for v in pod["volumes"])

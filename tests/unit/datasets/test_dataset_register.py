"""`muster dataset register`: a Dataset manifest for data signed with the real model_signing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from muster import cli
from muster.datasets.rules import registry as datasetregistry
from tests import datasetfiles

pytestmark = pytest.mark.unit


def _register(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main(["dataset", "register", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_register_measures_the_signed_digest_and_records_sources_licence_and_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = datasetfiles.make_dataset(tmp_path / "corpus")
    private, public = datasetfiles.key_pair(tmp_path, "data-team")
    signed = datasetfiles.sign(data, tmp_path / "model.sig", private)

    code, out, err = _register(
        capsys,
        data,
        "--name",
        "chat-instructions",
        "--key",
        public,
        "--source",
        "hf://datasets/acme/chat@0123abc",
        "--source",
        "s3://acme-data/chat/v3",
        "--license",
        "Apache-2.0 AND CC-BY-4.0",
        "--parent",
        "web-crawl",
        "--transformation",
        "deduplicated, PII removed",
        "--code-reference",
        "git+https://git.example/acme/clean@4f2a9c1",
    )

    assert code == 0, err
    manifest = yaml.safe_load(out)
    assert manifest["kind"] == "Dataset"
    assert manifest["metadata"] == {"name": "chat-instructions"}
    spec = manifest["spec"]
    # The digest is the one model_signing signed, measured again from the files.
    assert spec["digest"] == signed
    assert spec["sources"] == ["hf://datasets/acme/chat@0123abc", "s3://acme-data/chat/v3"]
    assert spec["license"] == "Apache-2.0 AND CC-BY-4.0"
    assert spec["lineage"] == {
        "parents": ["web-crawl"],
        "transformation": {
            "description": "deduplicated, PII removed",
            "codeReference": "git+https://git.example/acme/clean@4f2a9c1",
        },
    }
    assert spec["signature"]["publicKey"] == public.read_text()
    assert json.loads(spec["signature"]["bundle"]) == json.loads(
        (tmp_path / "model.sig").read_text()
    )
    # What it prints is a Dataset the operator accepts as it is.
    datasetregistry.DatasetSpec.model_validate(spec)


def test_a_tampered_file_after_signing_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = datasetfiles.make_dataset(tmp_path / "corpus")
    private, public = datasetfiles.key_pair(tmp_path, "data-team")
    datasetfiles.sign(data, tmp_path / "model.sig", private)
    (data / "data" / "test" / "part-0000.jsonl").write_text('{"id": 0, "text": "poisoned"}\n')

    code, out, err = _register(capsys, data, "--name", "corpus", "--key", public)

    assert code == 2
    assert out == ""
    assert "signs sha256:" in err and " measures sha256:" in err


@pytest.mark.parametrize(
    ("option", "value", "names"),
    [
        ("--license", "Apache-2.0 AND", "license"),
        ("--license", "NOT-A-LICENCE-9", "license"),
        ("--source", "ftp://host/data", "sources"),
        ("--parent", "Not_A_Name", "lineage"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, names: str
) -> None:
    data = datasetfiles.make_dataset(tmp_path / "corpus")

    code, out, err = _register(capsys, data, "--name", "corpus", option, value)

    assert code == 2
    assert out == ""
    assert names in err
    assert "Traceback" not in err

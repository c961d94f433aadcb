"""Every fenced block in the docs is an exercised example, or says why it is not.

The markers are described in ``tests/integration/docblocks.py``; in short, ``yaml
title=examples/NAME.yaml`` files (parsed, their ``muster.dev`` objects dry-run against the real
apiserver with Muster's CRDs, workflow files' ``muster check`` lines parsed), ``sh test exit=N``
``muster`` commands (run; an optional following ``text output`` block is the exact output),
``sh cluster exit=N`` ``kubectl``/``helm`` lines (run against the real control plane), ``sh peers
exit=N`` ``muster`` lines (run against a registry, a model or a cluster this module makes, their
placeholders replaced as ``docblocks.PLACEHOLDERS`` lists), ``sh parse`` ``muster`` lines (parsed
by the real command line), ``text real=TEST`` (real output, compared by TEST: the denial
messages here, through ``muster check``), ``LANG by=TEST`` (commands TEST runs);
``text illustration: REASON`` for what is no example (a diagram, measured numbers) and, rarely,
``untested: REASON``. A block with none of them fails the suite, so no example escapes these
checks.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import model_signing
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from muster import cli
from muster.app import localoperator
from muster.platform import controlplane
from tests import attesting, datasetfiles, modelprovenance, notary, paths, peers
from tests.boms import schema_errors
from tests.commandline import muster
from tests.integration import docblocks
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

GUIDES = (
    "docs/getting-started.md",
    "docs/concepts.md",
    "docs/operations.md",
    "docs/troubleshooting.md",
)
blocks = docblocks.blocks


def documented() -> list[str]:
    return list(docblocks.PAGES)


def examples(doc: str) -> list[docblocks.Block]:
    return [b for b in blocks(doc) if b.kind == "example"]


def run_muster(argv: list[str]) -> tuple[int, str, str]:
    """``muster ARGV`` in-process, through the real entry point."""
    return muster(*argv)


def _commands(block: docblocks.Block, program: str | tuple[str, ...]) -> list[list[str]]:
    programs = (program,) if isinstance(program, str) else program
    found = list(docblocks.command_lines(block))
    for argv in found:
        assert argv[0] in programs, f"{block.where}: a {block.kind} block runs {programs}: {argv}"
    assert found, f"{block.where}: no command in a {block.kind} block"
    return found


def write_examples(doc: str, folder: Path) -> None:
    for example in examples(doc):
        target = folder / example.info["title"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(example.body)
        parsed = [d for d in yaml.safe_load_all(example.body) if d is not None]
        assert parsed, f"{example.where}: empty example"


def test_every_block_is_a_tested_example_or_says_why_not() -> None:
    unmarked, orphans, unreasoned = [], [], []
    for doc in documented():
        found = blocks(doc)
        for index, block in enumerate(found):
            if block.kind is None:
                unmarked.append(f"{block.where} ```{block.lang}{block.raw_info}")
            elif block.kind == "output" and (index == 0 or found[index - 1].kind != "test"):
                orphans.append(block.where)
            elif block.kind in ("untested", "illustration") and len(block.reason) < 10:
                unreasoned.append(block.where)
    assert unmarked == [], "fenced blocks neither tested nor marked untested: with a reason"
    assert orphans == [], "text output blocks must follow a sh test block"
    assert unreasoned == [], "untested: and illustration: need a reason"


def test_the_marker_parser_sees_every_fence() -> None:
    everything = [b for doc in documented() for b in blocks(doc)]
    opening = sum(
        1
        for doc in documented()
        for line in (docblocks.ROOT / doc).read_text().splitlines()
        if line.lstrip().startswith("```")
    )
    assert opening == 2 * len(everything)
    # Examples the suite cannot run stay rare.
    assert sum(b.kind == "untested" for b in everything) * 5 < len(everything)


def test_make_targets_and_test_files_the_untested_blocks_name_exist() -> None:
    """What an ``untested:`` or ``by=`` block runs or points to is still checked to exist."""
    makefile = (docblocks.ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = []
    for doc in documented():
        for block in blocks(doc):
            if block.kind not in ("untested", "delegated"):
                continue
            for path in re.findall(r"tests/[\w/.-]+", block.reason):
                assert (docblocks.ROOT / path).exists(), f"{block.where}: no {path}"
            for argv in (line.split() for line in block.body.splitlines()):
                if argv[:1] == ["make"]:
                    named.append(argv[1])
                    assert argv[1] in targets, f"{block.where}: no make target {argv[1]}"
    assert {"demo", "test", "bench", "bench-smoke"} <= set(named)


def test_real_and_delegated_blocks_name_a_test_that_reads_them() -> None:
    """A ``real=`` or ``by=`` block names a test file that asks for exactly its blocks, so no
    such block is left unchecked."""
    for doc in documented():
        for block in blocks(doc):
            if block.kind not in ("real", "delegated"):
                continue
            test = block.info["real" if block.kind == "real" else "by"]
            path = docblocks.ROOT / test
            assert path.is_file(), f"{block.where}: no {test}"
            call = f'docblocks.named("{block.kind}", "{test}")'
            assert call in path.read_text(), f"{block.where}: {test} does not read it ({call})"


def test_the_comparison_with_real_output_allows_only_the_documented_differences() -> None:
    def block(body: str) -> docblocks.Block:
        return docblocks.Block("docs/x.md", 1, "text", " real=tests/x.py", body)

    real = (
        "$ kubectl apply -f pod.yaml\n  Error from server: admission webhook denied the request: "
        f"image '127.0.0.1:41877/app:v1@sha256:{'9d' * 32}' is rejected\n"
        "  12s   Warning   ImageNotSigned   Pod demo/unsigned: denied by muster: long text"
    )
    documented = (
        "$ kubectl apply -f pod.yaml\n  Error from server: admission webhook\n  denied the "
        "request: image '127.0.0.1:5000/app:v1@sha256:9d...' is rejected\n"
        "  1s    Warning   ImageNotSigned   Pod demo/unsigned: denied by muster: ..."
    )
    assert docblocks.matches(block(documented), real) == ""
    for was, now in (("webhook", "webhook refused"), ("v1@", "v2@"), ("1s", "s1"), ("ed ", "")):
        changed = documented.replace(was, now, 1)
        assert changed != documented
        assert "differs" in docblocks.matches(block(changed), real), now
    assert "from line 5 on, 'more'" in docblocks.matches(block(documented + "\nmore"), real)

    table = "NAME   KIND   AGE\nsha256-ab12...   Pod   5m\n"
    assert (
        docblocks.table_differences(block(table), f"NAME  KIND  AGE\nsha256-{'a' * 64}  Job  2s")
        == ""
    )
    assert "columns" in docblocks.table_differences(block(table), "NAME  KIND\nsha256-ab  Pod")
    assert "shaped" in docblocks.table_differences(block(table), "NAME  KIND  AGE\nx  Pod  3s")


def test_every_guide_example_is_a_titled_example() -> None:
    untitled = [
        b.where for doc in GUIDES for b in blocks(doc) if b.lang == "yaml" and b.kind != "example"
    ]
    assert untitled == []
    assert sum(len(examples(doc)) for doc in GUIDES) >= 6


@pytest.mark.parametrize("doc", documented())
def test_examples_parse_and_commands_give_the_documented_answers(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    found = blocks(doc)
    for index, block in enumerate(found):
        if block.kind != "test":
            continue
        expected = int(block.info.get("exit", "0"))
        output = ""
        for argv in _commands(block, "muster"):
            code, output, err = run_muster(argv[1:])
            assert code == expected, f"{block.where}: {shlex.join(argv)} -> {code}\n{err}"
        following = found[index + 1] if index + 1 < len(found) else None
        if following is not None and following.kind == "output":
            assert output.strip() == following.body.strip(), f"{following.where}: output differs"


@pytest.mark.parametrize("doc", documented())
def test_muster_commands_that_need_peers_parse(doc: str) -> None:
    for block in blocks(doc):
        if block.kind in ("parse", "peers"):
            for argv in _commands(block, "muster"):
                error = docblocks.parse_muster(argv[1:])
                assert error == "", f"{block.where}: {shlex.join(argv)}: {error}"


@pytest.mark.parametrize("doc", documented())
def test_workflow_examples_call_muster_check_correctly(doc: str) -> None:
    for example in examples(doc):
        documents = list(yaml.safe_load_all(example.body))
        workflow = documents[0] if len(documents) == 1 else None
        if not isinstance(workflow, dict) or "jobs" not in workflow:
            continue
        lines = [
            line.strip()
            for job in workflow["jobs"].values()
            for step in job["steps"]
            for line in str(step.get("run", "")).splitlines()
            if line.strip().startswith("muster check")
        ]
        assert lines, f"{example.where}: a workflow without muster check"
        for line in lines:
            argv = shlex.split(line.split(">")[0])[1:]
            args = cli.build_parser().parse_args(argv)  # the real command line
            assert args.files


@pytest.fixture(scope="module")
def crds_installed(control_plane: controlplane.ControlPlane) -> controlplane.ControlPlane:
    localoperator.install_crds(control_plane)
    return control_plane


@pytest.mark.parametrize("doc", documented())
def test_custom_resources_in_examples_pass_the_apiserver_schema(
    doc: str, crds_installed: controlplane.ControlPlane
) -> None:
    for example in examples(doc):
        objects = [
            d
            for d in yaml.safe_load_all(example.body)
            if isinstance(d, dict) and str(d.get("apiVersion", "")).startswith("muster.dev/")
        ]
        for obj in objects:
            result = controlplane.kubectl(
                crds_installed,
                "apply",
                "--dry-run=server",
                "-f",
                "-",
                check=False,
                input_=yaml.safe_dump(obj),
            )
            assert result.returncode == 0, f"{example.where}: {obj['kind']}: {result.stderr}"


@pytest.fixture(scope="module")
def chart_crds_installed(crds_installed: controlplane.ControlPlane) -> controlplane.ControlPlane:
    """The chart's CRDs as the docs install them (kopf's peering CRD too, which ``muster run``
    without --peering ignores), so that deleting them can be dry-run."""
    controlplane.kubectl(crds_installed, "apply", "-f", str(docblocks.ROOT / "charts/muster/crds"))
    return crds_installed


def _ensure_namespace(plane: controlplane.ControlPlane, name: str) -> None:
    found = controlplane.kubectl(plane, "get", "namespace", name, check=False)
    if found.returncode != 0:
        controlplane.kubectl(plane, "create", "namespace", name)


@pytest.mark.parametrize(
    "doc", [d for d in documented() if any(b.kind == "cluster" for b in blocks(d))]
)
def test_kubectl_and_helm_commands_run_against_a_real_cluster(
    doc: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chart_crds_installed: controlplane.ControlPlane,
) -> None:
    plane = chart_crds_installed
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    for folder in ("charts", "manifests"):
        (tmp_path / folder).symlink_to(docblocks.ROOT / folder)
    root = paths.fixture(
        "sigstore", "sigstore-python", "embedded-trust", "prod", "trusted_root.json"
    )
    shutil.copy(root, tmp_path / "trusted_root.json")
    for block in blocks(doc):
        if block.kind != "cluster":
            continue
        expected = int(block.info.get("exit", "0"))
        for argv in _commands(block, ("kubectl", "helm")):
            if argv[0] == "helm":
                result = peers.run_tool(
                    "helm", *docblocks.helm_args(argv, rendering.KUBE_VERSION), check=False
                )
            else:
                for namespace in docblocks.namespaces_named(argv):
                    _ensure_namespace(plane, namespace)
                result = controlplane.kubectl(plane, *docblocks.kubectl_args(argv), check=False)
            assert result.returncode == expected, (
                f"{block.where}: {shlex.join(argv)} -> {result.returncode}\n{result.stderr}"
            )


# ``sh peers`` blocks: each page's peers, made for real, and what its placeholders become.


@dataclasses.dataclass
class Peers:
    replacements: dict[str, str]
    registry: str | None = None
    says: str = ""  # what the page says the (last) command prints
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # then run as a process


def _model_peers(folder: Path, registry: peers.Registry, plane: controlplane.ControlPlane) -> Peers:
    """A small model signed with model_signing (the reference implementation of OMS) and a
    fresh key, ``model.sig`` beside it, and the model pushed as an image."""
    model = folder / "llama-3-8b"
    model.mkdir()
    weights = paths.fixture("models", "safetensors", "mlverse-safetensors", "hello.safetensors")
    shutil.copy(weights, model / "model.safetensors")
    (model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / "signer.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "signer.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = model_signing.signing.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_signer(private_key=folder / "signer.key").sign(
        model, folder / "model.sig"
    )
    envelope = json.loads((folder / "model.sig").read_text())["dsseEnvelope"]
    (subject,) = json.loads(base64.b64decode(envelope["payload"]))["subject"]
    # The same model signed with another of model_signing's hashing choices (BLAKE3).
    blake3 = model_signing.signing.Config()  # type: ignore[no-untyped-call]
    blake3.use_elliptic_key_signer(private_key=folder / "signer.key").set_hashing_config(
        model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake3")
    ).sign(model, folder / "model-blake3.sig")
    image = peers.push_image(
        registry,
        "docs-peers/models/llama-3-8b",
        "v1",
        files={"model.safetensors": weights.read_bytes()},
        workdir=folder,
    )
    _model_provenance_peers(folder, f"sha256:{subject['digest']['sha256']}")
    return Peers(
        {
            "registry.example": f"{registry.host}/docs-peers",
            "sha256:<digest>": image,
            "/models/<volume>": str(model),
            "<oms-digest>": f"sha256:{subject['digest']['sha256']}",
        }
    )


def _model_provenance_peers(folder: Path, digest: str) -> None:
    """The provenance example: SLSA provenance over the model's OMS digest by the real cosign
    (attest-blob) with a training CI key, beside the model and inside the page's Model."""
    key, public = attesting.generate_key(folder, "training-ci")
    bundle = modelprovenance.attest(key, digest, folder, name="llama-3-8b")
    (folder / "provenance.sigstore.json").write_text(bundle)
    example = folder / "examples/attested-model.yaml"
    policy, model = yaml.safe_load_all(example.read_text())
    (authority,) = model["spec"]["provenance"]["authorities"]
    assert authority["key"]["data"].splitlines()[1].strip() == "...", "the example changed"
    authority["key"]["data"] = public.read_text()
    model["spec"]["provenance"]["bundle"] = bundle
    model["spec"]["digest"] = digest
    example.write_text(yaml.safe_dump_all([policy, model]))


def _check_model_peers(folder: Path, found: Peers, plane: controlplane.ControlPlane) -> None:
    """``register ... > model.yaml`` wrote the Model that ``kubectl apply`` accepts."""
    manifest = yaml.safe_load((folder / "model.yaml").read_text())
    assert manifest["kind"] == "Model"
    assert manifest["metadata"]["name"] == "llama-3-8b"
    assert manifest["spec"]["digest"] == found.replacements["<oms-digest>"]
    assert manifest["spec"]["signature"]["publicKey"] == (folder / "signer.pub").read_text()
    assert manifest["spec"]["source"] == "hf://meta-llama/Meta-Llama-3-8B@8cde5ca"
    reference = f"{found.replacements['registry.example']}/models/llama-3-8b@"
    assert manifest["spec"]["ociReference"] == reference + found.replacements["sha256:<digest>"]
    applied = controlplane.kubectl(
        plane, "apply", "--dry-run=server", "-f", str(folder / "model.yaml"), check=False
    )
    assert applied.returncode == 0, applied.stderr


def _image_peers(folder: Path, registry: peers.Registry, plane: controlplane.ControlPlane) -> Peers:
    """The page's own ImagePolicy example, its placeholder key replaced by a cosign key that
    signed ``acme/trainer:v1`` (cosign v3) in the test registry."""
    prefix = folder / "release"
    cosign = {"COSIGN_PASSWORD": ""}
    peers.run_tool("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=cosign)
    host = f"{registry.host}/docs-peers"
    digest = peers.push_image(registry, "docs-peers/acme/trainer", "v1", workdir=folder)
    peers.run_tool(
        "cosign", "sign", f"--key={prefix}.key", "--tlog-upload=false",
        "--use-signing-config=false", "--allow-http-registry", "-y",
        f"{host}/acme/trainer@{digest}", env=cosign,
    )  # fmt: skip
    example = folder / "examples/acme-imagepolicy.yaml"
    policy = yaml.safe_load(example.read_text().replace("ghcr.io", host))
    (release,) = [a for a in policy["spec"]["authorities"] if a["name"] == "release-key"]
    assert release["key"]["data"].splitlines()[1].strip() == "...", "the example's key changed"
    release["key"]["data"] = Path(f"{prefix}.pub").read_text()
    example.write_text(yaml.safe_dump(policy))
    trusted = paths.fixture("sigstore", "sigstore-python", "embedded-trust", "prod")
    shutil.copy(trusted / "trusted_root.json", folder / "trusted_root.json")
    _attested_peers(folder, host, digest, Path(f"{prefix}.pub"))
    _notation_peers(folder, host, digest)
    return Peers(
        {"ghcr.io": host},
        registry=registry.host,
        says="ImagePolicy 'acme': signed by 1 of 1 required authorities",
    )


def _attested_peers(folder: Path, host: str, digest: str, release: Path) -> None:
    """The attestation example: ``acme/trainer:v1`` attested by a CI key with the real cosign,
    SLSA provenance by v2 (``.att``) and a CycloneDX SBOM by v3 (a bundle)."""
    ci_key, ci_pub = attesting.generate_key(folder, "ci")
    pinned = f"{host}/acme/trainer@{digest}"
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    builder = "https://github.com/acme/trainer/.github/workflows/release.yml@refs/heads/main"
    provenance = attesting.slsa_v1(builder=builder, started=started)
    attesting.attest_v2(ci_key, pinned, "slsaprovenance1", provenance, folder)
    attesting.attest_v3(ci_key, pinned, "cyclonedx", attesting.cyclonedx(), folder)
    example = folder / "examples/attested-imagepolicy.yaml"
    policy = yaml.safe_load(example.read_text().replace("ghcr.io", host))
    (key,) = policy["spec"]["authorities"]
    key["key"]["data"] = release.read_text()
    for attestation in policy["spec"]["attestations"]:
        (signer,) = attestation["authorities"]
        assert signer["key"]["data"].splitlines()[1].strip() == "...", "the example changed"
        signer["key"]["data"] = ci_pub.read_text()
    example.write_text(yaml.safe_dump(policy))


def _notation_peers(folder: Path, host: str, digest: str) -> None:
    """The Notation example: ``acme/trainer:v1`` signed by the Notary Project's libraries
    (``tools/notationsign``) with a certificate ``C=US,ST=WA,O=Acme,CN=release`` of a test CA,
    pushed as a referrer (this registry has no referrers API: through the ``sha256-<hex>`` tag,
    as notation does); the CA is the example's ConfigMap and ``release-ca.crt``, and the
    example's pod runs that image."""
    ca = notary.ca("C=US,ST=WA,O=Acme,CN=Acme Release Root")
    signer = notary.signer(ca, "C=US,ST=WA,O=Acme,CN=release")
    notary.sign(signer, folder, reference=f"{host}/acme/trainer@{digest}")
    certificate = notary.pem(ca.certificate).decode()
    (folder / "release-ca.crt").write_text(certificate)
    stored = folder / "examples/release-ca.yaml"
    store = yaml.safe_load(stored.read_text())
    assert store["data"]["ca.crt"].splitlines()[1].strip() == "...", "the example changed"
    store["data"]["ca.crt"] = certificate
    stored.write_text(yaml.safe_dump(store))
    for name in ("notation-imagepolicy.yaml", "trainer-pod.yaml"):
        example = folder / "examples" / name
        example.write_text(example.read_text().replace("ghcr.io", host))


def _gpu_peers(folder: Path, registry: peers.Registry, plane: controlplane.ControlPlane) -> Peers:
    """The real CUDA 12.4.1 image env, the real labels of an H100 node (driver 550.54.15) and
    Muster's default GPUStackPolicy, on which R550 is end of life: so exit 1."""
    recipes = yaml.safe_load(paths.fixture("gpu", "cuda-images", "cuda-image-env.yaml").read_text())
    (recipe,) = [
        e
        for e in recipes["entries"]
        if e["tag"] == "12.4.1-base-ubuntu22.04" and e["docker_arch"] == "amd64"
    ]
    env = {"CUDA_VERSION": "12.4.1", "NVIDIA_REQUIRE_CUDA": recipe["NVIDIA_REQUIRE_CUDA"]}
    digest = peers.push_image(registry, "docs-peers/team/trainer", "v1", env=env, workdir=folder)
    labels = json.loads(
        paths.fixture(
            "gpu", "gfd-labels", "gpu-operator-H100-mig-single-node-labels.json"
        ).read_text()
    )
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-h100", "labels": labels}}
    (folder / "node.yaml").write_text(yaml.safe_dump(node))
    shutil.copy(
        docblocks.ROOT / "charts/muster/files/default-gpustackpolicy.yaml", folder / "policy.yaml"
    )
    return Peers(
        {"registry.example": f"{registry.host}/docs-peers", "sha256:<digest>": digest},
        registry=registry.host,
        says="driver 550.54.15 is on branch R550, which is end of life",
    )


def _bom_peers(folder: Path, registry: peers.Registry, plane: controlplane.ControlPlane) -> Peers:
    """A Deployment's ReplicaSet ``trainer-7d9f`` in namespace ml, the pod the ReplicaSet
    controller made for it (there is no kubelet, so it never runs), and the WorkloadBOM the
    operator keeps for the Deployment. The lines without --kubeconfig use $KUBECONFIG."""
    _ensure_namespace(plane, "ml")
    labels = {"app": "trainer", "pod-template-hash": "7d9f"}
    replicaset = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "trainer-7d9f", "namespace": "ml"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "trainer", "image": BOM_IMAGE}]},
            },
        },
    }
    controlplane.kubectl(plane, "apply", "-f", "-", input_=yaml.safe_dump(replicaset))
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "components": [
            {
                "type": "container",
                "bom-ref": f"image:{BOM_IMAGE}",
                "name": BOM_IMAGE.split("@")[0],
                "version": BOM_IMAGE.split("@")[1],
            }
        ],
    }
    text = json.dumps(document)
    stored = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "WorkloadBOM",
        "metadata": {"name": "deployment-trainer", "namespace": "ml"},
        "spec": {
            "kind": "Deployment",
            "name": "trainer",
            "contentSha256": hashlib.sha256(text.encode()).hexdigest(),
            "document": text,
        },
    }
    controlplane.kubectl(plane, "apply", "-f", "-", input_=yaml.safe_dump(stored))
    pod = ""
    deadline = time.monotonic() + 30
    while not pod and time.monotonic() < deadline:
        names = controlplane.kubectl(
            plane, "-n", "ml", "get", "pods", "-l", "app=trainer", "-o", "name"
        ).stdout.split()
        pod = names[0].removeprefix("pod/") if names else ""
        time.sleep(0 if pod else 0.2)
    assert pod.startswith("trainer-7d9f-"), "the ReplicaSet controller made no pod"
    return Peers(
        {"trainer-7d9f-abcde": pod, "~/.kube/prod": str(plane.kubeconfig)},
        env={"KUBECONFIG": str(plane.kubeconfig)},
    )


BOM_IMAGE = f"ghcr.io/acme/trainer@sha256:{'b3' * 32}"


def _check_bom_peers(folder: Path, found: Peers, plane: controlplane.ControlPlane) -> None:
    """``-o FILE`` wrote valid CycloneDX 1.6 that holds the stored component."""
    for name in ("bom.json", "cluster-bom.json"):
        bom = json.loads((folder / name).read_text())
        assert schema_errors(bom) is None, name
        assert BOM_IMAGE.split("@")[1] in {c.get("version") for c in bom["components"]}


def _dataset_peers(
    folder: Path, registry: peers.Registry, plane: controlplane.ControlPlane
) -> Peers:
    """datasets.md: a small corpus signed with model_signing and a fresh key, ``model.sig``
    beside it, as the page says a data team signs it."""
    corpus = datasetfiles.make_dataset(folder / "chat-corpus")
    datasetfiles.key_pair(folder, "signer")
    datasetfiles.sign(corpus, folder / "model.sig", folder / "signer.key")
    return Peers(replacements={})


def _check_dataset_peers(folder: Path, found: Peers, plane: controlplane.ControlPlane) -> None:
    """``register ... > dataset.yaml`` wrote the Dataset that ``kubectl apply`` accepts."""
    manifest = yaml.safe_load((folder / "dataset.yaml").read_text())
    assert manifest["kind"] == "Dataset"
    assert manifest["metadata"]["name"] == "chat-instructions"
    spec = manifest["spec"]
    envelope = json.loads((folder / "model.sig").read_text())["dsseEnvelope"]
    (subject,) = json.loads(base64.b64decode(envelope["payload"]))["subject"]
    assert spec["digest"] == "sha256:" + subject["digest"]["sha256"]  # the digest signed
    assert spec["signature"]["publicKey"] == (folder / "signer.pub").read_text()
    assert spec["sources"] == ["hf://datasets/acme/chat-instructions@0123abc"]
    assert spec["license"] == "Apache-2.0 AND CC-BY-4.0"
    assert spec["lineage"]["parents"] == ["web-crawl-2024"]
    applied = controlplane.kubectl(
        plane, "apply", "--dry-run=server", "-f", str(folder / "dataset.yaml"), check=False
    )
    assert applied.returncode == 0, applied.stderr


PEERS: dict[str, Callable[[Path, peers.Registry, controlplane.ControlPlane], Peers]] = {
    "docs/models.md": _model_peers,
    "docs/images.md": _image_peers,
    "docs/gpu-stack.md": _gpu_peers,
    "docs/bom.md": _bom_peers,
    "docs/datasets.md": _dataset_peers,
}
AFTERWARDS: dict[str, Callable[[Path, Peers, controlplane.ControlPlane], None]] = {
    "docs/models.md": _check_model_peers,
    "docs/bom.md": _check_bom_peers,
    "docs/datasets.md": _check_dataset_peers,
}


def test_every_page_with_peers_blocks_has_its_peers() -> None:
    pages = {doc for doc in documented() if any(b.kind == "peers" for b in blocks(doc))}
    assert pages == set(PEERS)


@pytest.mark.parametrize("doc", sorted(PEERS))
def test_muster_commands_run_against_real_peers(
    doc: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registry: peers.Registry,
    crds_installed: controlplane.ControlPlane,
) -> None:
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    found = PEERS[doc](tmp_path, registry, crds_installed)
    ran = 0
    for block in blocks(doc):
        if block.kind != "peers":
            continue
        expected = int(block.info.get("exit", "0"))
        for argv, target in docblocks.commands(block):
            assert argv[0] == "muster", f"{block.where}: a peers block runs muster: {argv}"
            real = docblocks.substitute(argv, found.replacements, found.registry)
            unreplaced = [word for word in real if "<" in word or "registry.example" in word]
            assert unreplaced == [], f"{block.where}: placeholders left: {unreplaced}"
            if found.env:  # the kubernetes client reads $KUBECONFIG once, at import
                done = subprocess.run(
                    [sys.executable, "-m", "muster", *real[1:]],
                    capture_output=True,
                    text=True,
                    env={**os.environ, **found.env},
                    timeout=60,
                    check=False,
                )
                code, output, err = done.returncode, done.stdout, done.stderr
            else:
                code, output, err = run_muster(real[1:])
            assert code == expected, f"{block.where}: {shlex.join(real)} -> {code}\n{output}{err}"
            if target is not None:
                (tmp_path / target).write_text(output)
            ran += 1
    assert ran > 0
    assert found.says in " ".join(output.split()), f"{doc}: {found.says!r} not in {output}"
    if doc in AFTERWARDS:
        AFTERWARDS[doc](tmp_path, found, crds_installed)


# ``text real=tests/integration/test_docs.py`` blocks: denial messages, each produced by
# ``muster check`` (the same admission pipeline and gates as ``muster run``) from the situation
# the page describes, made for real. ``registry.example`` and ``ghcr.io`` stand for a folder of
# the test registry. A block that starts the way kubectl prints a denial must start exactly as
# the README's, which tests/e2e/test_dev.py compares with kubectl's real output.


def _namespace(name: str, **labels: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _pod(name: str, namespace: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _cosign_key(folder: Path, name: str) -> Path:
    prefix = folder / name
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env={"COSIGN_PASSWORD": ""}
    )
    return prefix


def _unsigned_denial(folder: Path, registry: peers.Registry) -> tuple[list[object], str]:
    """troubleshooting.md: an unsigned image under an ImagePolicy ``release``."""
    host = f"{registry.host}/docs-troubleshooting"
    peers.push_image(registry, "docs-troubleshooting/app", "v1", workdir=folder)
    key = Path(f"{_cosign_key(folder, 'release')}.pub").read_text()
    policy = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "release"},
        "spec": {
            "images": [f"{host}/**"],
            "authorities": [{"name": "release", "key": {"data": key}}],
        },
    }
    pod = _pod("app", "ml-team", containers=[{"name": "main", "image": f"{host}/app:v1"}])
    return [_namespace("ml-team", **{"muster.dev/enforce": "true"}), policy, pod], host


def _untrusted_denial(folder: Path, registry: peers.Registry) -> tuple[list[object], str]:
    """images.md: the page's ImagePolicy ``acme``; the image carries a legacy (cosign v2)
    signature by a key that is not the policy's ``release-key``."""
    host = f"{registry.host}/docs-images"
    digest = peers.push_image(registry, "docs-images/acme/trainer", "v1", workdir=folder)
    other = _cosign_key(folder, "other")
    peers.run_tool(
        "cosign2", "sign", f"--key={other}.key", "--tlog-upload=false", "--allow-http-registry",
        "-y", f"{host}/acme/trainer@{digest}", env={"COSIGN_PASSWORD": ""},
    )  # fmt: skip
    policy = yaml.safe_load((folder / "examples/acme-imagepolicy.yaml").read_text())
    policy["spec"]["images"] = [f"{host}/acme/**"]
    (release,) = [a for a in policy["spec"]["authorities"] if a["name"] == "release-key"]
    release["key"]["data"] = Path(f"{_cosign_key(folder, 'release')}.pub").read_text()
    trusted = paths.fixture("sigstore", "sigstore-python", "embedded-trust", "prod")
    root = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "trusted-root", "namespace": "sigstore"},
        "data": {"trusted_root.json": (trusted / "trusted_root.json").read_text()},
    }
    namespace = _namespace("ml", team="ml", **{"muster.dev/enforce": "true"})
    pod = _pod(
        "trainer", "ml", containers=[{"name": "trainer", "image": f"{host}/acme/trainer:v1"}]
    )
    return [namespace, root, policy, pod], host


def _model_denial(folder: Path, registry: peers.Registry) -> tuple[list[object], str]:
    """models.md: the page's ModelPolicy ``ml-teams``; an image volume no Model names. Its
    images are let in by name (a static pass): what is shown is the model gate's denial."""
    host = f"{registry.host}/docs-models"
    digest = peers.push_image(registry, "docs-models/models/llm", "v1", workdir=folder)
    (policy,) = yaml.safe_load_all((folder / "examples/ml-teams-modelpolicy.yaml").read_text())
    namespace = _namespace("ml", team="ml", **{"muster.dev/enforce": "true"})
    pod = _pod(
        "serve",
        "ml",
        containers=[
            {
                "name": "server",
                "image": f"{host}/server@{digest}",
                "volumeMounts": [{"name": "weights", "mountPath": "/models"}],
            }
        ],
        volumes=[{"name": "weights", "image": {"reference": f"{host}/models/llm@{digest}"}}],
    )
    images = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "docs-models"},
        "spec": {"images": [f"{host}/**"], "authorities": [{"static": {"action": "pass"}}]},
    }
    return [namespace, policy, images, pod], host


def _dataset_denial(folder: Path, registry: peers.Registry) -> tuple[list[object], str]:
    """datasets.md: the page's DatasetPolicy ``ml-data`` and its research-only Dataset, mounted
    through a volume the pod declares as that Dataset. Its image is let in by name (a static
    pass): what is shown is the dataset gate's denial."""
    host = f"{registry.host}/docs-datasets"
    digest = peers.push_image(registry, "docs-datasets/trainer", "v1", workdir=folder)
    (policy,) = yaml.safe_load_all((folder / "examples/ml-datasetpolicy.yaml").read_text())
    datasets = list(yaml.safe_load_all((folder / "examples/web-crawl-dataset.yaml").read_text()))
    namespace = _namespace("ml", team="ml", **{"muster.dev/enforce": "true"})
    pod = _pod(
        "train",
        "ml",
        containers=[
            {
                "name": "trainer",
                "image": f"{host}/trainer@{digest}",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
        volumes=[{"name": "data", "hostPath": {"path": "/srv/research-only"}}],
    )
    pod["metadata"]["annotations"] = {"muster.dev/dataset-volumes": '{"data": "research-only"}'}  # type: ignore[index]
    images = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ImagePolicy",
        "metadata": {"name": "docs-datasets"},
        "spec": {"images": [f"{host}/**"], "authorities": [{"static": {"action": "pass"}}]},
    }
    return [namespace, policy, *datasets, images, pod], host


DENIALS: dict[str, Callable[[Path, peers.Registry], tuple[list[object], str]]] = {
    "docs/troubleshooting.md": _unsigned_denial,
    "docs/images.md": _untrusted_denial,
    "docs/models.md": _model_denial,
    "docs/datasets.md": _dataset_denial,
}
KUBECTL_DENIAL = "Error from server: admission webhook"


def test_every_denial_block_has_its_situation() -> None:
    documented_ = {b.doc for b in docblocks.named("real", "tests/integration/test_docs.py")}
    assert documented_ == set(DENIALS)


@pytest.mark.parametrize("doc", sorted(DENIALS))
def test_documented_denials_are_what_admission_says(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: peers.Registry
) -> None:
    write_examples(doc, tmp_path)
    monkeypatch.chdir(tmp_path)
    objects, host = DENIALS[doc](tmp_path, registry)
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(yaml.safe_dump_all(objects))
    code, out, err = run_muster(["check", "--insecure-registry", registry.host, str(manifests)])
    assert code == 1, out + err
    (block,) = [
        b
        for b in blocks(doc)
        if b.kind == "real" and b.info["real"] == "tests/integration/test_docs.py"
    ]
    body = block.body
    if body.startswith(KUBECTL_DENIAL):
        (readme,) = docblocks.named("real", "tests/e2e/test_dev.py")
        prefix = readme.body[: readme.body.index("muster:")]
        assert body[: body.index("muster:")].split() == prefix.split(), block.where
        body = body[body.index("muster:") :]
    stand_ins = {"registry.example": host, "ghcr.io": host}
    message = dataclasses.replace(block, body=body)
    assert docblocks.matches(message, out, stand_ins) == ""

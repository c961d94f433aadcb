"""``muster dev up --demo``: a guided tour of the gates on the local control plane.

It starts a local registry, pushes demo images (signed with a fresh cosign key, unsigned, and a
CUDA image carrying NVIDIA's real ``NVIDIA_REQUIRE_CUDA``), starts ``muster run`` trusting that
registry, loads demo policies (including Datasets with licences and lineage), creates GPU nodes
with real GPU Feature Discovery labels, then walks through ``kubectl apply`` attempts that each
gate admits, pins, steers or denies, and revokes a Dataset to show what that does to a Model
trained on data derived from it.
Everything it starts is recorded in the dev state, so ``muster dev down`` stops it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from muster.datasets.rules import registry as datasetregistry
from muster.gpu.rules import policies as gpupolicies
from muster.gpu.rules import stack as gpustack
from muster.kernel import scopes
from muster.models.rules import registry as modelregistry
from muster.platform import controlplane, localregistry, tools

from . import common

__all__ = ["Attempt", "DemoImages", "prepare", "tour"]

NAMESPACE = "demo"
MODEL_DIGEST = "sha256:" + "5e" * 32  # the demo Model's OMS digest (no weights are needed)
TUNED_DIGEST = "sha256:" + "6e" * 32  # a Model fine-tuned on the demo's instruction data
# The demo's Datasets: a crawl, the instructions derived from it, and a research-only corpus.
CRAWL, INSTRUCTIONS, RESEARCH = "web-crawl-2024", "chat-instructions", "research-only"
Progress = Callable[[str], None]
_COSIGN_ENV = {"COSIGN_PASSWORD": ""}  # the demo key has no password; it never leaves the dir


def _data(name: str) -> str:
    return resources.files("muster").joinpath("demo", name).read_text()


@dataclasses.dataclass(frozen=True)
class DemoImages:
    registry: str
    signed: str  # by tag: admission pins it
    unsigned: str
    cuda: str
    verifier: str  # by digest: the model verifier init container
    public_key: str


def _run(tool: str, *args: str, env: Mapping[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            [str(tools.find(tool)), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=120,
            check=False,
        )
    except tools.ToolMissing as error:
        raise common.CommandError(str(error)) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise common.CommandError(f"{tool} {args[0]} failed: {last}")
    return result.stdout.strip()


def _layer(files: Mapping[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _push(workdir: Path, ref: str, env: Mapping[str, str] | None = None) -> str:
    """A one-layer image built and pushed with crane (no Docker engine); returns its digest."""
    layer = workdir / f"layer-{ref.rsplit('/', 1)[-1].replace(':', '-')}.tar"
    layer.write_bytes(_layer({"README": f"muster demo image {ref}\n".encode()}))
    _run("crane", "append", "--insecure", "--platform=linux/amd64", f"--new_layer={layer}",
         f"--new_tag={ref}")  # fmt: skip
    if env:
        _run("crane", "mutate", "--insecure", *(f"--env={k}={v}" for k, v in env.items()),
             f"--tag={ref}", ref)  # fmt: skip
    return _run("crane", "digest", "--insecure", ref)


def _sign(key: Path, ref: str) -> None:
    """cosign v3, offline: a Sigstore bundle stored beside the image, no transparency log."""
    _run("cosign", "sign", f"--key={key}", "--tlog-upload=false", "--use-signing-config=false",
         "--allow-http-registry", "-y", ref, env=_COSIGN_ENV)  # fmt: skip


def prepare(workdir: Path, registry: localregistry.LocalRegistry, progress: Progress) -> DemoImages:
    """Key pair, images and signatures, before ``muster run`` starts (it needs the verifier)."""
    workdir.mkdir(parents=True, exist_ok=True)
    progress("generating a demo cosign key pair")
    prefix = workdir / "demo-cosign"
    _run("cosign", "generate-key-pair", f"--output-key-prefix={prefix}", env=_COSIGN_ENV)
    key = Path(f"{prefix}.key")
    cuda = yaml.safe_load(_data("cuda-image.yaml"))
    host = registry.host
    progress(f"pushing demo images to the local registry {host}")
    signed = _push(workdir, f"{host}/demo/app:v1")
    _push(workdir, f"{host}/demo/unsigned:v1")
    cuda_digest = _push(workdir, f"{host}/demo/cuda:{cuda['tag']}", env=cuda["env"])
    verifier = _push(workdir, f"{host}/demo/model-verifier:v1")
    progress("signing demo/app, demo/cuda and demo/model-verifier with the demo key (cosign)")
    for ref in (
        f"{host}/demo/app@{signed}",
        f"{host}/demo/cuda@{cuda_digest}",
        f"{host}/demo/model-verifier@{verifier}",
    ):
        _sign(key, ref)
    return DemoImages(
        registry=host,
        signed=f"{host}/demo/app:v1",
        unsigned=f"{host}/demo/unsigned:v1",
        cuda=f"{host}/demo/cuda:{cuda['tag']}",
        verifier=f"{host}/demo/model-verifier@{verifier}",
        public_key=Path(f"{prefix}.pub").read_text(),
    )


# ---------------------------------------------------------------------------------------------
# Policies and nodes


def policies(images: DemoImages) -> list[dict[str, Any]]:
    group = "muster.dev/v1alpha1"
    gpu = copy.deepcopy(gpupolicies.DEFAULT_POLICY)
    # The demo nodes have no node agent, so no attestation: the toolkit rules (which need one)
    # are left out, and driver branches R450/R470 are declared end of life.
    gpu.pop("minimumToolkitVersion", None)
    gpu.pop("deniedToolkitVersions", None)
    gpu["endOfLifeBranches"] = [
        {"branch": 450, "source": "demo: R450 reached end of life"},
        {"branch": 470, "source": "demo: R470 reached end of life"},
    ]
    return [
        {
            "apiVersion": group,
            "kind": "ImagePolicy",
            "metadata": {"name": "demo-signed"},
            "spec": {
                "images": [f"{images.registry}/**"],
                "mode": "enforce",
                "pinDigests": True,
                "authorities": [{"name": "demo-key", "key": {"data": images.public_key}}],
            },
        },
        {"apiVersion": group, "kind": "GPUStackPolicy", "metadata": {"name": "demo"}, "spec": gpu},
        {
            "apiVersion": group,
            "kind": "Model",
            "metadata": {"name": "llama-demo"},
            "spec": {
                "digest": MODEL_DIGEST,
                "format": "safetensors",
                "license": "LicenseRef-llama3",
            },
        },
        {
            "apiVersion": group,
            "kind": "Model",
            "metadata": {"name": "tuned-demo"},
            "spec": {
                "digest": TUNED_DIGEST,
                "format": "safetensors",
                "license": "Apache-2.0",
                "datasets": [{"name": INSTRUCTIONS}],
            },
        },
        *datasets(),
        {
            "apiVersion": group,
            "kind": "ModelPolicy",
            "metadata": {"name": "demo"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "mode": "enforce",
                "requireSignature": False,
                # every training Dataset must be registered and approved
                "requireApprovedDatasets": True,
                # every volume that may hold weights or data must be a Model or a Dataset
                "volumes": "declaredOnly",
            },
        },
        {
            "apiVersion": group,
            "kind": "DatasetPolicy",
            "metadata": {"name": "demo"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "mode": "enforce",
                "licenses": {"deny": ["CC-BY-NC-*"]},
            },
        },
        *(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": claim,
                    "namespace": NAMESPACE,
                    "labels": {key: name},
                },
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            for claim, key, name in (
                ("llama-weights", modelregistry.MODEL_PVC_KEY, "llama-demo"),
                ("mystery-weights", modelregistry.MODEL_PVC_KEY, "mystery"),
                ("tuned-weights", modelregistry.MODEL_PVC_KEY, "tuned-demo"),
                ("research-data", datasetregistry.DATASET_PVC_KEY, RESEARCH),
            )
        ),
    ]


def datasets(*, crawl_revoked: bool = False) -> list[dict[str, Any]]:
    """The demo's Datasets (no data is needed: admission judges what they declare). The tour
    revokes the crawl later, with ``crawl_revoked``."""
    crawl: dict[str, Any] = {"digest": "sha256:" + "7a" * 32, "license": "CC-BY-4.0"}
    if crawl_revoked:
        crawl |= {"revoked": True, "revocationReason": "poisoned samples found (demo)"}
    specs: dict[str, dict[str, Any]] = {
        CRAWL: crawl,
        INSTRUCTIONS: {
            "digest": "sha256:" + "7b" * 32,
            "license": "Apache-2.0",
            "lineage": {
                "parents": [CRAWL],
                "transformation": {"description": "instructions mined from the crawl"},
            },
        },
        RESEARCH: {"digest": "sha256:" + "7c" * 32, "license": "Apache-2.0 AND CC-BY-NC-4.0"},
    }
    return [
        {
            "apiVersion": "muster.dev/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": name},
            "spec": spec,
        }
        for name, spec in specs.items()
    ]


def gpu_nodes() -> list[dict[str, Any]]:
    return [node for node in yaml.safe_load_all(_data("gpu-nodes.yaml")) if node]


# ---------------------------------------------------------------------------------------------
# The walkthrough


@dataclasses.dataclass
class Attempt:
    name: str
    story: str
    expect: str  # "admitted" | "denied"
    manifest: dict[str, Any]
    show: str = ""  # a jsonpath to print from the created pod
    # For an object that is not a pod: a jsonpath of it that must become non-empty (the operator
    # has seen the change) before the tour goes on.
    settle: str = ""
    outcome: str = ""
    output: str = ""
    shown: str = ""

    @property
    def as_expected(self) -> bool:
        return self.outcome == self.expect


def _pod(name: str, image: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"containers": [container], **spec},
    }


def attempts(images: DemoImages) -> list[Attempt]:
    gpu = {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    mount = {"volumeMounts": [{"name": "weights", "mountPath": "/models", "readOnly": True}]}

    def weights(claim: str) -> list[dict[str, Any]]:
        return [{"name": "weights", "persistentVolumeClaim": {"claimName": claim}}]

    return [
        Attempt(
            "unsigned",
            "images: an image nobody signed",
            "denied",
            _pod("unsigned", images.unsigned),
        ),
        Attempt(
            "signed",
            "images: the signed image, by tag; admission pins it by digest",
            "admitted",
            _pod("signed", images.signed),
            show="{.spec.containers[0].image}",
        ),
        Attempt(
            "cuda-steered",
            "GPU stack: a CUDA 12.4 pod; admission steers it off GPU nodes judged bad",
            "admitted",
            _pod("cuda-steered", images.cuda, container=gpu),
            show="{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution}",
        ),
        Attempt(
            "cuda-on-a100",
            "GPU stack: the same pod placed by hand on the A100 with an end-of-life driver",
            "denied",
            _pod("cuda-on-a100", images.cuda, container=gpu, nodeName="gpu-a100"),
        ),
        Attempt(
            "mystery-model",
            "models: a pod mounting weights that are not an approved Model",
            "denied",
            _pod(
                "mystery-model", images.signed, container=mount, volumes=weights("mystery-weights")
            ),
        ),
        Attempt(
            "approved-model",
            "models: a pod mounting the approved Model; a verifier init container is added",
            "admitted",
            _pod(
                "approved-model", images.signed, container=mount, volumes=weights("llama-weights")
            ),
            show="{.spec.initContainers[*].name}",
        ),
        Attempt(
            "research-data",
            "datasets: a pod mounting a research-only dataset; the namespace denies CC-BY-NC-*",
            "denied",
            _pod(
                "research-data",
                images.signed,
                container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "research-data"}}],
            ),
        ),
        Attempt(
            "unseen-weights",
            "models: weights on a hostPath, declared as neither a Model nor a Dataset",
            "denied",
            _pod(
                "unseen-weights",
                images.signed,
                container=mount,
                volumes=[{"name": "weights", "hostPath": {"path": "/srv/weights"}}],
            ),
        ),
        Attempt(
            f"revoke-{CRAWL}",
            f"datasets: the data team revokes {CRAWL}, which {INSTRUCTIONS} was derived from",
            "admitted",
            next(d for d in datasets(crawl_revoked=True) if d["metadata"]["name"] == CRAWL),
            settle=f"dataset/{INSTRUCTIONS}:{{.status.revokedThrough}}",
        ),
        Attempt(
            "tuned-model",
            f"models: a Model fine-tuned on {INSTRUCTIONS}, whose lineage is now revoked",
            "denied",
            _pod("tuned-model", images.signed, container=mount, volumes=weights("tuned-weights")),
        ),
    ]


def _apply(plane: controlplane.ControlPlane, manifest: Mapping[str, Any]) -> tuple[bool, str]:
    result = controlplane.kubectl(
        plane, "apply", "-f", "-", check=False, input_=yaml.safe_dump(dict(manifest))
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip()


def _wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise common.CommandError(f"the demo timed out waiting for {what}")
        time.sleep(0.3)


def _node_state(plane: controlplane.ControlPlane, name: str) -> str:
    path = "{.metadata.labels." + gpustack.STATE_LABEL.replace(".", "\\.") + "}"
    result = controlplane.kubectl(plane, "get", "node", name, "-o", f"jsonpath={path}", check=False)
    return result.stdout.strip()


def setup(plane: controlplane.ControlPlane, images: DemoImages, progress: Progress) -> None:
    progress(
        "loading demo policies: ImagePolicy, GPUStackPolicy, Models, Datasets, ModelPolicy, "
        "DatasetPolicy"
    )
    for obj in policies(images):
        ok, output = _apply(plane, obj)
        if not ok:
            raise common.CommandError(f"cannot create {obj['kind']}: {output}")
    progress("creating GPU nodes gpu-h100 and gpu-a100 with real GPU Feature Discovery labels")
    for node in gpu_nodes():
        ok, output = _apply(plane, node)
        if not ok:
            raise common.CommandError(f"cannot create node {node['metadata']['name']}: {output}")
    progress("waiting for the operator to judge the nodes' GPU stacks")
    _wait(lambda: _node_state(plane, "gpu-h100") != "", "node gpu-h100 to be judged")
    _wait(lambda: _node_state(plane, "gpu-a100") != "", "node gpu-a100 to be judged")
    for name in ("gpu-h100", "gpu-a100"):
        progress(f"  node {name}: {gpustack.STATE_LABEL}={_node_state(plane, name)}")


def tour(
    plane: controlplane.ControlPlane, images: DemoImages, metrics_url: str, write: Progress
) -> list[Attempt]:
    """Apply each attempt with the real kubectl and say what happened."""
    done: list[Attempt] = []
    for number, attempt in enumerate(attempts(images), start=1):
        write(f"\n[{number}] {attempt.story}")
        write(f"$ kubectl apply -f {attempt.name}.yaml   # expect: {attempt.expect}")
        ok, output = _apply(plane, attempt.manifest)
        attempt.outcome = "admitted" if ok else "denied"
        attempt.output = output
        write("\n".join(f"  {line}" for line in output.splitlines()))
        if ok and attempt.show:
            shown = controlplane.kubectl(
                plane, "-n", NAMESPACE, "get", "pod", attempt.name, "-o",
                f"jsonpath={attempt.show}", check=False,
            ).stdout.strip()  # fmt: skip
            attempt.shown = shown
            write(f"  $ kubectl -n {NAMESPACE} get pod {attempt.name} -o jsonpath='{attempt.show}'")
            write(f"  {shown}")
        if ok and attempt.settle:
            _settle(plane, attempt.settle)
        if not attempt.as_expected:
            write(f"  !! expected {attempt.expect}, got {attempt.outcome}")
        done.append(attempt)
    write("\n[events] denials become Events on the namespace (and on the workload's owner):")
    write(
        f"$ kubectl -n {NAMESPACE} get events --field-selector involvedObject.kind=Namespace "
        "--sort-by=.eventTime"
    )
    denied = sum(attempt.outcome == "denied" for attempt in done)
    try:  # one Event per denial (a header line above them); show what came if some are late
        _wait(lambda: len(_events(plane).splitlines()) > denied, "every denial Event", timeout=20)
    except common.CommandError:
        _wait(lambda: bool(_events(plane)), "the denial Events", timeout=1)
    write("\n".join(f"  {line}" for line in _events(plane).splitlines()[:8]))
    write("\n[metrics] every decision is counted for Prometheus:")
    write(f"$ curl -s {metrics_url} | grep -E 'muster_(admission_requests|violations)_total'")
    write("\n".join(f"  {line}" for line in _metrics(metrics_url)[:8]))
    return done


def _settle(plane: controlplane.ControlPlane, settle: str) -> None:
    target, _, path = settle.partition(":")

    def seen() -> bool:
        result = controlplane.kubectl(plane, "get", target, "-o", f"jsonpath={path}", check=False)
        return bool(result.stdout.strip())

    _wait(seen, f"the operator to see {target} change")


def _events(plane: controlplane.ControlPlane) -> str:
    result = controlplane.kubectl(
        plane, "-n", NAMESPACE, "get", "events", "--field-selector",
        "involvedObject.kind=Namespace", "--sort-by=.eventTime", check=False,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    return result.stdout.strip() if len(lines) > 1 else ""


def _metrics(url: str) -> list[str]:
    """The non-zero admission and violation counters from the operator's /metrics."""
    text = ""
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(url, timeout=5) as response,  # noqa: S310  # loopback
    ):
        text = response.read().decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(("muster_admission_requests_total", "muster_violations_total"))
        and not line.endswith(" 0.0")
    ]


def next_steps(plane: controlplane.ControlPlane, images: DemoImages) -> str:
    return f"""
The demo is up. Try it yourself:

  export KUBECONFIG={plane.kubeconfig}
  kubectl get imagepolicies,gpustackpolicies,models,modelpolicies,datasets,datasetpolicies
  kubectl get nodes -L {gpustack.STATE_LABEL}
  kubectl -n {NAMESPACE} run mine --image={images.unsigned}   # denied: not signed
  kubectl -n {NAMESPACE} run yours --image={images.signed}    # admitted and pinned

  # the same answers offline, before deploying (exit 1 when something would be denied):
  kubectl -n {NAMESPACE} run mine --image={images.unsigned} --dry-run=client -o yaml > mine.yaml
  kubectl get imagepolicies -o yaml > policies.yaml
  muster check --insecure-registry {images.registry} --policy policies.yaml mine.yaml

Namespace "{NAMESPACE}" opts in with {scopes.ENFORCE_LABEL}=true; label another namespace to
try warn mode: kubectl label ns default {scopes.ENFORCE_LABEL}=warn
Logs: {plane.workdir / "logs"} and {plane.workdir / "webhook" / "muster.log"}
Docs: docs/getting-started.md. Stop everything with: muster dev down
"""


def summary(done: list[Attempt]) -> list[dict[str, Any]]:
    return [
        {
            "name": a.name,
            "expect": a.expect,
            "outcome": a.outcome,
            "output": a.output,
            "shown": a.shown,
        }
        for a in done
    ]

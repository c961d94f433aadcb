"""The whole performance suite in one command: webhook direct, end to end, model hashing.

    python benchmarks/run.py            # full run (minutes), prints one table, writes JSON
    python benchmarks/run.py --smoke    # seconds; the integration tests run it so it cannot rot

Everything is real: a local etcd + kube-apiserver + controller-manager, Debian's
docker-registry, ``muster run`` over TLS with its webhooks registered, images pushed with
crane and signed offline by the real cosign, an ImagePolicy trusting that key, a
GPUStackPolicy and a node carrying a real H100's GPU Feature Discovery labels (image configs
served by the registry carry NVIDIA's real ``NVIDIA_REQUIRE_CUDA``), a ModelPolicy and an
approved Model referenced by an image volume. Baselines are measured in the same run: pod
creation in a namespace no webhook judges, and ``model_signing`` / ``sha256sum`` on the same
files. Each goal of the performance issue is printed met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import importlib
import json
import math
import os
import platform
import ssl
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from kubernetes import client

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]  # the real peers are started by the test suite's helpers

import admission as direct  # noqa: E402
import attestation_check  # noqa: E402
import image_verification  # noqa: E402
import judged  # noqa: E402
import notation_check  # noqa: E402
from tests import gpuroots, paths, peers  # noqa: E402

from muster.app import localoperator  # noqa: E402
from muster.gpu.rules import policies as gpupolicies  # noqa: E402
from muster.gpu.rules import stack as gpustack  # noqa: E402
from muster.images import verifier as imageverifier  # noqa: E402
from muster.images.rules import policies as imagepolicies  # noqa: E402
from muster.kernel import crds, scopes  # noqa: E402
from muster.platform import controlplane, kubesetup  # noqa: E402
from muster.platform import processes as procs  # noqa: E402

RESULTS = HERE / "results"

# Parts of the suite that start their own peers: each module has ``results(smoke) -> dict``,
# ``goals(results) -> list[goal]`` and ``table(results) -> str`` (see ``Part`` below), and runs
# alone as a script. The suite runs them in this order, after the shared control plane stops.
PARTS: dict[str, str] = {
    "tail": "the tail of pod creation: consecutive rounds, Muster against no webhook",
    "large_pods": "pods of a hundred images",
    "cluster_scale": "a cluster of 1,000 GPU nodes, 200 namespaces and 10,000 pods",
    "model_hashing": "model hashing on two layouts, every hashing choice",
    "startup": "start-up of a command",
}
OWN_NAMESPACE = "muster-bench"
JUDGED, BASELINE = "bench", "baseline"
GPU = paths.FIXTURES / "gpu"
COSIGN_ENV = {"COSIGN_PASSWORD": ""}
GROUP_VERSION = f"{crds.GROUP}/{crds.VERSION}"


@contextlib.contextmanager
def timer(what: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    print(f"  {what}: {time.perf_counter() - started:.1f} s", file=sys.stderr)


# -- the cluster's contents ---------------------------------------------------------------------


def sign(key: Path, ref: str) -> None:
    peers.run_tool(
        "cosign", "sign", f"--key={key}", "--tlog-upload=false", "--use-signing-config=false",
        "--allow-http-registry", "-y", ref, env=COSIGN_ENV,
    )  # fmt: skip


def cuda_env(tag: str) -> dict[str, str]:
    import yaml

    entries = yaml.safe_load((GPU / "cuda-images" / "cuda-image-env.yaml").read_text())["entries"]
    entry = next(e for e in entries if e["tag"] == tag and e["docker_arch"] == "amd64")
    keys = ("NVARCH", "CUDA_VERSION", "NV_CUDA_CUDART_VERSION", "NVIDIA_REQUIRE_CUDA")
    return {key: str(entry[key]) for key in keys if key in entry}


def h100_labels() -> dict[str, str]:
    raw = json.loads(
        (GPU / "gfd-labels" / "gpu-operator-H100-mig-single-node-labels.json").read_text()
    )
    return {k: v for k, v in raw.items() if k != "kubernetes.io/hostname"}


def create(api: client.ApiClient, plural: str, kind: str, name: str, spec: Any) -> None:
    body = {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    client.CustomObjectsApi(api).create_cluster_custom_object(
        crds.GROUP, crds.VERSION, plural, body
    )


def wait(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


def populate(
    plane: controlplane.ControlPlane, registry: peers.Registry, work: Path, cold: int
) -> dict[str, Any]:
    """Push and sign the images, create the policies, the GPU node and the Model."""
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=COSIGN_ENV
    )
    key, public = work / "k.key", (work / "k.pub").read_text()

    def pushed(repository: str, **extra: Any) -> str:
        digest = peers.push_image(registry, repository, "v1", workdir=work, **extra)
        ref = f"{registry.host}/{repository}@{digest}"
        sign(key, ref)
        return ref

    images: dict[str, Any] = {}
    with timer(f"push and sign {5 + 2 + cold} images"):
        images["warm"] = [pushed(f"bench/app-{i}") for i in range(5)]
        images["gpu"] = pushed("bench/cuda", env=cuda_env("12.4.1-base-ubuntu22.04"))
        images["model"] = pushed("bench/model", files={"model/model.safetensors": b"bench-weights"})
        # Distinct digests, each verified once: every cold request meets an empty cache.
        images["cold"] = [
            pushed(f"bench/cold-{i}", files={"nonce": uuid.uuid4().bytes}) for i in range(cold)
        ]
    gpu_policy = copy.deepcopy(gpupolicies.DEFAULT_POLICY)
    gpu_policy.pop("minimumToolkitVersion")  # no node agent here: no toolkit attestation
    gpu_policy.pop("deniedToolkitVersions")
    gpu_policy["knownGoodModuleDigests"] = [gpuroots.module_digest()]
    gpu_policy["endOfLifeBranches"] = [{"branch": 470, "source": "bench: an old branch"}]
    node = f"h100-{uuid.uuid4().hex[:5]}"
    with kubesetup.api_client(plane.kubeconfig) as api:
        create(api, "imagepolicies", "ImagePolicy", "bench", {
            "images": [f"{registry.host}/bench/**"],
            "authorities": [{"name": "bench", "key": {"data": public}}],
        })  # fmt: skip
        create(api, "gpustackpolicies", "GPUStackPolicy", "bench", gpu_policy)
        create(api, "modelpolicies", "ModelPolicy", "bench", {
            "namespaceSelector": {"matchLabels": {scopes.ENFORCE_LABEL: "true"}},
        })  # fmt: skip
        create(api, "models", "Model", "bench", {
            "digest": "sha256:" + "0" * 64, "ociReference": images["model"],
        })  # fmt: skip
        core: Any = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": node, "labels": h100_labels()}})
        objects: Any = client.CustomObjectsApi(api)

        def compiled() -> bool:
            status = (
                objects.get_cluster_custom_object(
                    crds.GROUP, crds.VERSION, "imagepolicies", "bench"
                ).get("status")
                or {}
            )
            return any(c["type"] == "Compiled" for c in status.get("conditions") or [])

        wait(compiled, "the ImagePolicy to compile")
        wait(
            lambda: gpustack.STATE_LABEL in (core.read_node(node).metadata.labels or {}),
            "the GPU node's compliance label",
        )
        wait(
            lambda: (
                objects.get_cluster_custom_object(crds.GROUP, crds.VERSION, "models", "bench").get(
                    "status"
                )
                or {}
            ).get("observedGeneration"),
            "the Model's status",
        )
    images["key"], images["public"] = key, public
    return images


# -- webhook direct -----------------------------------------------------------------------------


def pod_review(containers: list[str], **spec: Any) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench", "namespace": JUDGED},
        "spec": {
            "containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(containers)],
            **spec,
        },
    }
    return direct.pod_review(pod, JUDGED)


def gpu_review(image: str) -> dict[str, Any]:
    review = pod_review([image])
    container = review["request"]["object"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return review


def model_review(trainer: str, model: str) -> dict[str, Any]:
    review = pod_review([trainer])
    spec = review["request"]["object"]["spec"]
    spec["containers"][0]["volumeMounts"] = [{"name": "weights", "mountPath": "/m"}]
    spec["volumes"] = [{"name": "weights", "image": {"reference": model}}]
    return review


class Webhook:
    """Keep-alive TLS connections to ``muster run``, like the apiserver's."""

    def __init__(self, operator: localoperator.LocalOperator, connections: int = 64) -> None:
        self.operator = operator
        context = ssl.create_default_context(cafile=str(operator.ca_file))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=connections)
        )

    async def call(self, body: bytes, phase: str = "validate") -> dict[str, Any]:
        async with self.session.post(
            f"{self.operator.url}/{phase}/enforce",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            answer: dict[str, Any] = (await response.json())["response"]
        if not answer["allowed"]:
            raise SystemExit(f"unexpected denial: {answer.get('status')}")
        return answer

    def cpu(self) -> float:
        return direct.process_cpu_seconds(self.operator.pid)

    def rss(self) -> float:
        return direct.process_rss_mib(self.operator.pid)


@contextlib.contextmanager
def trivial_webhook(operator: localoperator.LocalOperator) -> Iterator[localoperator.LocalOperator]:
    """The warm path's baseline (benchmarks/trivial_webhook.py): parse, answer allowed; with
    ``muster run``'s certificate, so the same client reaches it the same way."""
    port = procs.free_port()
    log = operator.log.with_name("trivial-webhook.log")
    process = procs.spawn(
        [sys.executable, str(HERE / "trivial_webhook.py"), f"--port={port}",
         f"--tls-cert-file={operator.cert_file}", f"--tls-key-file={operator.key_file}"],
        log=log,
    )  # fmt: skip
    trivial = dataclasses.replace(
        operator, url=f"https://127.0.0.1:{port}", port=port, pid=process.pid, log=log
    )
    try:
        procs.wait_until(
            lambda: procs.port_is_open(port),
            what="trivial webhook",
            timeout=30,
            process=process,
            log=log,
        )
        yield trivial
    finally:
        procs.stop_pid(process.pid)


async def versus_trivial(
    operator: localoperator.LocalOperator, body: bytes, p: dict[str, Any]
) -> dict[str, Any]:
    """Muster and the trivial handler on the same body, client and concurrency, taking turns
    (A B B A ...) so drifting machine load hits both alike; requests and CPU pooled."""
    sides: dict[str, list[dict[str, Any]]] = {"muster": [], "trivial": []}
    with trivial_webhook(operator) as trivial:
        webhooks = {"muster": Webhook(operator), "trivial": Webhook(trivial)}
        try:
            for turn in range(p["trivial_rounds"]):
                order = ("muster", "trivial") if turn % 2 == 0 else ("trivial", "muster")
                for side in order:
                    sides[side].append(
                        await closed(webhooks[side], body, p["trivial_requests"], p["concurrency"])
                    )
        finally:
            for webhook in webhooks.values():
                await webhook.session.close()
    out: dict[str, Any] = {"rounds": p["trivial_rounds"], "concurrency": p["concurrency"]}
    for side, rounds in sides.items():
        cpu = sum(r["cpu_ms_per_request"] for r in rounds) / len(rounds)
        out[side] = {
            "cpu_ms_per_request": cpu,
            "requests_per_cpu_second": 1000 / cpu if cpu else float("inf"),
            # A round shorter than the kernel's 10 ms CPU tick reads as no CPU at all.
            "per_round": [
                round(rate) if math.isfinite(rate := r["requests_per_cpu_second"]) else None
                for r in rounds
            ],
        }
    out["ratio"] = (
        out["muster"]["requests_per_cpu_second"] / out["trivial"]["requests_per_cpu_second"]
    )
    return out


async def closed(webhook: Webhook, body: bytes, requests: int, concurrency: int) -> dict[str, Any]:
    async def call() -> None:
        await webhook.call(body)

    await direct.closed_loop(call, requests=min(100, requests), concurrency=concurrency)  # warm
    cpu = webhook.cpu()
    samples, wall = await direct.closed_loop(call, requests=requests, concurrency=concurrency)
    cpu = webhook.cpu() - cpu
    result = direct.summary(samples, wall)
    result["cpu_ms_per_request"] = 1000 * cpu / len(samples)
    result["requests_per_cpu_second"] = len(samples) / cpu if cpu else float("inf")
    result["rss_mib"] = webhook.rss()
    return result


async def open_loop(webhook: Webhook, body: bytes, rate: float, seconds: float) -> dict[str, Any]:
    """Send at ``rate`` regardless of answers; latency counts from the scheduled send time."""
    samples: list[float] = []
    count = max(1, int(rate * seconds))
    cpu = webhook.cpu()
    start = time.perf_counter()

    async def one(scheduled: float) -> None:
        await webhook.call(body)
        samples.append(time.perf_counter() - scheduled)

    tasks = []
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    cpu = webhook.cpu() - cpu
    result = direct.summary(samples, wall)
    result["offered_per_s"] = rate
    result["cpu_ms_per_request"] = 1000 * cpu / count
    result["requests_per_cpu_second"] = count / cpu if cpu else float("inf")
    return result


async def max_throughput(
    webhook: Webhook, body: bytes, start_rate: float, seconds: float
) -> dict[str, Any]:
    """Raise the offered rate until the answers fall behind (achieved < 90% or p95 > 50 ms).

    p95 rather than p99: on a shared machine one stall in a short window should not end it."""
    rate, best, steps = start_rate, None, []
    for _ in range(8):
        result = await open_loop(webhook, body, rate, seconds)
        steps.append(
            {k: result[k] for k in ("offered_per_s", "throughput_per_s", "p95_ms", "p99_ms")}
        )
        if result["throughput_per_s"] < 0.9 * rate or result["p95_ms"] > 50:
            break
        best, rate = result, rate * 1.5
    if best is None:
        best = result
    return {**best, "steps": steps}


async def cold(webhook: Webhook, reviews: list[bytes]) -> dict[str, Any]:
    """One request per never-seen set of digests, one at a time."""
    samples = []
    cpu = webhook.cpu()
    started = time.perf_counter()
    for body in reviews:
        began = time.perf_counter()
        await webhook.call(body)
        samples.append(time.perf_counter() - began)
    result = direct.summary(samples, time.perf_counter() - started)
    result["cpu_ms_per_request"] = 1000 * (webhook.cpu() - cpu) / len(reviews)
    return result


def cache_footprint(entries: int) -> dict[str, float]:
    """Bytes held by ``entries`` cached verification results in the real Verifier cache.

    The decisions are real ones shapes-wise (a passed Decision per (name, digest, policy)),
    keyed by distinct digests exactly as the Verifier keys them."""
    verifier = imageverifier.Verifier(
        None,  # type: ignore[arg-type]  # the registry is never asked: only the cache is filled
        cache=imageverifier.CacheSettings(max_entries=entries),
    )
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(entries):
        digest = f"sha256:{index:064x}"
        decision = imagepolicies.Decision(True, "Verified", f"signed by bench ({digest[:19]})")
        verifier._decisions.put(  # filling the real cache structure
            (f"registry.example/team/app-{index % 97}", digest, "bench", 1), decision, 600.0
        )
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {"entries": len(verifier._decisions), "cache_mib": held / (1 << 20)}


# -- end to end ---------------------------------------------------------------------------------


async def create_pods(
    plane: controlplane.ControlPlane,
    namespace: str,
    image: str,
    pods: int,
    concurrency: int,
    processes: dict[str, int],
) -> dict[str, float]:
    """Closed loop of pod creations; also the CPU each process spent per pod."""
    url = f"{plane.url}/api/v1/namespaces/{namespace}/pods"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "bench-"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=plane.ssl_context(), limit=concurrency)
    ) as session:

        async def call() -> None:
            async with session.post(url, json=pod) as response:
                if response.status != 201:
                    raise SystemExit(f"pod create: {response.status} {await response.text()}")

        await direct.closed_loop(call, requests=min(20, pods), concurrency=concurrency)
        cpu = {name: direct.process_cpu_seconds(pid) for name, pid in processes.items()}
        samples, wall = await direct.closed_loop(call, requests=pods, concurrency=concurrency)
    result = direct.summary(samples, wall)
    for name, pid in processes.items():
        spent = direct.process_cpu_seconds(pid) - cpu[name]
        result[f"{name}_cpu_ms_per_pod"] = 1000 * spent / pods
    return result


# -- the run ------------------------------------------------------------------------------------


def profile(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {
            "requests": 100, "concurrency": 10, "trivial_rounds": 2, "trivial_requests": 600,
            "rates": [100], "seconds": 1.0,
            "search_start": 200, "search_seconds": 0.5, "cold": 2, "cache_entries": 10_000,
            "e2e_pods": 10, "e2e_concurrency": [1, 10], "verify_runs": 1,
        }  # fmt: skip
    return {
        "requests": 2000, "concurrency": 10, "trivial_rounds": 4, "trivial_requests": 2000,
        "rates": [100, 250, 500], "seconds": 4.0,
        "search_start": 200, "search_seconds": 2.0, "cold": 15, "cache_entries": 10_000,
        "e2e_pods": 300, "e2e_concurrency": [1, 10, 50], "verify_runs": 10,
    }  # fmt: skip


async def admission_layers(
    plane: controlplane.ControlPlane,
    registry: peers.Registry,
    operator: localoperator.LocalOperator,
    images: dict[str, Any],
    p: dict[str, Any],
) -> dict[str, Any]:
    warm = images["warm"]
    cases = {
        "pod, 1 container": pod_review(warm[:1]),
        "pod, 5 containers": pod_review(warm),
        "GPU pod": gpu_review(images["gpu"]),
        "model pod (image volume)": model_review(warm[0], images["model"]),
    }
    bodies = {name: json.dumps(review).encode() for name, review in cases.items()}
    out: dict[str, Any] = {"warm": [], "open_loop": [], "cold": {}}
    webhook = Webhook(operator)
    try:
        for name, body in bodies.items():
            with timer(f"warm {name}"):
                result = await closed(webhook, body, p["requests"], p["concurrency"])
            out["warm"].append({"case": name, "concurrency": p["concurrency"], **result})
        five = bodies["pod, 5 containers"]
        with timer("warm 5 containers vs trivial handler"):
            out["versus_trivial"] = await versus_trivial(operator, five, p)
        with timer("mutate, 5 containers"):
            mutate = await webhook.call(five, "mutate")  # answers, with or without a patch
            del mutate
        for rate in p["rates"]:
            with timer(f"open loop {rate}/s"):
                result = await open_loop(webhook, five, rate, p["seconds"])
            out["open_loop"].append({"case": "pod, 5 containers", **result})
        with timer("max throughput search"):
            out["max_throughput"] = await max_throughput(
                webhook, five, p["search_start"], p["search_seconds"]
            )
        out["rss_mib_after_load"] = webhook.rss()
        pods, fresh = p["cold"], images["cold"]
        singles = [json.dumps(pod_review([ref])).encode() for ref in fresh[:pods]]
        fives = [
            json.dumps(pod_review(fresh[pods + 5 * i : pods + 5 * i + 5])).encode()
            for i in range(pods)
        ]
        with timer("cold"):
            out["cold"]["pod, 1 container"] = await cold(webhook, singles)
            out["cold"]["pod, 5 containers"] = await cold(webhook, fives)
    finally:
        await webhook.session.close()
    return out


def round_trips(registry: peers.Registry, images: dict[str, Any], runs: int) -> dict[str, Any]:
    """Registry requests for one cold verification, by digest and by tag (in process)."""
    spec = {"images": ["**"], "authorities": [{"key": {"data": images["public"]}}]}
    policy = imagepolicies.compile_policy("bench", 1, imagepolicies.parse_spec(spec), {})
    ref = images["warm"][0]
    name = ref.split("@")[0]
    return {
        "digest": asyncio.run(image_verification.measure(registry.host, ref, policy, runs)),
        "tag": asyncio.run(image_verification.measure(registry.host, f"{name}:v1", policy, runs)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    p = profile(args.smoke)
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="muster-bench-") as scratch:
        work = Path(scratch)
        with judged.cluster(work, OWN_NAMESPACE, JUDGED, BASELINE) as (plane, registry, operator):
            images = populate(plane, registry, work, 6 * p["cold"])
            results = asyncio.run(admission_layers(plane, registry, operator, images, p))
            results["cache_10k"] = cache_footprint(p["cache_entries"])
            with timer("round trips"):
                results["round_trips"] = round_trips(registry, images, p["verify_runs"])
            e2e = []
            processes = {
                "apiserver": plane.state.pids["kube-apiserver"],
                "etcd": plane.state.pids["etcd"],
                "muster": operator.pid,
            }
            with timer("end to end"):
                for concurrency in p["e2e_concurrency"]:
                    base, muster = (
                        asyncio.run(
                            create_pods(
                                plane,
                                namespace,
                                images["warm"][0],
                                p["e2e_pods"],
                                concurrency,
                                processes,
                            )
                        )
                        for namespace in (BASELINE, JUDGED)
                    )
                    e2e.append({
                        "concurrency": concurrency, "baseline": base, "muster": muster,
                        "p50_ratio": muster["p50_ms"] / base["p50_ms"],
                        "p99_ratio": muster["p99_ms"] / base["p99_ms"],
                    })  # fmt: skip
            results["end_to_end"] = e2e
        with timer("attestation check"):
            results["attestation_check"] = attestation_check.results(p["verify_runs"])
        with timer("Notation check"):
            results["notation_check"] = notation_check.results(p["verify_runs"])
        results["parts"] = {}
        for key, title in PARTS.items():
            with timer(title):
                results["parts"][key] = part(key).results(args.smoke)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
        "smoke": args.smoke,
    }
    results["goals"] = goals(results) + [
        row for key in PARTS for row in part(key).goals(results["parts"][key])
    ]
    return results


# -- goals and the table ------------------------------------------------------------------------


class Part(Protocol):
    """A part of the suite that measures one goal area with its own peers and baselines."""

    def results(self, smoke: bool) -> dict[str, Any]: ...

    def goals(self, r: dict[str, Any]) -> list[dict[str, Any]]:
        """Rows of goal, measured, baseline, target and met (a bool)."""
        ...

    def table(self, r: dict[str, Any]) -> str: ...


def part(key: str) -> Part:
    module: Part = importlib.import_module(key)
    return module


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    versus = r["versus_trivial"]
    half = [o for o in r["open_loop"] if o["offered_per_s"] <= 500]
    at_half = max(half, key=lambda o: o["offered_per_s"]) if half else r["open_loop"][0]
    e2e = max(r["end_to_end"], key=lambda e: e["concurrency"])
    cold_p99 = max(c["p99_ms"] for c in r["cold"].values())
    trips = r["round_trips"]
    rss = r["rss_mib_after_load"] + r["cache_10k"]["cache_mib"]

    def goal(name: str, measured: str, target: str, met: bool) -> dict[str, Any]:
        return {"goal": name, "measured": measured, "target": target, "met": met}

    return [
        {
            "goal": "warm 5-container admissions per CPU-second vs a trivial TLS handler",
            "measured": f"{versus['muster']['requests_per_cpu_second']:.0f}/s "
            f"({versus['ratio']:.2f}x)",
            "baseline": f"{versus['trivial']['requests_per_cpu_second']:.0f}/s trivial aiohttp "
            "TLS handler",
            "target": ">= 0.5x",
            "met": versus["ratio"] >= 0.5,
        },
        goal(
            f"warm 5-container p99 at {at_half['offered_per_s']:.0f}/s open loop",
            f"{at_half['p99_ms']:.2f} ms",
            "<= 5 ms",
            at_half["p99_ms"] <= 5,
        ),
        goal(
            f"end to end p99 ratio at {e2e['concurrency']} clients",
            f"{e2e['p99_ratio']:.2f}x",
            "<= 1.10x",
            e2e["p99_ratio"] <= 1.10,
        ),
        goal(
            # Sequential round trips, and (in brackets) every request sent: both must fit.
            "registry round trips per cold image (digest / tag)",
            f"{trips['digest']['round_trips']} / {trips['tag']['round_trips']} "
            f"({trips['digest']['requests']} / {trips['tag']['requests']} requests)",
            "<= 3 / <= 4",
            max(trips["digest"]["round_trips"], trips["digest"]["requests"]) <= 3
            and max(trips["tag"]["round_trips"], trips["tag"]["requests"]) <= 4,
        ),
        goal("cold pod admission p99", f"{cold_p99:.1f} ms", "<= 50 ms", cold_p99 <= 50),
        goal("RSS with 10,000 cached results", f"{rss:.0f} MiB", "<= 200 MiB", rss <= 200),
    ]


# Columns of the latency table, and the measurement key each is read from.
_LATENCY_COLUMNS = {
    "p50": "p50_ms",
    "p99": "p99_ms",
    "max": "max_ms",
    "rate/s": "throughput_per_s",
    "cpu ms/req": "cpu_ms_per_request",
    "req/cpu-s": "requests_per_cpu_second",
    "rss MiB": "rss_mib",
}


def _latency_row(
    layer: str, case: str, measured: dict[str, Any], *, without: tuple[str, ...] = ()
) -> dict[str, Any]:
    """One row of the latency table: the columns this measurement has, formatted."""
    row: dict[str, Any] = {"layer": layer, "case": case}
    for column, key in _LATENCY_COLUMNS.items():
        if key in measured and column not in without:
            row[column] = direct.fmt(measured[key])
    return row


def report(r: dict[str, Any]) -> str:
    f = direct.fmt
    rows = [_latency_row("direct warm", f"{w['case']}, c={w['concurrency']}", w) for w in r["warm"]]
    rows += [
        _latency_row("direct open loop", f"{o['case']} @ {o['offered_per_s']:.0f}/s", o)
        for o in r["open_loop"]
    ]
    m = r["max_throughput"]
    rows.append(
        _latency_row("direct max (open)", f"pod, 5 containers @ {m['offered_per_s']:.0f}/s", m)
    )
    rows += [
        # One request at a time: a rate would only say how slow the registry was.
        _latency_row("direct cold", f"{name} (n={c['n']})", c, without=("rate/s",))
        for name, c in r["cold"].items()
    ]
    lines = [
        "latency in ms",
        direct.table(
            rows,
            ["layer", "case", "p50", "p99", "max", "rate/s", "cpu ms/req", "req/cpu-s", "rss MiB"],
        ),
    ]
    e2e = [
        {
            "clients": e["concurrency"],
            "baseline p50": f(e["baseline"]["p50_ms"]),
            "muster p50": f(e["muster"]["p50_ms"]),
            "p50 ratio": f"{e['p50_ratio']:.2f}x",
            "baseline p99": f(e["baseline"]["p99_ms"]),
            "muster p99": f(e["muster"]["p99_ms"]),
            "p99 ratio": f"{e['p99_ratio']:.2f}x",
        }
        for e in r["end_to_end"]
    ]
    lines += [
        "",
        "end to end: pod create through the apiserver, Muster vs no webhook (ms)",
        direct.table(e2e, list(e2e[0])),
    ]
    cpu = [
        {
            "clients": e["concurrency"],
            "namespace": side,
            **{
                f"{name} cpu ms/pod": f(e[side][f"{name}_cpu_ms_per_pod"])
                for name in ("apiserver", "etcd", "muster")
            },
        }
        for e in r["end_to_end"]
        for side in ("baseline", "muster")
    ]
    lines += ["", "end to end: CPU per pod created", direct.table(cpu, list(cpu[0]))]
    t = r["round_trips"]
    lines += [
        "",
        "registry cost of one cold verification (cosign v3 bundle, tag fallback registry): "
        "requests / sequential round trips",
        f"by digest {t['digest']['requests']} / {t['digest']['round_trips']}, "
        f"by tag {t['tag']['requests']} / {t['tag']['round_trips']}; "
        f"first contact with the registry: by digest {t['digest']['requests_first_contact']}"
        f" / {t['digest']['round_trips_first_contact']}, "
        f"by tag {t['tag']['requests_first_contact']} / {t['tag']['round_trips_first_contact']}; "
        f"50 concurrent cold by digest: {t['digest']['requests_50_concurrent']} requests",
    ]
    lines += [
        "",
        "one attestation check (SLSA provenance, 3 CEL conditions), cold and warm, in process",
        attestation_check.table(r["attestation_check"]),
        "",
        "one Notation check (JWS and COSE, strict level) against a cosign v3 key signature, "
        "cold and warm, in process",
        notation_check.table(r["notation_check"]),
    ]
    c = r["cache_10k"]
    lines += [
        f"verification cache: {c['entries']} entries hold {c['cache_mib']:.1f} MiB; "
        f"muster run RSS after load {r['rss_mib_after_load']:.0f} MiB"
    ]
    for key, title in PARTS.items():
        lines += ["", title, part(key).table(r["parts"][key])]
    goal_rows = [
        {**g, "baseline": g.get("baseline", "-"), "met": "met" if g["met"] else "MISSED"}
        for g in r["goals"]
    ]
    lines += [
        "",
        "goals",
        direct.table(goal_rows, ["goal", "measured", "baseline", "target", "met"]),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few requests, seconds long")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    results = run(args)
    print(report(results))
    output = args.output or RESULTS / ("suite-smoke.json" if args.smoke else "suite.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

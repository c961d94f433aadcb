"""Admission benchmarks: the webhook alone, and pod creation end to end against a baseline.

    python benchmarks/admission.py            # full run, prints a table, writes JSON
    python benchmarks/admission.py --smoke    # seconds; CI runs it so the suite cannot rot
    python benchmarks/admission.py --e2e-ab --clients 50 --pods 300 --rounds 3

Everything is real: a local etcd + kube-apiserver + controller-manager, ``muster run`` over
TLS with its webhooks registered. Two layers:

- webhook direct: AdmissionReview requests straight to ``muster run`` over TLS (keep-alive,
  like the apiserver), for 1- and 5-container pods, closed-loop at fixed concurrency;
  latency percentiles, throughput, CPU seconds per request and RSS of the muster process.
- end to end: pod creation through the apiserver in a namespace Muster judges versus one it
  does not (the no-webhook baseline), in the same run, at 1, 10 and 50 concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from muster.app import localoperator, webhookconfigs
from muster.kernel import scopes
from muster.platform import controlplane, kubesetup

RESULTS = Path(__file__).resolve().parent / "results"
OWN_NAMESPACE = "muster-system"
PINNED = "registry.example/team/trainer@sha256:" + "ab" * 32


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(samples: list[float], wall: float) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": 1000 * percentile(samples, 0.50),
        "p95_ms": 1000 * percentile(samples, 0.95),
        "p99_ms": 1000 * percentile(samples, 0.99),
        "max_ms": 1000 * max(samples),
        "mean_ms": 1000 * statistics.fmean(samples),
        "throughput_per_s": len(samples) / wall,
    }


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def process_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pod_review(pod: dict[str, Any], namespace: str, user: str = "bench") -> dict[str, Any]:
    """An AdmissionReview of a pod's CREATE, as the apiserver sends it (a fresh uid each)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": user},
            "object": pod,
        },
    }


def review(containers: int) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bench", "namespace": "bench"},
        "spec": {"containers": [{"name": f"c{i}", "image": PINNED} for i in range(containers)]},
    }
    return json.dumps(pod_review(pod, "bench")).encode()


async def closed_loop(
    call: Callable[[], Awaitable[None]], *, requests: int, concurrency: int
) -> tuple[list[float], float]:
    samples: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


async def webhook_direct(
    operator: localoperator.LocalOperator, *, requests: int, concurrency: int, containers: int
) -> dict[str, float]:
    context = ssl.create_default_context(cafile=str(operator.ca_file))
    body = review(containers)
    url = f"{operator.url}/validate/enforce"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=concurrency)
    ) as session:

        async def call() -> None:
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = await response.json()
                if not answer["response"]["allowed"]:
                    raise RuntimeError(f"unexpected denial: {answer}")

        await closed_loop(call, requests=min(50, requests), concurrency=concurrency)  # warm-up
        cpu_before = process_cpu_seconds(operator.pid)
        samples, wall = await closed_loop(call, requests=requests, concurrency=concurrency)
        cpu = process_cpu_seconds(operator.pid) - cpu_before
    result = summary(samples, wall)
    result["cpu_ms_per_request"] = 1000 * cpu / len(samples)
    result["requests_per_cpu_second"] = len(samples) / cpu if cpu else float("inf")
    result["rss_mib"] = process_rss_mib(operator.pid)
    return result


async def end_to_end(
    plane: controlplane.ControlPlane, namespace: str, *, pods: int, concurrency: int
) -> dict[str, Any]:
    context = plane.ssl_context()
    url = f"{plane.url}/api/v1/namespaces/{namespace}/pods"
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context, limit=concurrency)
    ) as session:

        async def call() -> None:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "bench-"},
                "spec": {"containers": [{"name": "c", "image": PINNED}]},
            }
            async with session.post(url, json=pod) as response:
                if response.status != 201:
                    raise RuntimeError(
                        f"pod create failed: {response.status} {await response.text()}"
                    )

        await closed_loop(call, requests=min(20, pods), concurrency=concurrency)  # warm-up
        samples, wall = await closed_loop(call, requests=pods, concurrency=concurrency)
    return {**summary(samples, wall), "samples": samples, "wall_s": wall}


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(f"{r.get(c, '')}".ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def fmt(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


ALWAYS_LABEL = "muster-bench.dev/always-mutate"


def register_always_mutating(
    plane: controlplane.ControlPlane, operator: localoperator.LocalOperator
) -> None:
    """A second pair of configurations for namespaces labelled ALWAYS_LABEL: the same webhooks
    without the mutating ``may-mutate`` match condition, so every pod is also sent to the
    mutation, as before that condition existed. Same ``muster run``, same run: an A/B."""
    ca_bundle = base64.b64encode(operator.ca_file.read_bytes()).decode("ascii")
    with kubesetup.api_client(plane.kubeconfig) as api:
        for build in (webhookconfigs.validating, webhookconfigs.mutating):
            manifest = build(operator.url, ca_bundle, own_namespace=OWN_NAMESPACE)
            manifest["metadata"]["name"] = "always-mutate.muster-bench.dev"
            hooks = [h for h in manifest["webhooks"] if h["name"].startswith("enforce.")]
            for hook in hooks:
                hook["namespaceSelector"] = {"matchLabels": {ALWAYS_LABEL: "true"}}
                hook.pop("matchConditions", None)
            manifest["webhooks"] = hooks
            kubesetup.apply_webhook_configuration(api, manifest)


async def e2e_ab(
    plane: controlplane.ControlPlane, *, pods: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    """Pod creation: no webhook, Muster, and Muster with every pod also mutated, interleaved
    ``rounds`` times; each variant's samples pooled."""
    samples: dict[str, list[float]] = {"baseline": [], "judged": [], "always": []}
    walls: dict[str, float] = dict.fromkeys(samples, 0.0)
    for _ in range(rounds):
        for variant in samples:
            result = await end_to_end(plane, variant, pods=pods, concurrency=concurrency)
            samples[variant] += result.pop("samples")
            walls[variant] += result["wall_s"]
    out: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds}
    for variant, values in samples.items():
        out[variant] = summary(values, walls[variant])
    for variant in ("judged", "always"):
        for stat in ("p50_ms", "p99_ms"):
            out[f"{variant}_{stat[:3]}_ratio"] = out[variant][stat] / out["baseline"][stat]
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="muster-bench-"))
    plane = controlplane.start(work / "control-plane")
    operator = None
    try:
        operator = localoperator.start(
            plane, own_namespace=OWN_NAMESPACE, workdir=work / "operator"
        )
        localoperator.register_webhooks(plane, operator, own_namespace=OWN_NAMESPACE)
        with kubesetup.api_client(plane.kubeconfig) as api:
            kubesetup.ensure_namespace(api, "judged", {scopes.ENFORCE_LABEL: "true"})
            kubesetup.ensure_namespace(api, "baseline")
            kubesetup.ensure_namespace(api, "bench", {scopes.ENFORCE_LABEL: "true"})
        if args.e2e_ab:
            register_always_mutating(plane, operator)
            with kubesetup.api_client(plane.kubeconfig) as api:
                kubesetup.ensure_namespace(api, "always", {ALWAYS_LABEL: "true"})
            await asyncio.sleep(
                2
            )  # the apiserver picks the new configurations up through an informer
            return {
                "e2e_ab": [
                    await e2e_ab(plane, pods=args.e2e_pods, concurrency=c, rounds=args.rounds)
                    for c in args.e2e_concurrency
                ]
            }
        direct = []
        for containers in (1, 5):
            for concurrency in args.direct_concurrency:
                result = await webhook_direct(
                    operator,
                    requests=args.direct_requests,
                    concurrency=concurrency,
                    containers=containers,
                )
                direct.append({"containers": containers, "concurrency": concurrency, **result})
        e2e = []
        for concurrency in args.e2e_concurrency:
            # Interleave baseline and judged so drift in the machine's load hits both alike.
            base = await end_to_end(plane, "baseline", pods=args.e2e_pods, concurrency=concurrency)
            judged = await end_to_end(plane, "judged", pods=args.e2e_pods, concurrency=concurrency)
            del base["samples"], judged["samples"]
            e2e.append(
                {
                    "concurrency": concurrency,
                    "baseline_p50_ms": base["p50_ms"],
                    "baseline_p99_ms": base["p99_ms"],
                    "muster_p50_ms": judged["p50_ms"],
                    "muster_p99_ms": judged["p99_ms"],
                    "p99_ratio": judged["p99_ms"] / base["p99_ms"],
                    "p50_ratio": judged["p50_ms"] / base["p50_ms"],
                }
            )
        return {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "webhook_direct": direct,
            "end_to_end": e2e,
        }
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="a few requests, seconds long")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--e2e-ab",
        action="store_true",
        help="end to end only: no webhook vs Muster vs Muster with every pod also mutated",
    )
    parser.add_argument("--clients", default="50", help="--e2e-ab: concurrencies, e.g. 1,10,50")
    parser.add_argument("--pods", type=int, default=300, help="--e2e-ab: pods per variant/round")
    parser.add_argument("--rounds", type=int, default=3, help="--e2e-ab: interleaved rounds")
    args = parser.parse_args()
    if args.smoke:
        args.direct_requests, args.direct_concurrency = 200, [1, 10]
        args.e2e_pods, args.e2e_concurrency = 20, [1, 10]
    else:
        args.direct_requests, args.direct_concurrency = 3000, [1, 10, 50]
        args.e2e_pods, args.e2e_concurrency = 300, [1, 10, 50]
    if args.e2e_ab:
        args.e2e_pods = args.pods
        args.e2e_concurrency = [int(c) for c in args.clients.split(",")]
        results = asyncio.run(run(args))
        rows = []
        for row in results["e2e_ab"]:
            for variant in ("baseline", "judged", "always"):
                stats = row[variant]
                rows.append({
                    "clients": row["concurrency"], "variant": variant, "n": stats["n"],
                    "p50_ms": fmt(stats["p50_ms"]), "p99_ms": fmt(stats["p99_ms"]),
                    "p50_ratio": fmt(row.get(f"{variant}_p50_ratio", 1.0)),
                    "p99_ratio": fmt(row.get(f"{variant}_p99_ratio", 1.0)),
                })  # fmt: skip
        print("end to end, pod create: baseline = no webhook; judged = Muster (mutation only")
        print("when needed); always = Muster with every pod also sent to the mutation")
        print(
            table(rows, ["clients", "variant", "n", "p50_ms", "p99_ms", "p50_ratio", "p99_ratio"])
        )
        output = args.output or RESULTS / "e2e-ab.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {output}")
        return 0
    results = asyncio.run(run(args))
    direct_columns = [
        "containers",
        "concurrency",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
        "throughput_per_s",
        "cpu_ms_per_request",
        "requests_per_cpu_second",
        "rss_mib",
    ]
    print("webhook direct (validate, warm)")
    print(
        table(
            [
                {k: (fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in results["webhook_direct"]
            ],
            direct_columns,
        )
    )
    print("\nend to end: pod create through the apiserver, judged vs. no-webhook baseline")
    e2e_columns = [
        "concurrency",
        "baseline_p50_ms",
        "muster_p50_ms",
        "p50_ratio",
        "baseline_p99_ms",
        "muster_p99_ms",
        "p99_ratio",
    ]
    print(
        table(
            [
                {k: (fmt(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in results["end_to_end"]
            ],
            e2e_columns,
        )
    )
    output = args.output or RESULTS / ("smoke.json" if args.smoke else "admission.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

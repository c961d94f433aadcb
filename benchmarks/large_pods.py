"""Pods of a hundred images: cold and warm admission, registry requests per image, and whether
a large pod makes another pod wait.

    python benchmarks/large_pods.py            # 100 images per pod, 3 runs (a few minutes)
    python benchmarks/large_pods.py --smoke    # 10 images, 1 run

Everything is real: a local etcd + kube-apiserver + controller-manager, Debian's
docker-registry (started directly, so its CPU can be read from ``/proc``), ``muster run`` with
its webhooks registered, distinct images pushed with crane and signed offline by the real cosign
v3, and an ImagePolicy trusting that key. AdmissionReviews go straight to ``/validate/enforce``
over TLS, as the apiserver sends them. Every cold run names digests never seen before.

- cold: a pod of one image, then a pod of N, one review at a time; medians over the runs; the
  CPU ``muster run`` and the registry spent, and ``muster run``'s registry requests (its own
  ``muster_registry_requests_total``);
- starvation: a pod of one fresh image sent while a pod of N fresh images is being verified
  (once the first of its registry requests came back), against the same pod alone;
- warm: the last N-image pod again (every verification cached), one review at a time, against
  a warm one-image pod.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the real peers are started by the tests' helpers

import admission as direct  # noqa: E402
from kubernetes import client  # noqa: E402
from tests import peers  # noqa: E402

from muster.app import localoperator  # noqa: E402
from muster.kernel import crds, scopes  # noqa: E402
from muster.platform import controlplane, kubesetup, localregistry  # noqa: E402

OWN_NAMESPACE = "muster-large"
JUDGED = "large"
COSIGN_ENV = {"COSIGN_PASSWORD": ""}
# Ratify's published figures for 100 images with 2 signatures each (its performance docs).
RATIFY = {"cold_s": 3.1, "warm_s": 0.6}


def profile(smoke: bool) -> dict[str, int]:
    if smoke:
        return {"images": 10, "runs": 1, "warm": 20, "signers": 4}
    return {"images": 100, "runs": 3, "warm": 200, "signers": 4}


# -- images -------------------------------------------------------------------------------------


def push_and_sign(
    registry: localregistry.LocalRegistry, work: Path, key: Path, count: int, processes: int
) -> list[str]:
    """``count`` distinct images pushed with crane, then signed by cosign v3, a few calls at once
    (cosign signs several images per call; its time limit is for the whole call)."""
    where = peers.Registry(host=registry.host, referrers_api=False)

    def push(index: int) -> str:
        repository = f"large/app-{index}"
        digest = peers.push_image(
            where, repository, "v1", files={"nonce": uuid.uuid4().bytes}, workdir=work
        )
        return f"{registry.host}/{repository}@{digest}"

    def sign(refs: list[str]) -> None:
        peers.run_tool(
            "cosign", "sign", f"--key={key}", "--tlog-upload=false", "--use-signing-config=false",
            "--allow-http-registry", "--timeout=10m", "-y", *refs, env=COSIGN_ENV, timeout=600,
        )  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(processes) as pool:
        refs = list(pool.map(push, range(count)))
        list(pool.map(sign, [refs[i : i + 20] for i in range(0, len(refs), 20)]))
    return refs


def review(images: list[str]) -> bytes:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "large", "namespace": JUDGED},
        "spec": {"containers": [{"name": f"c{i}", "image": ref} for i, ref in enumerate(images)]},
    }
    return json.dumps(direct.pod_review(pod, JUDGED)).encode()


# -- measuring ----------------------------------------------------------------------------------


class Webhook:
    """Keep-alive TLS connections to ``muster run``'s validating endpoint, like the apiserver's."""

    def __init__(self, operator: localoperator.LocalOperator, registry_pid: int) -> None:
        self.operator = operator
        self.registry_pid = registry_pid
        context = ssl.create_default_context(cafile=str(operator.ca_file))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))

    async def admit(self, body: bytes) -> float:
        """Seconds to an answer, which must be an admission (every image is signed)."""
        started = time.perf_counter()
        async with self.session.post(
            f"{self.operator.url}/validate/enforce",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            answer = (await response.json())["response"]
        seconds = time.perf_counter() - started
        if not answer["allowed"]:
            raise SystemExit(f"unexpected denial: {answer.get('status')}")
        return seconds

    async def registry_requests(self) -> float:
        async with self.session.get(self.operator.metrics_url) as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("muster_registry_requests_total{")
        )

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of ``muster run`` and of the registry."""
        return (
            direct.process_cpu_seconds(self.operator.pid),
            direct.process_cpu_seconds(self.registry_pid),
        )

    async def cold(self, images: list[str]) -> dict[str, float]:
        requests, (muster, registry) = await self.registry_requests(), self.cpu()
        seconds = await self.admit(review(images))
        muster_after, registry_after = self.cpu()
        return {
            "ms": 1000 * seconds,
            "muster_cpu_ms": 1000 * (muster_after - muster),
            "registry_cpu_ms": 1000 * (registry_after - registry),
            "registry_requests": await self.registry_requests() - requests,
        }

    async def during(self, large: list[str], small: list[str]) -> dict[str, float]:
        """The small pod sent once the large one's first registry request came back; the large
        pod's time left then is what a small pod served in order of arrival would wait for."""
        before = await self.registry_requests()
        started = time.perf_counter()
        big = asyncio.ensure_future(self.admit(review(large)))
        while (done := await self.registry_requests() - before) == 0:
            finished, _ = await asyncio.wait({big}, timeout=0.002)
            if finished:
                raise SystemExit("the large pod was answered before any registry request")
        sent = time.perf_counter()
        small_seconds = await self.admit(review(small))
        large_seconds = await big
        ended = started + large_seconds
        return {
            "small_ms": 1000 * small_seconds,
            "large_ms": 1000 * large_seconds,
            "large_left_ms": 1000 * max(ended - sent, 0.001),
            "large_requests_done_at_send": done / (3 * len(large)),
        }

    async def warm(self, images: list[str], requests: int) -> dict[str, float]:
        body = review(images)
        await self.admit(body)
        muster, _ = self.cpu()
        samples = [await self.admit(body) for _ in range(requests)]
        spent = self.cpu()[0] - muster
        result = direct.summary(samples, sum(samples))
        result["cpu_ms_per_request"] = 1000 * spent / requests
        return result


async def measure(
    operator: localoperator.LocalOperator,
    registry_pid: int,
    images: list[str],
    warm_image: str,
    p: dict[str, int],
) -> dict[str, Any]:
    n = p["images"]
    webhook = Webhook(operator, registry_pid)
    runs: list[dict[str, Any]] = []
    try:
        await webhook.admit(review([warm_image]))  # connections, policies and the registry known
        for index in range(p["runs"]):
            fresh = images[index * (2 * n + 2) : (index + 1) * (2 * n + 2)]
            single, large, during_large, during_single = (
                fresh[:1], fresh[1 : n + 1], fresh[n + 1 : 2 * n + 1], fresh[2 * n + 1 :],
            )  # fmt: skip
            runs.append({
                "single": await webhook.cold(single),
                "large": await webhook.cold(large),
                "during": await webhook.during(during_large, during_single),
            })  # fmt: skip
        warm_large = await webhook.warm(large, p["warm"])
        warm_single = await webhook.warm([warm_image], p["warm"])
    finally:
        await webhook.session.close()

    def median(path: tuple[str, str]) -> float:
        return statistics.median(run[path[0]][path[1]] for run in runs)

    return {
        "images": n,
        "runs": runs,
        "cold_single_ms": median(("single", "ms")),
        "cold_large_ms": median(("large", "ms")),
        "cold_extra_ms": statistics.median(r["large"]["ms"] - r["single"]["ms"] for r in runs),
        "cold_large_muster_cpu_ms": median(("large", "muster_cpu_ms")),
        "cold_large_registry_cpu_ms": median(("large", "registry_cpu_ms")),
        "cold_single_registry_requests": median(("single", "registry_requests")),
        "requests_per_image": median(("large", "registry_requests")) / n,
        "during_small_ms": median(("during", "small_ms")),
        "during_large_ms": median(("during", "large_ms")),
        "during_large_left_ms": median(("during", "large_left_ms")),
        "during_small_share": statistics.median(
            r["during"]["small_ms"] / r["during"]["large_left_ms"] for r in runs
        ),
        "warm_large": warm_large,
        "warm_single": warm_single,
    }


# -- the part -----------------------------------------------------------------------------------


def _wait(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def results(smoke: bool, runs: int | None = None) -> dict[str, Any]:
    p = profile(smoke)
    p["runs"] = runs or p["runs"]
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="muster-large-") as scratch:
        work = Path(scratch)
        plane = controlplane.start(work / "control-plane")
        registry = operator = None
        try:
            registry = localregistry.start(work / "registry")
            localoperator.install_crds(plane)
            operator = localoperator.start(
                plane,
                own_namespace=OWN_NAMESPACE,
                workdir=work / "operator",
                extra_args=(f"--insecure-registry={registry.host}",),
            )
            localoperator.register_webhooks(plane, operator, own_namespace=OWN_NAMESPACE)
            peers.run_tool(
                "cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=COSIGN_ENV
            )
            public = (work / "k.pub").read_text()
            with kubesetup.api_client(plane.kubeconfig) as api:
                kubesetup.ensure_namespace(api, JUDGED, {scopes.ENFORCE_LABEL: "true"})
                objects: Any = client.CustomObjectsApi(api)
                objects.create_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", {
                    "apiVersion": f"{crds.GROUP}/{crds.VERSION}", "kind": "ImagePolicy",
                    "metadata": {"name": "large"},
                    "spec": {
                        "images": [f"{registry.host}/large/**"],
                        "authorities": [{"name": "bench", "key": {"data": public}}],
                    },
                })  # fmt: skip

                def compiled() -> bool:
                    found = objects.get_cluster_custom_object(
                        crds.GROUP, crds.VERSION, "imagepolicies", "large"
                    )
                    conditions = (found.get("status") or {}).get("conditions") or []
                    return any(c["type"] == "Compiled" for c in conditions)

                _wait(compiled, "the ImagePolicy to compile")
            started = time.perf_counter()
            count = p["runs"] * (2 * p["images"] + 2) + 1
            images = push_and_sign(registry, work, work / "k.key", count, p["signers"])
            set_up_s = time.perf_counter() - started
            measured = asyncio.run(measure(operator, registry.pid, images[1:], images[0], p))
        finally:
            if operator is not None:
                operator.stop()
            if registry is not None:
                registry.stop()
            plane.stop()
    return {
        **measured,
        "push_and_sign_s": set_up_s,
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
    }


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    n = r["images"]
    extra, single = r["cold_extra_ms"], r["cold_single_ms"]
    warm = r["warm_large"]["p50_ms"]
    during, left, share = r["during_small_ms"], r["during_large_left_ms"], r["during_small_share"]
    return [
        {
            "goal": f"cold {n}-image pod, above a cold 1-image pod",
            "measured": f"+{extra:.0f} ms ({r['cold_large_ms']:.0f} ms)",
            "baseline": f"{single:.0f} ms cold 1-image pod",
            "target": "<= +300 ms",
            "met": extra <= 300,
        },
        {
            "goal": f"warm {n}-image pod through the webhook (p50)",
            "measured": f"{warm:.1f} ms (p99 {r['warm_large']['p99_ms']:.1f})",
            "baseline": f"{r['warm_single']['p50_ms']:.1f} ms warm 1-image pod",
            "target": "<= 10 ms",
            "met": warm <= 10,
        },
        {
            "goal": f"registry requests per image, cold {n}-image pod",
            "measured": f"{r['requests_per_image']:.2f}",
            "baseline": f"{r['cold_single_registry_requests']:.0f} for a cold 1-image pod",
            "target": "<= 3",
            "met": r["requests_per_image"] <= 3,
        },
        {
            # Served in turn, the small pod waits for a few of the large pod's requests; in
            # order of arrival it would wait for most of what the large pod had left to do.
            "goal": f"cold 1-image pod while a {n}-image pod verifies (same registry)",
            "measured": f"{during:.0f} ms ({100 * share:.0f}% of the {left:.0f} ms the "
            f"{n}-image pod had left)",
            "baseline": f"{single:.0f} ms alone",
            "target": f"<= 25% of the time the {n}-image pod had left",
            "met": share <= 0.25,
        },
    ]


def table(r: dict[str, Any]) -> str:
    f = direct.fmt
    rows = []
    for index, run in enumerate(r["runs"], 1):
        for case, key in (("cold, 1 image", "single"), (f"cold, {r['images']} images", "large")):
            m = run[key]
            rows.append({
                "run": index, "case": case, "ms": f(m["ms"]),
                "muster cpu ms": f(m["muster_cpu_ms"]), "registry cpu ms": f(m["registry_cpu_ms"]),
                "registry requests": f"{m['registry_requests']:.0f}",
            })  # fmt: skip
        left = run["during"]["large_left_ms"]
        rows.append({
            "run": index,
            "case": f"cold 1 image during {r['images']} images ({left:.0f} ms left)",
            "ms": f(run["during"]["small_ms"]),
            "muster cpu ms": "-", "registry cpu ms": "-", "registry requests": "-",
        })  # fmt: skip
    for case, key in (
        ("warm, 1 image (p50)", "warm_single"),
        ("warm, N images (p50)", "warm_large"),
    ):
        w = r[key]
        rows.append({
            "run": "-", "case": case.replace("N", str(r["images"])), "ms": f(w["p50_ms"]),
            "muster cpu ms": f(w["cpu_ms_per_request"]), "registry cpu ms": "-",
            "registry requests": "0",
        })  # fmt: skip
    columns = ["run", "case", "ms", "muster cpu ms", "registry cpu ms", "registry requests"]
    return direct.table(rows, columns) + (
        f"\nimages pushed and signed in {r['push_and_sign_s']:.0f} s; Ratify's published figures "
        f"for 100 images (2 signatures each): {RATIFY['cold_s']} s cold, {RATIFY['warm_s']} s warm"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="10 images, 1 run")
    parser.add_argument("--runs", type=int, default=None, help="cold runs (default 3, smoke 1)")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    measured = results(args.smoke, args.runs)
    load = ", ".join(f"{x:.1f}" for x in measured["loadavg_at_start"])
    print(f"pods of {measured['images']} images, load average at start {load}")
    print(table(measured))
    rows = [{**g, "met": "met" if g["met"] else "MISSED"} for g in goals(measured)]
    print(direct.table(rows, ["goal", "measured", "baseline", "target", "met"]))
    if args.output is not None:
        args.output.write_text(json.dumps(measured, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

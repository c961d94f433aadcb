"""Where a warm admission's CPU goes, in process: the real handler, gates and verifier.

    python benchmarks/profile_admission.py                 # CPU per request, JSON share
    python benchmarks/profile_admission.py --profile 25    # and the top 25 cProfile entries
    python benchmarks/profile_admission.py --cold 10       # cold: 10 pods of 5 never-seen images
    python benchmarks/profile_admission.py --judge-every-request   # no verdict reused

The webhook app (``admission/server.py``) with every gate ``muster run`` has (built by
``runtime.build_pipeline``) serves plain HTTP on loopback from its own thread; a client in
the main thread sends AdmissionReviews of a 5-container pod shaped exactly like the object a
kube-apiserver v1.36 sends after defaulting (managed fields, tolerations, and so on; about
5 KB), all five images signed by the real cosign and pinned by digest, so every verification
is a cache hit after the warm-up. Policies and the namespace come from an in-memory API
(``objectstore.ObjectStore``, as ``muster check`` uses); the registry is the real local one.

With ``--cold N`` it pushes and signs ``5 N`` more images (distinct digests) and sends N
reviews of 5 of them each, one at a time, so every verification meets an empty cache and
asks the registry; reported per image: the server thread's CPU and the whole process's CPU
(which adds the worker thread that checks signatures, and the client's small share).

The server's CPU is the CPU time of its thread only (``time.thread_time``), so the client's
work is not counted; TLS is not included (``make bench`` measures it over TLS). "json" is the
time of the request body's decode and the response's encode measured on the same bodies in
the same run; the share is of the server thread's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import threading
import time
import timeit
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]  # the real peers are started by the test suite's helpers

from tests import peers  # noqa: E402

from muster.admission import server as webhooks  # noqa: E402
from muster.app import runtime  # noqa: E402
from muster.kernel import crds, scopes  # noqa: E402
from muster.platform import objectstore, registries, statechanges  # noqa: E402

COSIGN_ENV = {"COSIGN_PASSWORD": ""}
NAMESPACE = "bench"


def apiserver_pod(images: list[str]) -> dict[str, Any]:
    """A pod as the apiserver hands it to a validating webhook (captured from v1.36)."""
    now = "2026-11-26T07:24:48Z"
    container_fields: dict[str, Any] = {
        ".": {},
        **{
            f"f:{field}": {}
            for field in (
                "image",
                "imagePullPolicy",
                "name",
                "resources",
                "terminationMessagePath",
                "terminationMessagePolicy",
            )
        },
    }
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": "trainer",
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "creationTimestamp": now,
            "labels": {"app": "trainer"},
            "managedFields": [
                {
                    "manager": "kubectl-create",
                    "operation": "Update",
                    "apiVersion": "v1",
                    "time": now,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {
                            "f:containers": {
                                f'k:{{"name":"c{i}"}}': container_fields for i in range(len(images))
                            },
                            "f:dnsPolicy": {},
                            "f:enableServiceLinks": {},
                            "f:restartPolicy": {},
                            "f:schedulerName": {},
                            "f:securityContext": {},
                            "f:terminationGracePeriodSeconds": {},
                        },
                    },
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": f"c{i}",
                    "image": image,
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
                for i, image in enumerate(images)
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {
                    "key": f"node.kubernetes.io/{taint}",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
                for taint in ("not-ready", "unreachable")
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    }


def admission_review(images: list[str]) -> bytes:
    pod = apiserver_pod(images)
    kind = {"group": "", "version": "v1", "kind": "Pod"}
    resource = {"group": "", "version": "v1", "resource": "pods"}
    return json.dumps(
        {
            "kind": "AdmissionReview",
            "apiVersion": "admission.k8s.io/v1",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": kind,
                "resource": resource,
                "requestKind": kind,
                "requestResource": resource,
                "name": "trainer",
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {
                    "username": "alice",
                    "uid": str(uuid.uuid4()),
                    "groups": ["team-ml", "system:authenticated"],
                },
                "object": pod,
                "oldObject": None,
                "dryRun": False,
                "options": {
                    "kind": "CreateOptions",
                    "apiVersion": "meta.k8s.io/v1",
                    "fieldManager": "kubectl-create",
                },
            },
        },
        separators=(",", ":"),
    ).encode()


def signed_images(
    registry: peers.Registry, work: Path, cold: int = 0
) -> tuple[list[str], list[str], str]:
    """Five warm images and ``cold`` more with distinct digests, all signed; the public key."""
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=COSIGN_ENV
    )
    images = []
    for index in range(5 + cold):
        repository = f"bench/app-{index}" if index < 5 else f"bench/cold-{index}"
        files = None if index < 5 else {"nonce": uuid.uuid4().bytes}
        digest = peers.push_image(registry, repository, "v1", files=files, workdir=work)
        ref = f"{registry.host}/{repository}@{digest}"
        peers.run_tool(
            "cosign", "sign", f"--key={work / 'k.key'}", "--tlog-upload=false",
            "--use-signing-config=false", "--allow-http-registry", "-y", ref, env=COSIGN_ENV,
        )  # fmt: skip
        images.append(ref)
    return images[:5], images[5:], (work / "k.pub").read_text()


def services(registry: peers.Registry, public: str) -> runtime.Services:
    settings = runtime.OperatorSettings(
        webhook=webhooks.WebhookSettings(),
        registry=registries.RegistrySettings(insecure_registries=frozenset({registry.host})),
    )
    store = objectstore.ObjectStore(
        [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NAMESPACE, "labels": {scopes.ENFORCE_LABEL: "true"}},
            },
            {
                "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
                "kind": "ImagePolicy",
                "metadata": {"name": "bench", "generation": 1},
                "spec": {
                    "images": [f"{registry.host}/bench/**"],
                    "authorities": [{"name": "bench", "key": {"data": public}}],
                },
            },
        ]
    )
    return runtime.Services(
        settings=settings, kube=store, registries=registries.RegistryClient(settings.registry)
    )


class Server:
    """The webhook app on its own event loop thread, so its CPU can be told apart."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.thread_cpu = 0.0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.profiler: cProfile.Profile | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = runner.addresses[0][1]  # the port the OS chose for port 0
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(runner.cleanup())
            self.loop.close()

    def cpu(self) -> float:
        """The server thread's CPU seconds so far (read on that thread)."""
        done = threading.Event()
        seen: list[float] = []

        def read() -> None:
            seen.append(time.thread_time())
            done.set()

        self.loop.call_soon_threadsafe(read)
        done.wait(10)
        return seen[0]

    def profile(self, on: bool) -> None:
        done = threading.Event()

        def toggle() -> None:
            if on:
                self.profiler = cProfile.Profile()
                self.profiler.enable()
            elif self.profiler is not None:
                self.profiler.disable()
            done.set()

        self.loop.call_soon_threadsafe(toggle)
        done.wait(10)

    def __enter__(self) -> Server:
        self._thread.start()
        if not self._ready.wait(30):
            raise SystemExit("the webhook server did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def load(url: str, body: bytes, requests: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    async with aiohttp.ClientSession(
        headers={"Content-Type": "application/json"},
        connector=aiohttp.TCPConnector(limit=concurrency),
    ) as session:
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                async with session.post(f"{url}/validate/enforce", data=body) as response:
                    answer = await response.json()
                latencies.append(time.perf_counter() - started)
                if not answer["response"]["allowed"]:
                    raise SystemExit(f"denied: {answer['response'].get('status')}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def json_cost(body: bytes, response: bytes) -> dict[str, float]:
    """Microseconds to decode the review and encode the answer, as the handler does."""
    answer = json.loads(response)
    runs = 2000
    decode = min(timeit.repeat(lambda: json.loads(body), number=runs, repeat=5)) / runs
    encode = min(timeit.repeat(lambda: json.dumps(answer), number=runs, repeat=5)) / runs
    return {"decode_us": decode * 1e6, "encode_us": encode * 1e6}


def measure(
    server: Server, body: bytes, requests: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    """Median over ``rounds`` of server CPU per request, and the pooled latencies."""
    cpu_per_request: list[float] = []
    latencies: list[float] = []
    for _ in range(rounds):
        before = server.cpu()
        latencies += asyncio.run(load(server.url, body, requests, concurrency))
        cpu_per_request.append((server.cpu() - before) / requests)
    latencies.sort()
    return {
        "server_cpu_us_per_request": statistics.median(cpu_per_request) * 1e6,
        "server_cpu_us_rounds": [round(c * 1e6, 1) for c in cpu_per_request],
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


@contextlib.contextmanager
def webhook(work: Path, cold: int = 0) -> Iterator[tuple[Server, list[str], list[str]]]:
    (work / "registry").mkdir()
    with peers.registry(work / "registry") as registry:
        images, fresh, public = signed_images(registry, work, cold)
        shared = services(registry, public)
        pipeline = runtime.build_pipeline(shared)
        with Server(webhooks.build_app(pipeline)) as server:
            try:
                yield server, images, fresh
            finally:
                asyncio.run_coroutine_threadsafe(shared.close(), server.loop).result(10)


async def cold_reviews(server: Server, bodies: list[bytes]) -> list[tuple[float, float, float]]:
    """(latency, server thread CPU, process CPU) of each review, sent one at a time."""
    seen = []
    async with aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        for body in bodies:
            thread_before, process_before = server.cpu(), time.process_time()
            started = time.perf_counter()
            async with session.post(f"{server.url}/validate/enforce", data=body) as response:
                answer = await response.json()
            latency = time.perf_counter() - started
            if not answer["response"]["allowed"]:
                raise SystemExit(f"denied: {answer['response'].get('status')}")
            seen.append(
                (latency, server.cpu() - thread_before, time.process_time() - process_before)
            )
    return seen


def measure_cold(server: Server, fresh: list[str], profile: int) -> None:
    """One 5-image review at a time, every image never seen before."""
    bodies = [admission_review(fresh[i : i + 5]) for i in range(0, len(fresh) - 4, 5)]
    if profile:
        server.profile(True)
    seen = asyncio.run(cold_reviews(server, bodies))
    if profile:
        server.profile(False)
    latencies = sorted(latency for latency, _, _ in seen)
    thread_cpu = sum(cpu for _, cpu, _ in seen) / len(seen)
    process_cpu = sum(cpu for _, _, cpu in seen) / len(seen)
    print(f"cold: {len(bodies)} reviews of 5 never-seen signed images, one at a time")
    print(
        f"per image: server thread CPU {1000 * thread_cpu / 5:.2f} ms, "
        f"process CPU {1000 * process_cpu / 5:.2f} ms (means)"
    )
    print(
        f"per review: latency p50 {1000 * latencies[len(latencies) // 2]:.2f} ms, "
        f"max {1000 * latencies[-1]:.2f} ms (client)"
    )
    if profile:
        stats = pstats.Stats(server.profiler)
        stats.sort_stats("tottime").print_stats(profile)
        stats.sort_stats("cumulative").print_stats(profile)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, help="print the top N by own time")
    parser.add_argument("--cold", type=int, default=0, help="N cold 5-image reviews instead")
    parser.add_argument(
        "--judge-every-request",
        action="store_true",
        help="run the gates for every request (no verdict reused, admission/verdicts.py)",
    )
    args = parser.parse_args()
    if not args.judge_every_request:
        # No watch runs here: every change of what the gates read is a read of the in-memory
        # API or of the registry, which move the epoch verdicts are reused under.
        statechanges.no_watches()
    with (
        tempfile.TemporaryDirectory(prefix="muster-profile-") as scratch,
        webhook(Path(scratch), 5 * args.cold) as (server, images, fresh),
    ):
        if args.cold:
            # One warm review first: policies, namespace and connections are in place.
            asyncio.run(load(server.url, admission_review(images), 20, 1))
            measure_cold(server, fresh, args.profile)
            return 0
        body = admission_review(images)
        asyncio.run(load(server.url, body, 200, args.concurrency))  # warm: every image cached
        result = measure(server, body, args.requests, args.concurrency, args.rounds)
        answer = json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
             "response": {"uid": str(uuid.uuid4()), "allowed": True}}
        ).encode()  # fmt: skip
        cost = json_cost(body, answer)
        share = (cost["decode_us"] + cost["encode_us"]) / result["server_cpu_us_per_request"]
        print(f"review: {len(body)} bytes, 5 containers, warm, concurrency {args.concurrency}")
        print(
            f"server CPU per request: {result['server_cpu_us_per_request']:.0f} us (median of "
            f"{args.rounds} rounds of {args.requests}: {result['server_cpu_us_rounds']})"
        )
        print(f"latency p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms (client)")
        reused = server.app[webhooks._PIPELINE].verdicts
        print(f"verdicts reused: {reused.hits if reused is not None else 0}")
        print(
            f"json: decode {cost['decode_us']:.1f} us + encode {cost['encode_us']:.1f} us "
            f"= {100 * share:.1f}% of the server's CPU per request"
        )
        if args.profile:
            server.profile(True)
            asyncio.run(load(server.url, body, args.requests, args.concurrency))
            server.profile(False)
            stats = pstats.Stats(server.profiler)
            stats.sort_stats("tottime").print_stats(args.profile)
            stats.sort_stats("cumulative").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The tail of pod creation: consecutive rounds, Muster's namespace against a baseline one.

    python benchmarks/tail.py            # 10 rounds at 10 and 50 clients, a few minutes
    python benchmarks/tail.py --smoke    # one round, a few pods: CI runs it so it cannot rot
    python benchmarks/tail.py --rounds 5 --pods 300 --idle 80

Its own peers: a control plane (etcd, kube-apiserver, controller-manager), Debian's
docker-registry, and ``muster run`` with its webhooks registered, an ImagePolicy trusting the
key of one signed image every pod runs (so each admission really looks up a cached
verification). Each round creates pods at 10 and then 50 concurrent clients in a namespace no
webhook selects (the baseline) and in one Muster judges, the two taking turns (the order flips
every round), and reports the slowest pod of each, how many took over a second and how many
a webhook refused (a gate cut off at its deadline fails closed: the worst kind of tail).

Which side waits: before and after every batch the apiserver's ``/metrics`` (its own clock
around each webhook call, ``apiserver_admission_webhook_admission_duration_seconds``) and
Muster's (``muster_admission_request_duration_seconds``, from a request's arrival in the
handler to its answer) are read, so a slow pod creation shows whether the apiserver waited on
the webhook call, and if so whether Muster's handler was slow or the wait was before it (the
connection, TLS, the event loop). A probe asks ``muster run``'s ``/healthz`` every 100 ms during
each batch: its slowest answer is the event loop's worst lag. ``--idle S`` pauses S seconds
before each round, longer than a server's keep-alive timeout, to show what becomes of the
apiserver's idle webhook connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]  # the real peers are started by the test suite's helpers

import admission as direct  # noqa: E402
import judged  # noqa: E402
from tests import peers  # noqa: E402

from muster.app import localoperator  # noqa: E402
from muster.kernel import crds  # noqa: E402
from muster.platform import controlplane, kubesetup  # noqa: E402

RESULTS = HERE / "results"
OWN_NAMESPACE = "muster-tail"
JUDGED, BASELINE = "tail-judged", "tail-baseline"
SLOW_S = 1.0
COSIGN_ENV = {"COSIGN_PASSWORD": ""}
APISERVER_WEBHOOK = "apiserver_admission_webhook_admission_duration_seconds"
MUSTER_REQUEST = "muster_admission_request_duration_seconds"
MUSTER_GATE = "muster_admission_duration_seconds"  # per gate: which one waited
COUNTERS = (
    "apiserver_admission_webhook_request_total",
    "apiserver_admission_webhook_rejection_count",
)


def profile(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"rounds": 1, "clients": [10, 50], "pods": {10: 20, 50: 50}, "idle": 0.0}
    return {"rounds": 10, "clients": [10, 50], "pods": {10: 150, 50: 300}, "idle": 0.0}


# -- the peers --------------------------------------------------------------------------------


def populate(plane: controlplane.ControlPlane, registry: peers.Registry, work: Path) -> str:
    """One signed image and an ImagePolicy trusting its key; returns the image reference."""
    peers.run_tool(
        "cosign", "generate-key-pair", f"--output-key-prefix={work / 'k'}", env=COSIGN_ENV
    )
    digest = peers.push_image(registry, "tail/app", "v1", workdir=work)
    image = f"{registry.host}/tail/app@{digest}"
    peers.run_tool(
        "cosign", "sign", f"--key={work / 'k.key'}", "--tlog-upload=false",
        "--use-signing-config=false", "--allow-http-registry", "-y", image, env=COSIGN_ENV,
    )  # fmt: skip
    body = {
        "apiVersion": f"{crds.GROUP}/{crds.VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": "tail"},
        "spec": {
            "images": [f"{registry.host}/tail/**"],
            "authorities": [{"name": "tail", "key": {"data": (work / "k.pub").read_text()}}],
        },
    }
    from kubernetes import client

    with kubesetup.api_client(plane.kubeconfig) as api:
        objects: Any = client.CustomObjectsApi(api)
        objects.create_cluster_custom_object(crds.GROUP, crds.VERSION, "imagepolicies", body)
        deadline = time.monotonic() + 60
        while True:
            status = (
                objects.get_cluster_custom_object(
                    crds.GROUP, crds.VERSION, "imagepolicies", "tail"
                ).get("status")
                or {}
            )
            if any(c["type"] == "Compiled" for c in status.get("conditions") or []):
                break
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the ImagePolicy to compile")
            time.sleep(0.2)
    return image


# -- metrics of both sides --------------------------------------------------------------------


def scrape(url: str, context: ssl.SSLContext | None) -> dict[tuple[str, tuple[Any, ...]], float]:
    """Samples of the histograms and counters this benchmark reads, by (name, labels)."""
    with urllib.request.urlopen(url, context=context, timeout=10) as response:  # noqa: S310  # loopback
        text = response.read().decode()
    wanted = (APISERVER_WEBHOOK, MUSTER_REQUEST, MUSTER_GATE, *COUNTERS)
    out: dict[tuple[str, tuple[Any, ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(wanted):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _sum(delta: dict[tuple[str, tuple[Any, ...]], float], name: str, **match: str) -> float:
    return sum(
        value
        for (key, labels), value in delta.items()
        if key == name and all(_same(dict(labels).get(k), v) for k, v in match.items())
    )


def _same(label: str | None, wanted: str) -> bool:
    """Label values equal, bucket bounds compared as numbers (the apiserver writes "1")."""
    if label is None:
        return False
    try:
        return float(label) == float(wanted)
    except ValueError:
        return label == wanted


def sides(
    before: dict[tuple[str, tuple[Any, ...]], float],
    after: dict[tuple[str, tuple[Any, ...]], float],
) -> dict[str, Any]:
    """What each side saw between two scrapes: webhook calls, their mean, those over 1 s."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    api_count = _sum(delta, f"{APISERVER_WEBHOOK}_count")
    muster_count = _sum(delta, f"{MUSTER_REQUEST}_count")
    return {
        "apiserver_webhook_calls": api_count,
        "apiserver_webhook_mean_ms": 1000 * _sum(delta, f"{APISERVER_WEBHOOK}_sum") / api_count
        if api_count
        else 0.0,
        # Bucket bounds: the apiserver's are 0.005 0.025 0.1 0.5 1 2.5 10 25 s.
        "apiserver_webhook_over_1s": api_count
        - _sum(delta, f"{APISERVER_WEBHOOK}_bucket", le="1.0"),
        "apiserver_webhook_over_0_5s": api_count
        - _sum(delta, f"{APISERVER_WEBHOOK}_bucket", le="0.5"),
        "apiserver_webhook_requests": _sum(delta, COUNTERS[0]),
        # Answers other than HTTP 200 (code "0": no answer at all, a connection error).
        "apiserver_webhook_not_200": _sum(delta, COUNTERS[0])
        - _sum(delta, COUNTERS[0], code="200"),
        "apiserver_webhook_rejections": _sum(delta, COUNTERS[1]),
        "muster_requests": muster_count,
        "muster_mean_ms": 1000 * _sum(delta, f"{MUSTER_REQUEST}_sum") / muster_count
        if muster_count
        else 0.0,
        "muster_over_1s": muster_count - _sum(delta, f"{MUSTER_REQUEST}_bucket", le="1.0"),
        "muster_over_0_5s": muster_count - _sum(delta, f"{MUSTER_REQUEST}_bucket", le="0.5"),
        "gates_over_0_5s": {
            gate: over
            for gate in sorted(
                {dict(labels)["gate"] for key, labels in delta if key == f"{MUSTER_GATE}_count"}
            )
            if (
                over := _sum(delta, f"{MUSTER_GATE}_count", gate=gate)
                - _sum(delta, f"{MUSTER_GATE}_bucket", gate=gate, le="0.5")
            )
        },
    }


class Probe:
    """``GET /healthz`` on ``muster run`` every 100 ms from a thread: the slowest answer of a
    batch is the worst the event loop (or the process) lagged while that batch ran."""

    def __init__(self, operator: localoperator.LocalOperator) -> None:
        self.url = f"{operator.url}/healthz"
        self.context = ssl.create_default_context(cafile=str(operator.ca_file))
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            started = time.perf_counter()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url, context=self.context, timeout=10) as r,  # noqa: S310
            ):
                r.read()
            self.worst = max(self.worst, time.perf_counter() - started)

    def take(self) -> float:
        worst, self.worst = self.worst, 0.0
        return worst

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# -- the rounds -------------------------------------------------------------------------------


async def batch(
    session: aiohttp.ClientSession, url: str, image: str, pods: int, concurrency: int
) -> dict[str, Any]:
    """A closed loop of ``pods`` creations; each pod's time and, for slow ones, when it began."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "tail-"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    samples: list[float] = []
    slow: list[dict[str, Any]] = []
    refused: list[str] = []
    remaining = pods

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            began, wall = time.perf_counter(), time.time()
            async with session.post(url, json=body) as response:
                answer = await response.read()
            seconds = time.perf_counter() - began
            samples.append(seconds)
            if response.status == 403 and b"admission webhook" in answer:
                # Refused by a webhook (a gate cut off at its deadline fails closed): counted
                # and kept, as the worst kind of tail, rather than ending the run.
                refused.append(json.loads(answer).get("message", "")[:300])
                continue
            if response.status != 201:
                raise SystemExit(f"pod create: {response.status} {answer.decode()[:500]}")
            if seconds > SLOW_S:
                name = json.loads(answer)["metadata"]["name"]
                slow.append({"pod": name, "at": wall, "ms": 1000 * seconds})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall_s = time.perf_counter() - started
    return {
        **direct.summary(samples, wall_s),
        "over_1s": sum(1 for s in samples if s > SLOW_S),
        "refused": len(refused),
        "refusals": refused[:3],
        "slow": slow,
        "samples": samples,
    }


async def rounds(
    plane: controlplane.ControlPlane,
    operator: localoperator.LocalOperator,
    image: str,
    p: dict[str, Any],
) -> list[dict[str, Any]]:
    api_metrics = f"{plane.url}/metrics"
    context = plane.ssl_context()
    out = []
    with Probe(operator) as probe:
        for index in range(p["rounds"]):
            if p["idle"]:
                await asyncio.sleep(p["idle"])
            this: dict[str, Any] = {"round": index + 1, "batches": []}
            order = (BASELINE, JUDGED) if index % 2 == 0 else (JUDGED, BASELINE)
            for concurrency in p["clients"]:
                for namespace in order:
                    url = f"{plane.url}/api/v1/namespaces/{namespace}/pods"
                    # A new client each batch, as independent users would be.
                    async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=context, limit=concurrency)
                    ) as session:
                        if index == 0:  # connections and caches warm before the first count
                            await batch(session, url, image, min(20, concurrency), concurrency)
                        before = (scrape(api_metrics, context), scrape(operator.metrics_url, None))
                        probe.take()
                        measured = await batch(
                            session, url, image, p["pods"][concurrency], concurrency
                        )
                        lag = probe.take()
                        after = (scrape(api_metrics, context), scrape(operator.metrics_url, None))
                    seen = sides(before[0], after[0]) | {
                        k: v
                        for k, v in sides(before[1], after[1]).items()
                        if k.startswith(("muster", "gates"))
                    }
                    this["batches"].append({
                        "namespace": "muster" if namespace == JUDGED else "baseline",
                        "concurrency": concurrency,
                        **measured,
                        **seen,
                        "probe_worst_ms": 1000 * lag,
                    })  # fmt: skip
            out.append(this)
            print(f"  round {index + 1}: {summarise_round(this)}", file=sys.stderr)
    return out


def summarise_round(r: dict[str, Any]) -> str:
    return "; ".join(
        f"{b['namespace']}@{b['concurrency']} max {b['max_ms']:.0f} ms >1s {b['over_1s']}"
        for b in r["batches"]
    )


def webhook_errors(log: Path) -> list[str]:
    """The apiserver's own complaints about calling webhooks (failed calls, timeouts, EOF)."""
    if not log.exists():
        return []
    words = ("failed calling webhook", "Failed calling webhook", "EOF", "connection reset")
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if any(w in line for w in words)
    ]


def results(
    smoke: bool, overrides: dict[str, Any] | None = None, keep: Path | None = None
) -> dict[str, Any]:
    p = profile(smoke) | (overrides or {})
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="muster-tail-") as scratch:
        work = Path(scratch)
        with judged.cluster(work, OWN_NAMESPACE, JUDGED, BASELINE) as (plane, registry, operator):
            image = populate(plane, registry, work)
            measured = asyncio.run(rounds(plane, operator, image, p))
            apiserver_log = work / "control-plane" / "logs" / "kube-apiserver.log"
            errors = webhook_errors(apiserver_log)
            if keep is not None:  # the peers' logs, for reading past the numbers
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(apiserver_log, keep / "kube-apiserver.log")
                shutil.copy(operator.log, keep / "muster.log")
    return summarise(measured, p) | {
        "apiserver_webhook_errors": errors[:20],
        "apiserver_webhook_error_count": len(errors),
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
    }


def summarise(measured: list[dict[str, Any]], p: dict[str, Any]) -> dict[str, Any]:
    """Per round and overall; the pooled samples give the ratios and are then dropped."""
    pooled: dict[tuple[str, int], list[float]] = {}
    for r in measured:
        for b in r["batches"]:
            pooled.setdefault((b["namespace"], b["concurrency"]), []).extend(b.pop("samples"))
    overall = []
    for concurrency in p["clients"]:
        base = direct.summary(pooled[("baseline", concurrency)], 1.0)
        judged = direct.summary(pooled[("muster", concurrency)], 1.0)
        overall.append({
            "concurrency": concurrency,
            "baseline_p50_ms": base["p50_ms"], "muster_p50_ms": judged["p50_ms"],
            "baseline_p99_ms": base["p99_ms"], "muster_p99_ms": judged["p99_ms"],
            "p50_ratio": judged["p50_ms"] / base["p50_ms"],
            "p99_ratio": judged["p99_ms"] / base["p99_ms"],
        })  # fmt: skip
    return {
        "profile": {**p, "pods": {str(k): v for k, v in p["pods"].items()}},
        "rounds": measured,
        "overall": overall,
    }


def unexplained(r: dict[str, Any]) -> list[str]:
    """Rounds with a Muster pod over 1 s while the baseline had none at that concurrency, or
    with a Muster pod refused (a gate that ran out of time fails closed)."""
    out = []
    for each in r["rounds"]:
        for concurrency in r["profile"]["clients"]:
            batches = {
                b["namespace"]: b for b in each["batches"] if b["concurrency"] == concurrency
            }
            muster, baseline = batches["muster"], batches["baseline"]
            if muster.get("refused") or (muster["over_1s"] and not baseline["over_1s"]):
                out.append(f"round {each['round']} at {concurrency}")
    return out


def goals(r: dict[str, Any]) -> list[dict[str, Any]]:
    top = max(r["overall"], key=lambda o: o["concurrency"])
    rounds_n = len(r["rounds"])
    bad = unexplained(r)
    clients = " and ".join(str(c) for c in r["profile"]["clients"])
    base_slow = sum(
        b["over_1s"]
        for each in r["rounds"]
        for b in each["batches"]
        if b["namespace"] == "baseline"
    )
    return [
        {
            "goal": f"no Muster pod creation > 1 s unless the baseline had one ({rounds_n} rounds"
            f" at {clients} clients)",
            "measured": f"{len(bad)} rounds" + (f" ({', '.join(bad)})" if bad else ""),
            "baseline": f"{base_slow} baseline pods > 1 s",
            "target": "0 rounds",
            "met": not bad,
        },
        {
            "goal": f"tail: p99 ratio at {top['concurrency']} clients over interleaved rounds",
            "measured": f"{top['p99_ratio']:.2f}x ({top['muster_p99_ms']:.0f} ms)",
            "baseline": f"{top['baseline_p99_ms']:.0f} ms no-webhook namespace",
            "target": "<= 1.10x",
            "met": top["p99_ratio"] <= 1.10,
        },
        {
            "goal": f"tail: p50 ratio at {top['concurrency']} clients over interleaved rounds",
            "measured": f"{top['p50_ratio']:.2f}x ({top['muster_p50_ms']:.1f} ms)",
            "baseline": f"{top['baseline_p50_ms']:.1f} ms no-webhook namespace",
            "target": "<= 1.15x",
            "met": top["p50_ratio"] <= 1.15,
        },
    ]


def table(r: dict[str, Any]) -> str:
    f = direct.fmt
    rows = []
    for each in r["rounds"]:
        for b in each["batches"]:
            rows.append({
                "round": each["round"], "clients": b["concurrency"], "namespace": b["namespace"],
                "p50": f(b["p50_ms"]), "p99": f(b["p99_ms"]), "max": f(b["max_ms"]),
                "pods > 1 s": b["over_1s"],
                "refused": b["refused"],
                "apiserver webhook mean": f(b["apiserver_webhook_mean_ms"]),
                "apiserver webhook > 1 s": f"{b['apiserver_webhook_over_1s']:.0f}",
                "webhook errors": f"{b['apiserver_webhook_not_200']:.0f}",
                "muster mean": f(b["muster_mean_ms"]) if b["muster_requests"] else "-",
                "muster > 1 s": f"{b['muster_over_1s']:.0f}",
                "loop lag max": f(b["probe_worst_ms"]),
                "gates > 0.5 s": " ".join(
                    f"{gate}:{n:.0f}" for gate, n in b["gates_over_0_5s"].items()
                )
                or "-",
            })  # fmt: skip
    overall = [
        {
            "clients": o["concurrency"],
            "baseline p50": f(o["baseline_p50_ms"]),
            "muster p50": f(o["muster_p50_ms"]),
            "p50 ratio": f"{o['p50_ratio']:.2f}x",
            "baseline p99": f(o["baseline_p99_ms"]),
            "muster p99": f(o["muster_p99_ms"]),
            "p99 ratio": f"{o['p99_ratio']:.2f}x",
        }
        for o in r["overall"]
    ]
    return "\n".join([
        "pod creation per round (ms); webhook columns: the apiserver's clock around its webhook"
        " calls vs Muster's handler; loop lag: slowest /healthz of muster run during the batch",
        direct.table(rows, list(rows[0])),
        "",
        "over all rounds",
        direct.table(overall, list(overall[0])),
        "",
        f"apiserver log: {r['apiserver_webhook_error_count']} lines about failed webhook calls"
        " (a retried or failed call would be named there)",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="one round, a few pods")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--pods", type=int, default=None, help="pods per batch at 50 clients")
    parser.add_argument("--idle", type=float, default=None, help="seconds to pause before a round")
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the peers' logs here")
    args = parser.parse_args()
    overrides: dict[str, Any] = {}
    if args.rounds is not None:
        overrides["rounds"] = args.rounds
    if args.pods is not None:
        overrides["pods"] = {10: max(1, args.pods // 2), 50: args.pods}
    if args.idle is not None:
        overrides["idle"] = args.idle
    r = results(args.smoke, overrides, args.keep_logs)
    print(table(r))
    print()
    rows = [{**g, "met": "met" if g["met"] else "MISSED"} for g in goals(r)]
    print(direct.table(rows, ["goal", "measured", "baseline", "target", "met"]))
    output = args.output or RESULTS / ("tail-smoke.json" if args.smoke else "tail.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(r, indent=2))
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

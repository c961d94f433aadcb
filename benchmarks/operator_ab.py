"""Two builds of ``muster run`` against each other in one run: cold admissions and pod events.

    python benchmarks/operator_ab.py --baseline-source DIR [--rounds 2] [--pods 300]
    python benchmarks/operator_ab.py                  # the working tree only

``DIR`` holds another copy of the ``muster`` package (for example ``git archive <commit>
operator | tar -x -C DIR`` makes ``DIR/operator/muster``); its ``muster run`` is started with
``PYTHONPATH=DIR/operator``, the working tree's without. The peers are started once and shared:
a local etcd + kube-apiserver + controller-manager, Debian's registry, images pushed with crane
and signed by the real cosign, an ImagePolicy trusting that key. The two builds take turns,
``--rounds`` times each (A B, then B A, and so on), so drifting machine load hits both alike;
each turn starts a fresh ``muster run`` (empty caches), registers its webhooks and measures:

- *cold*: ``--cold`` reviews of a 1-container pod and as many of a 5-container pod, each naming
  images this ``muster run`` never verified (distinct digests, signed), one at a time, straight
  to the webhook over TLS; latency and the CPU of the ``muster run`` process per review (with
  ``--warm N``, after N warm reviews of a 5-container pod, as the suite sends them first);
- *pod events*: ``--pods`` pods created through the apiserver at ``--clients`` concurrent
  clients, in a namespace no webhook selects (so ``muster run`` only sees their watch events)
  and then in one it judges; latency, and CPU per pod of ``muster run`` and the apiserver.

Each turn uses namespaces of its own, deleted after its operator stops, so the next operator's
startup does not list the previous turn's pods.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # the real peers are started by the test helpers

import run as suite  # noqa: E402
from tests import peers  # noqa: E402

from muster.app import localoperator  # noqa: E402
from muster.kernel import scopes  # noqa: E402
from muster.platform import controlplane, kubesetup  # noqa: E402

OWN_NAMESPACE = "muster-ab"


def start_operator(
    plane: controlplane.ControlPlane, registry: peers.Registry, work: Path, source: Path | None
) -> localoperator.LocalOperator:
    saved = os.environ.get("PYTHONPATH")
    if source is not None:
        os.environ["PYTHONPATH"] = str(source / "operator")
    try:
        operator = localoperator.start(
            plane,
            own_namespace=OWN_NAMESPACE,
            workdir=work,
            extra_args=(f"--insecure-registry={registry.host}",),
        )
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    localoperator.register_webhooks(plane, operator, own_namespace=OWN_NAMESPACE)
    return operator


def fresh_images(registry: peers.Registry, work: Path, key: Path, count: int) -> list[str]:
    refs = []
    for index in range(count):
        repository = f"bench/cold-{uuid.uuid4().hex[:8]}-{index}"
        digest = peers.push_image(
            registry, repository, "v1", files={"nonce": uuid.uuid4().bytes}, workdir=work
        )
        ref = f"{registry.host}/{repository}@{digest}"
        suite.sign(key, ref)
        refs.append(ref)
    return refs


async def cold(
    operator: localoperator.LocalOperator,
    images: list[str],
    count: int,
    warm: list[str] | None = None,
    warm_requests: int = 0,
) -> dict[str, Any]:
    webhook = suite.Webhook(operator)
    try:
        await webhook.call(json.dumps(suite.pod_review(images[:1])).encode())  # connected
        if warm and warm_requests:
            # As the suite does before its cold requests: a warm load first (verdicts reused,
            # caches filled), so the cold ones meet a process that has served for a while.
            await suite.closed(
                webhook, json.dumps(suite.pod_review(warm)).encode(), warm_requests, 10
            )
        singles = [json.dumps(suite.pod_review([ref])).encode() for ref in images[1 : 1 + count]]
        rest = images[1 + count :]
        fives = [
            json.dumps(suite.pod_review(rest[5 * i : 5 * i + 5])).encode() for i in range(count)
        ]
        return {
            "pod, 1 container": await suite.cold(webhook, singles),
            "pod, 5 containers": await suite.cold(webhook, fives),
        }
    finally:
        await webhook.session.close()


def wait_gone(api: client.ApiClient, names: list[str], timeout: float = 120.0) -> None:
    core: Any = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {ns.metadata.name for ns in core.list_namespace().items} & set(names)
        if not left:
            return
        time.sleep(0.5)
    raise SystemExit(f"namespaces not deleted in {timeout:.0f}s: {sorted(left)}")


def turn(
    plane: controlplane.ControlPlane,
    registry: peers.Registry,
    work: Path,
    name: str,
    source: Path | None,
    images: dict[str, Any],
    cold_images: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    plain, judged = f"plain-{tag}", f"judged-{tag}"
    with kubesetup.api_client(plane.kubeconfig) as api:
        kubesetup.ensure_namespace(api, plain)
        kubesetup.ensure_namespace(api, judged, {scopes.ENFORCE_LABEL: "true"})
    operator = start_operator(plane, registry, work / f"operator-{tag}", source)
    try:
        time.sleep(3)  # the apiserver picks the webhook configurations up through an informer
        result: dict[str, Any] = {"build": name}
        result["cold"] = asyncio.run(
            cold(operator, cold_images, args.cold, images["warm"], args.warm)
        )
        processes = {"apiserver": plane.state.pids["kube-apiserver"], "muster": operator.pid}
        for label, namespace in (("plain", plain), ("judged", judged)):
            result[label] = asyncio.run(
                suite.create_pods(
                    plane, namespace, images["warm"][0], args.pods, args.clients, processes
                )
            )
    finally:
        operator.stop()
    with kubesetup.api_client(plane.kubeconfig) as api:
        core: Any = client.CoreV1Api(api)
        for namespace in (plain, judged):
            core.delete_namespace(namespace)
        wait_gone(api, [plain, judged])
    return result


def report(turns: list[dict[str, Any]]) -> str:
    lines = []
    builds = list(dict.fromkeys(t["build"] for t in turns))
    for build in builds:
        mine = [t for t in turns if t["build"] == build]
        lines.append(f"{build} ({len(mine)} turns)")
        for case in ("pod, 1 container", "pod, 5 containers"):
            p50 = [t["cold"][case]["p50_ms"] for t in mine]
            p99 = [t["cold"][case]["p99_ms"] for t in mine]
            cpu = [t["cold"][case]["cpu_ms_per_request"] for t in mine]
            lines.append(
                f"  cold {case}: p50 {fmt(p50)} ms, p99 {fmt(p99)} ms, "
                f"muster cpu {fmt(cpu)} ms/review"
            )
        for label in ("plain", "judged"):
            lines.append(
                f"  pods in the {label} namespace: p50 {fmt([t[label]['p50_ms'] for t in mine])}"
                f" ms, p99 {fmt([t[label]['p99_ms'] for t in mine])} ms, muster cpu "
                f"{fmt([t[label]['muster_cpu_ms_per_pod'] for t in mine])} ms/pod, apiserver cpu "
                f"{fmt([t[label]['apiserver_cpu_ms_per_pod'] for t in mine])} ms/pod"
            )
        ratios = [t["judged"]["p99_ms"] / t["plain"]["p99_ms"] for t in mine]
        lines.append(f"  p99 ratio judged / plain: {fmt(ratios, 'x')}")
    return "\n".join(lines)


def fmt(values: list[float], unit: str = "") -> str:
    """The median, and every turn's value in brackets."""
    each = ", ".join(f"{v:.2f}{unit}" for v in values)
    return f"{statistics.median(values):.2f}{unit} [{each}]"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline-source", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pods", type=int, default=300)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--cold", type=int, default=10, help="reviews per cold case and turn")
    parser.add_argument(
        "--warm",
        type=int,
        default=0,
        help="warm 5-container reviews (10 at a time) sent before the cold ones, as the suite does",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    builds: list[tuple[str, Path | None]] = [("working tree", None)]
    if args.baseline_source is not None:
        if not (args.baseline_source / "operator" / "muster" / "__init__.py").is_file():
            raise SystemExit(f"{args.baseline_source}/operator/muster is not a muster package")
        builds.insert(0, ("baseline", args.baseline_source.resolve()))
    turns = []
    with tempfile.TemporaryDirectory(prefix="muster-ab-") as scratch:
        work = Path(scratch)
        plane = controlplane.start(work / "control-plane")
        (work / "registry").mkdir()
        try:
            with peers.registry(work / "registry") as registry:
                localoperator.install_crds(plane)
                with kubesetup.api_client(plane.kubeconfig) as api:  # where the cold reviews are
                    kubesetup.ensure_namespace(api, suite.JUDGED, {scopes.ENFORCE_LABEL: "true"})
                # The same policies, GPU node and Model as the suite; the operator of the
                # first turn compiles the ImagePolicy.
                first = start_operator(plane, registry, work / "operator-setup", None)
                try:
                    images = suite.populate(plane, registry, work, 0)
                finally:
                    first.stop()
                per_turn = 1 + args.cold * 6
                with suite.timer(f"push and sign {per_turn} images"):
                    # Every turn starts a new muster run, whose caches are empty: the same
                    # images are cold again for each (distinct ones within a turn).
                    cold_images = fresh_images(registry, work, images["key"], per_turn)
                order = [
                    build
                    for round_ in range(args.rounds)
                    for build in (builds if round_ % 2 == 0 else builds[::-1])
                ]  # A B B A A B ...: neither build always goes first
                for index, (name, source) in enumerate(order):
                    with suite.timer(f"turn {index + 1}: {name}"):
                        turns.append(
                            turn(plane, registry, work, name, source, images, cold_images, args)
                        )
        finally:
            plane.stop()
    print(report(turns))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(turns, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

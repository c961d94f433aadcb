"""One re-list of the GPU index, as ``muster run`` does it every 2.5 s while GPU pods are judged:
the apiserver's list of 1,000 nodes carrying the GPU Feature Discovery labels of an H100 node
(the cluster benchmark's nodes), parsed and taken into the index. The baseline, timed in the
same run, is the index reading every node afresh (every re-list before nodes were kept by
resourceVersion, and still the first one); the other is a re-list in which nothing changed.
Both run in the event loop's thread, so their time is time every admission waits::

    python benchmarks/gpu_relist.py [--nodes 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import cluster_scale  # noqa: E402

from muster.gpu import nodes as gpunodes  # noqa: E402
from muster.platform import kubeapi  # noqa: E402


def listing(count: int) -> bytes:
    """The list as the apiserver sends it: each node's labels and the managed fields that
    record who set them."""
    labels = cluster_scale.h100_labels()
    items: list[dict[str, Any]] = []
    for i in range(count):
        name = f"gpu-{i:04d}"
        items.append({
            "metadata": {
                "name": name, "uid": f"uid-{i}", "resourceVersion": str(1000 + i),
                "labels": {**labels, "kubernetes.io/hostname": name},
                "managedFields": [{
                    "manager": "python", "operation": "Update", "apiVersion": "v1",
                    "time": "2026-12-07T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {f"f:{k}": {} for k in labels}}},
                }],
            },
        })  # fmt: skip
    return json.dumps({"kind": "NodeList", "items": items}).encode()


def relist_ms(index: gpunodes.GPUIndex, raw: bytes) -> float:
    started = time.perf_counter()
    index.nodes = index._relisted(json.loads(raw)["items"])
    return 1000 * (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    raw = listing(args.nodes)
    unused = kubeapi.KubeApi(kubeapi.Credentials(host="https://unused", ca_file=None))
    afresh: list[float] = []
    unchanged: list[float] = []
    for _ in range(args.rounds):  # in turns, so a busy moment hits both alike
        index = gpunodes.GPUIndex(unused)
        afresh.append(relist_ms(index, raw))
        unchanged.append(relist_ms(index, raw))
    results: dict[str, Any] = {
        "nodes": args.nodes,
        "list_mb": len(raw) / 1e6,
        "afresh_ms": statistics.median(afresh),
        "unchanged_ms": statistics.median(unchanged),
    }
    print(f"GPU index re-list of {args.nodes} nodes ({results['list_mb']:.1f} MB), "
          f"median of {args.rounds}")  # fmt: skip
    print(f"  every node read afresh (baseline)  {results['afresh_ms']:7.1f} ms")
    print(f"  nothing changed (kept by version)   {results['unchanged_ms']:7.1f} ms")
    ratio = results["unchanged_ms"] / results["afresh_ms"]
    print(f"  ratio                               {ratio:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

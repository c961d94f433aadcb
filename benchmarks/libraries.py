"""What the well-kept libraries cost where Muster uses them, or would.

- py7zr (7z archives in models): the import, paid once by a process that meets a 7z archive,
  and the scan of three archives (the picklescan fixture, 100 small pickles, one 16 MiB
  pickle) with ``modelfiles.scan_file``. The archives are written by py7zr with its default
  coders (BCJ + LZMA2), which the reader Muster had before also decodes, so the same script
  times that reader from an older tree::

      python benchmarks/libraries.py
      mkdir before && git archive 04efef9^ operator | tar -x -C before
      PYTHONPATH=before/operator python benchmarks/libraries.py --only 7z

- cyclonedx-python-lib (AI-BOMs): one workload's BOM (an image with a finding, a model with a
  dataset, training and card, a GPU node) as the keeper builds it, by hand into JSON, against
  the same document built from the library's model objects and its 1.6 JSON outputter. The
  library cannot express ``modelCard``, component ``data`` nor ``formulation``, so its
  document holds less; what it leaves out is printed.

Not run by the test suite; best of ``--rounds``, in CPU milliseconds of this process (imports:
wall-clock milliseconds of a fresh interpreter).
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.paths import fixture

from muster.models import files as modelfiles


def best(run: Callable[[], object], rounds: int, repeat: int = 1) -> float:
    """Best of ``rounds`` CPU milliseconds per call, each round ``repeat`` calls.

    CPU time of this process rather than wall-clock time: the machine these were taken on is
    shared, and CPU time is what a busy neighbour disturbs least.
    """
    times = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(repeat):
            run()
        times.append((time.process_time() - start) / repeat)
    return min(times) * 1000


def import_ms(module: str, rounds: int) -> float:
    """Best of ``rounds`` milliseconds to import ``module`` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(rounds)
    ]
    return min(times) * 1000


def archives(folder: Path) -> dict[str, Path]:
    import py7zr

    small = folder / "small.7z"
    with py7zr.SevenZipFile(small, "w") as archive:
        for index in range(100):
            archive.writestr(
                pickle.dumps({"layer": index, "w": [0.5] * 64}, protocol=4), f"p/{index}.pkl"
            )
    large = folder / "large.7z"
    with py7zr.SevenZipFile(large, "w") as archive:
        archive.writestr(pickle.dumps({"w": bytes(range(256)) * (1 << 16)}, protocol=4), "data.pkl")
    return {
        "picklescan malicious1.7z (1 member)": fixture(
            "pickles", "picklescan", "data", "malicious1.7z"
        ),
        "100 small pickles": small,
        "one 16 MiB pickle": large,
    }


def seven_zip(rounds: int) -> None:
    try:
        print(f"import py7zr: {import_ms('py7zr', rounds):.1f} ms")
    except subprocess.CalledProcessError:
        print("import py7zr: not installed here")
    # Written by py7zr in this process: the scans below are timed warm, the import above.
    paths = archives(Path(tempfile.mkdtemp()))
    for name, path in paths.items():
        verdict = modelfiles.scan_file(path)
        if verdict is None:
            raise SystemExit(f"{path} was not scanned")
        ms = best(lambda: modelfiles.scan_file(path), rounds)  # noqa: B023 - called in this turn
        print(f"scan {name}: {ms:.2f} ms ({verdict.kind.value})")


# -- AI-BOM --------------------------------------------------------------------------


def bom_facts() -> Any:
    from tests.unit.boms import test_boms

    return test_boms.facts()


def by_hand(facts: Any) -> str:
    from muster.boms.rules import cyclonedx as boms

    parts = boms.pod_components(facts)
    document = boms.document(
        "ml/Deployment/trainer",
        [parts],
        timestamp="2026-06-01T00:00:00Z",
        version="0.1.0",
        serial=uuid.UUID(int=1),
    )
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def with_library(facts: Any) -> str:
    """The same document through cyclonedx-python-lib: what it can express of it."""
    from cyclonedx.model import (
        ExternalReference,
        ExternalReferenceType,
        HashAlgorithm,
        HashType,
        Property,
        XsUri,
    )
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.bom_ref import BomRef
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalContact
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.model.license import DisjunctiveLicense
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    from muster.boms.rules import cyclonedx as boms

    # The facts go through the hand builder's pure parts, then into the library's objects:
    # building them from the facts directly would take the same library calls.
    parts = boms.merge([boms.pod_components(facts)])
    refs: dict[str, BomRef] = {}

    def ref(value: str) -> BomRef:
        return refs.setdefault(value, BomRef(value))

    def sha256(content: str) -> HashType:
        return HashType(alg=HashAlgorithm.SHA_256, content=content)

    def properties(raw: dict[str, Any]) -> list[Property]:
        return [Property(name=p["name"], value=p["value"]) for p in raw.get("properties", [])]

    def rating(severity: str) -> VulnerabilityRating:
        return VulnerabilityRating(severity=VulnerabilitySeverity(severity))

    def component(raw: dict[str, Any]) -> Component:
        return Component(
            type=ComponentType(raw["type"]),
            bom_ref=ref(raw["bom-ref"]),
            name=raw["name"],
            version=raw.get("version"),
            group=raw.get("group"),
            description=raw.get("description"),
            hashes=[sha256(h["content"]) for h in raw.get("hashes", [])],
            purl=PackageURL.from_string(raw["purl"]) if "purl" in raw else None,
            licenses=[
                DisjunctiveLicense(name=x["license"]["name"]) for x in raw.get("licenses", [])
            ],
            external_references=[
                ExternalReference(type=ExternalReferenceType(e["type"]), url=XsUri(e["url"]))
                for e in raw.get("externalReferences", [])
            ],
            authors=[OrganizationalContact(name=a["name"]) for a in raw.get("authors", [])],
            properties=properties(raw),
        )

    bom = Bom(components=[component(c) for c in parts["components"]])
    bom.metadata.component = Component(
        type=ComponentType.APPLICATION, bom_ref=ref("subject"), name="ml/Deployment/trainer"
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="muster", version="0.1.0")
    )
    bom.serial_number = uuid.UUID(int=1)
    workloads = [c["bom-ref"] for c in parts["components"] if c["type"] == "application"]
    dependencies = [{"ref": "subject", "dependsOn": workloads}, *parts["dependencies"]]
    for dependency in dependencies:
        bom.dependencies.add(
            Dependency(
                ref=ref(dependency["ref"]),
                dependencies=[Dependency(ref=ref(d)) for d in dependency["dependsOn"]],
            )
        )
    for raw in parts["vulnerabilities"]:
        bom.vulnerabilities.add(
            Vulnerability(
                bom_ref=raw["bom-ref"],
                id=raw["id"],
                source=VulnerabilitySource(name=raw["source"]["name"]),
                ratings=[rating(r["severity"]) for r in raw["ratings"]],
                affects=[BomTarget(ref=a["ref"]) for a in raw["affects"]],
                description=raw.get("description"),
                recommendation=raw.get("recommendation"),
                properties=properties(raw),
            )
        )
    return JsonV1Dot6(bom).output_as_string()


def paths_of(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document (list positions dropped), to compare two documents."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            found.add(f"{prefix}.{key}")
            found |= paths_of(inner, f"{prefix}.{key}")
    elif isinstance(value, list):
        for inner in value:
            found |= paths_of(inner, prefix)
    return found


def cyclonedx(rounds: int) -> None:
    facts = bom_facts()
    hand = json.loads(by_hand(facts))
    library = json.loads(with_library(facts))
    missing = sorted(p for p in paths_of(hand) - paths_of(library) if p.count(".") <= 3)
    modules = "cyclonedx.output.json, cyclonedx.model.bom"
    print(f"import cyclonedx (model, JSON outputter): {import_ms(modules, rounds):.1f} ms")
    hand_ms = best(lambda: by_hand(facts), rounds, 200)
    print(f"BOM by hand (pod_components + document + json.dumps): {hand_ms:.3f} ms")
    library_ms = best(lambda: with_library(facts), rounds, 20)
    print(f"BOM with cyclonedx-python-lib (same parts, JsonV1Dot6): {library_ms:.3f} ms")
    print(f"left out by the library: {', '.join(missing)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["7z", "bom"])
    args = parser.parse_args()
    if args.only in (None, "7z"):
        seven_zip(args.rounds)
    if args.only in (None, "bom"):
        cyclonedx(args.rounds)


if __name__ == "__main__":
    main()

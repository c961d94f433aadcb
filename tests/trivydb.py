"""A tiny trivy vulnerability database and images with a planted vulnerable package.

The database is written with the real bbolt library (``tools/trivydb``, built by
``hack/install-tools.sh``) in trivy-db's schema 2 layout: a data-source bucket per
advisory source (``"debian 12"``) holding a bucket per package holding an advisory per
CVE (``{"FixedVersion": ...}``), the ``"vulnerability"`` bucket holding each CVE's
details (``{"Title", "Severity", ...}``), and the ``"data-source"`` bucket naming the
source. ``metadata.json`` beside it carries the version and update times trivy checks.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests import peers

__all__ = ["Advisory", "debian_image_files", "write_db"]


@dataclass(frozen=True)
class Advisory:
    cve: str
    package: str
    severity: str  # CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN
    fixed_version: str = ""  # empty: no fix yet
    title: str = ""


def write_db(
    cache_dir: Path,
    advisories: Sequence[Advisory],
    *,
    updated_at: datetime.datetime | None = None,
    release: str = "debian 12",
) -> Path:
    """Write ``cache_dir/db/trivy.db`` and ``metadata.json``; return the db folder."""
    db_dir = cache_dir / "db"
    db_dir.mkdir(parents=True, exist_ok=True)
    db_file = db_dir / "trivy.db"
    db_file.unlink(missing_ok=True)
    puts: list[dict[str, object]] = [
        {
            "buckets": ["data-source"],
            "key": release,
            "value": {
                "ID": "debian",
                "Name": "Debian Security Tracker",
                "URL": "https://salsa.debian.org/security-tracker-team/security-tracker",
            },
        }
    ]
    for advisory in advisories:
        value: dict[str, object] = {}
        if advisory.fixed_version:
            value["FixedVersion"] = advisory.fixed_version
        puts.append({"buckets": [release, advisory.package], "key": advisory.cve, "value": value})
        puts.append(
            {
                "buckets": ["vulnerability"],
                "key": advisory.cve,
                "value": {
                    "Title": advisory.title or f"{advisory.package}: planted test flaw",
                    "Description": "A vulnerability planted by Muster's tests.",
                    "Severity": advisory.severity,
                    "VendorSeverity": {"debian": _severity_number(advisory.severity)},
                    "References": [f"https://example.invalid/{advisory.cve}"],
                },
            }
        )
    subprocess.run(
        [str(peers.tool("trivydb")), str(db_file)],
        input=json.dumps({"puts": puts}).encode(),
        check=True,
        capture_output=True,
        timeout=60,
        env=dict(os.environ),
    )
    now = updated_at or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    metadata = {
        "Version": 2,
        "NextUpdate": (now + datetime.timedelta(days=3650)).isoformat().replace("+00:00", "Z"),
        "UpdatedAt": now.isoformat().replace("+00:00", "Z"),
        "DownloadedAt": now.isoformat().replace("+00:00", "Z"),
    }
    (db_dir / "metadata.json").write_text(json.dumps(metadata))
    return db_dir


def _severity_number(severity: str) -> int:
    return {"UNKNOWN": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}[severity]


def debian_image_files(packages: Mapping[str, str]) -> dict[str, bytes]:
    """The files of a Debian 12 image whose dpkg database lists ``packages`` (name: version).

    Each call makes a distinct image (a random ``etc/hostname``), so scans stored by one test
    never answer for another's image in the session's shared control plane.
    """
    status = "\n".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
        f"Section: libs\nInstalled-Size: 100\nMaintainer: Muster Tests <tests@example.invalid>\n"
        f"Architecture: amd64\nSource: {name}\nVersion: {version}\n"
        f"Description: a package planted by Muster's tests\n"
        for name, version in packages.items()
    )
    os_release = (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
    )
    return {
        "etc/hostname": f"{uuid.uuid4().hex}\n".encode(),
        "etc/os-release": os_release.encode(),
        "etc/debian_version": b"12.7\n",
        "var/lib/dpkg/status": status.encode(),
    }

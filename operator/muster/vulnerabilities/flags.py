"""The vulnerability area's ``muster run`` flags: trivy's cache, DB source and limits."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

from muster.admission import areas

__all__ = ["FLAGS"]


def _add(parser: argparse.ArgumentParser) -> None:
    # Scanning is asynchronous: never on the admission path.
    group = parser.add_argument_group("vulnerability scanning (trivy)")
    group.add_argument(
        "--trivy-cache-dir",
        type=Path,
        default=os.environ.get("MUSTER_TRIVY_CACHE_DIR") or None,
        metavar="DIR",
        help="trivy's cache with the vulnerability DB in DIR/db (trivy.db, metadata.json); "
        "without it no images are scanned",
    )
    group.add_argument(
        "--trivy-db-repository",
        default=None,
        metavar="REPOSITORY",
        help="OCI repository trivy may download the DB from (default: never download, offline)",
    )
    group.add_argument(
        "--scan-concurrency",
        type=int,
        default=2,
        metavar="N",
        help="trivy processes running at once (default 2)",
    )
    group.add_argument(
        "--scan-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long one scan may take (default 300)",
    )


def _settings(args: argparse.Namespace) -> Mapping[str, object]:
    cache_dir: Path | None = None if args.trivy_cache_dir is None else Path(args.trivy_cache_dir)
    if cache_dir is not None and not cache_dir.is_dir():
        raise areas.FlagError(f"--trivy-cache-dir {cache_dir} is not a directory")
    if args.scan_concurrency < 1 or args.scan_timeout <= 0:
        raise areas.FlagError("--scan-concurrency and --scan-timeout must be positive")
    return {
        "trivy_cache_dir": cache_dir,
        "trivy_db_repository": args.trivy_db_repository,
        "scan_concurrency": args.scan_concurrency,
        "scan_timeout": args.scan_timeout,
    }


FLAGS = areas.Flags(
    add=_add,
    settings=_settings,
    chart_values={
        "--trivy-cache-dir": "operator.scanning.enabled",
        "--trivy-db-repository": "operator.scanning.dbRepository",
        "--scan-concurrency": "operator.scanning.concurrency",
        "--scan-timeout": "operator.scanning.timeoutSeconds",
    },
)

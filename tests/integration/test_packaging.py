"""What ships: the command line as a wheel installed outside the checkout, and the chart as a
Helm package pushed to a real OCI registry and installed from there, by the commands of
``docs/operations.md`` (its ``by=`` blocks).

The wheel is built once per session from a copy of the sources (nothing is written into the
checkout), with pip's usual cache. It is installed into a fresh virtual environment with
``--no-deps --no-index``, which sees the test environment's third-party packages through a
``.pth`` file: resolving every dependency from an index would take a minute and need the
network, and ``pip check`` proves the wheel's declared dependencies are met all the same. The
installed ``muster`` must come from that environment, not from the checkout.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import muster
from tests import peers
from tests.integration import docblocks
from tests.integration.chart import rendering

pytestmark = pytest.mark.integration

ROOT = docblocks.ROOT


def _blocks() -> tuple[docblocks.Block, docblocks.Block]:
    found = docblocks.named("delegated", "tests/integration/test_packaging.py")
    assert [block.doc for block in found] == ["docs/operations.md"] * 2
    return found[0], found[1]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _expand(argv: list[str], cwd: Path) -> list[str]:
    """The shell's glob expansion of a documented line, which must match exactly one file."""
    words = []
    for word in argv:
        if "*" in word:
            matched = glob.glob(word, root_dir=cwd)
            assert len(matched) == 1, f"{word} matches {matched} in {cwd}"
            word = matched[0]
        words.append(word)
    return words


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the documented ``pip wheel`` line ran in: a copy of the sources, and dist/."""
    source = tmp_path_factory.mktemp("source")
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(
        ROOT / "operator" / "muster",
        source / "operator" / "muster",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    wheel_line = next(docblocks.command_lines(_blocks()[0]))
    assert wheel_line[:3] == ["python", "-m", "pip"] and wheel_line[3] == "wheel", wheel_line
    _run([sys.executable, *wheel_line[1:]], source)
    return source


@pytest.fixture(scope="session")
def venv(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel, installed by the documented line."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(home)], built)
    python = home / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], built
    ).strip()
    # The test environment's third-party packages, after the venv's own (so its muster wins).
    (Path(site) / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = next(
        argv for argv in docblocks.command_lines(_blocks()[0]) if argv[3:4] == ["install"]
    )
    _run([str(python), *_expand(install, built)[1:], "--no-deps", "--no-index"], built)
    return home


def test_the_wheel_carries_what_the_cli_reads_at_run_time(built: Path) -> None:
    (wheel,) = (built / "dist").glob("muster-*.whl")
    assert wheel.name == f"muster-{muster.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    package_data = {
        f"muster/{path.relative_to(ROOT / 'operator' / 'muster')}"
        for path in (ROOT / "operator" / "muster").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    }
    assert {"muster/py.typed", "muster/demo/gpu-nodes.yaml"} <= package_data
    assert package_data <= names, f"not in the wheel: {package_data - names}"
    assert "muster/cli/__init__.py" in names
    entry_points = zipfile.ZipFile(wheel).read(
        f"muster-{muster.__version__}.dist-info/entry_points.txt"
    )
    assert b"muster = muster.cli:main" in entry_points


def test_the_installed_cli_runs_from_the_wheel_not_the_checkout(venv: Path, built: Path) -> None:
    bin_ = venv / "bin"
    outputs = []
    for argv in docblocks.command_lines(_blocks()[0]):
        if argv[0] == "muster":
            outputs.append(_run([str(bin_ / "muster"), *argv[1:]], built))
    assert outputs[0].strip() == f"muster {muster.__version__}"
    assert "usage: muster check" in outputs[1]
    where = _run(
        [
            str(bin_ / "python"),
            "-c",
            "import muster, muster.cli.demo as d; print(muster.__file__); "
            "print(len(d._data('gpu-nodes.yaml')))",
        ],
        built,
    ).split()
    assert Path(where[0]).is_relative_to(venv), where
    assert int(where[1]) > 0
    # Every dependency the wheel declares is installed.
    _run([str(bin_ / "python"), "-m", "pip", "check"], built)


@pytest.fixture(scope="module")
def chart_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.Registry]:
    with peers.registry(tmp_path_factory.mktemp("chart-registry")) as running:
        yield running


def test_the_chart_is_pushed_as_an_oci_artifact_and_installs_from_there(
    chart_registry: peers.Registry, tmp_path: Path
) -> None:
    work = tmp_path
    helm = str(peers.tool("helm"))
    rendered = ""
    for argv in docblocks.command_lines(_blocks()[1]):
        assert argv[0] == "helm", argv
        words = [
            str(rendering.CHART)
            if word == "charts/muster"
            else word.replace("oci://registry.example/", f"oci://{chart_registry.host}/")
            for word in _expand(argv, work)
        ]
        if argv[1] == "install":
            words = ["helm", *docblocks.helm_args(words, rendering.KUBE_VERSION)]
        if argv[1] in ("push", "pull", "install"):
            words.append("--plain-http")  # the test registry is plain HTTP on loopback
        if argv[1] == "pull":
            (work / "pulled").mkdir()
        # Its own registry login file: nothing of the user's is read or written.
        output = _run([helm, *words[1:], "--registry-config", str(work / "registry.json")], work)
        if argv[1] == "install":
            rendered = output
    (packaged,) = (work / "dist").glob("muster-*.tgz")
    (pulled,) = (work / "pulled").glob("muster-*.tgz")
    assert packaged.name == f"muster-{muster.__version__}.tgz"
    assert pulled.read_bytes() == packaged.read_bytes()
    kinds = {doc["kind"] for doc in yaml.safe_load_all(rendered) if doc}
    assert {"Deployment", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy"} <= kinds

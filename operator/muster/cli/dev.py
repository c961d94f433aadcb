"""``muster dev up`` / ``muster dev down``: try Muster on a real local control plane."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from muster.app import localoperator
from muster.cli import common, demo
from muster.kernel import scopes
from muster.platform import controlplane, kubesetup, localregistry, processes, tools

__all__ = ["default_dir", "register"]

OWN_NAMESPACE = "muster-system"
DEMO_NAMESPACE = "demo"


def default_dir() -> Path:
    explicit = os.environ.get("MUSTER_DEV_DIR")
    if explicit:
        return Path(explicit)
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state / "muster" / "dev"


def register(subcommands: common.Subcommands) -> None:
    dev = subcommands.add_parser(
        "dev",
        help="a local control plane to try Muster without a cluster",
        description="Start or stop an embedded local control plane (real etcd and "
        "kube-apiserver) with the Muster operator and its webhooks registered.",
    )
    actions = dev.add_subparsers(dest="dev_command", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="start the control plane and the operator")
    up.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where state, certificates, logs and the kubeconfig go "
        "(default $MUSTER_DEV_DIR or ~/.local/state/muster/dev)",
    )
    up.add_argument(
        "--no-operator",
        action="store_true",
        help="start only the control plane, without muster run and webhooks",
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="also start a local registry with demo images, load demo policies and GPU nodes, "
        "and walk through admitted, pinned, steered and denied pods",
    )
    common.add_format_option(up)
    up.set_defaults(handler=_up)
    down = actions.add_parser("down", help="stop everything dev up started and remove its state")
    down.add_argument("--dir", type=Path, default=None)
    common.add_format_option(down)
    down.set_defaults(handler=_down)


def _progress(args: argparse.Namespace, message: str) -> None:
    transcript: list[str] | None = getattr(args, "transcript", None)
    if transcript is not None:
        transcript.append(f"==> {message}")
    if getattr(args, "format", "text") == "text":
        sys.stderr.write(f"==> {message}\n")
        sys.stderr.flush()


def _running(workdir: Path) -> bool:
    try:
        state = controlplane.ControlPlaneState.load(workdir)
    except FileNotFoundError:
        return False
    return any(processes.port_is_open(port) for port in state.ports.values())


def _up(args: argparse.Namespace) -> int:
    workdir: Path = (args.dir or default_dir()).resolve()
    if args.demo and args.no_operator:
        raise common.CommandError("--demo needs the operator: drop --no-operator")
    if _running(workdir):
        raise common.CommandError(
            f"a dev control plane is already up in {workdir}; run `muster dev down` first"
        )
    if workdir.exists():
        shutil.rmtree(workdir)
    if args.demo:  # the demo's --format json output carries what its text output shows
        args.transcript = []
    _progress(args, f"starting etcd and kube-apiserver in {workdir}")
    try:
        plane = controlplane.start(workdir)
    except (tools.ToolMissing, processes.StartupFailed) as error:
        raise common.CommandError(str(error)) from None
    result: dict[str, object] = {
        "kubeconfig": str(plane.kubeconfig),
        "server": plane.url,
        "dir": str(workdir),
    }
    if args.demo:
        try:
            return _demo(args, plane, result)
        except BaseException:
            controlplane.stop(workdir)
            raise
    if not args.no_operator:
        try:
            result["webhook"] = _start_operator(args, plane).url
        except BaseException:
            controlplane.stop(workdir)
            raise
    kubeconfig = plane.kubeconfig
    text = f"""
Muster dev control plane is up.

  export KUBECONFIG={kubeconfig}
  kubectl get ns

Namespace "{DEMO_NAMESPACE}" opts in to enforcement ({scopes.ENFORCE_LABEL}=true). Try:

  # denied: the image is not pinned by digest
  kubectl -n {DEMO_NAMESPACE} run unpinned --image=nginx:1.27
  # admitted (no kubelet runs it here)
  kubectl -n {DEMO_NAMESPACE} run pinned --image=nginx@sha256:{"0" * 64}
  # admitted: namespace default did not opt in
  kubectl -n default run anything --image=nginx:1.27

Logs are in {workdir / "logs"}. Stop everything with: muster dev down
"""
    common.emit(args, text, result)
    return common.EXIT_OK


def _start_operator(
    args: argparse.Namespace, plane: controlplane.ControlPlane, extra_args: tuple[str, ...] = ()
) -> localoperator.LocalOperator:
    _progress(args, "installing Muster's custom resource definitions")
    localoperator.install_crds(plane)
    _progress(args, "starting muster run")
    operator = localoperator.start(
        plane, own_namespace=OWN_NAMESPACE, workdir=plane.workdir / "webhook", extra_args=extra_args
    )
    state = plane.state
    state.pids["muster-operator"] = operator.pid
    state.ports["webhook"] = operator.port
    state.save()
    _progress(args, f"registering the validating and mutating webhooks ({operator.url})")
    localoperator.register_webhooks(plane, operator, own_namespace=OWN_NAMESPACE)
    managers = " and ".join(localoperator.DEFAULT_GUARD.manager_groups)
    _progress(
        args, f"installing the namespace guard: only {managers} may lower a namespace's enforcement"
    )
    localoperator.install_namespace_guard(plane)
    _progress(
        args, "installing the trust-anchor guard: only Muster writes its Node labels and statuses"
    )
    localoperator.install_trust_anchor_guard(plane)
    api = kubesetup.api_client(plane.kubeconfig)
    with contextlib.closing(api):
        kubesetup.ensure_namespace(api, DEMO_NAMESPACE, {scopes.ENFORCE_LABEL: "true"})
    return operator


def _demo(
    args: argparse.Namespace, plane: controlplane.ControlPlane, result: dict[str, object]
) -> int:
    """The guided tour: registry, images, operator, policies, nodes, then kubectl attempts."""
    _progress(args, "starting a local OCI registry (docker-registry)")
    try:
        registry = localregistry.start(plane.workdir / "registry")
    except (tools.ToolMissing, processes.StartupFailed) as error:
        raise common.CommandError(str(error)) from None
    state = plane.state
    state.pids["registry"] = registry.pid
    state.ports["registry"] = registry.port
    state.save()
    images = demo.prepare(plane.workdir / "demo", registry, lambda line: _progress(args, line))
    operator = _start_operator(
        args,
        plane,
        extra_args=("--insecure-registry", registry.host, "--verifier-image", images.verifier),
    )
    state = plane.state
    state.ports["metrics"] = int(operator.metrics_url.rsplit(":", 1)[1].split("/", 1)[0])
    state.save()
    demo.setup(plane, images, lambda line: _progress(args, line))
    text_mode = getattr(args, "format", "text") == "text"

    def write(line: str) -> None:
        args.transcript.extend(line.splitlines())
        if text_mode:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    write("\nMuster is up with demo policies. Each step is a real kubectl apply:")
    done = demo.tour(plane, images, operator.metrics_url, write)
    result.update(
        webhook=operator.url,
        registry=registry.host,
        metrics=operator.metrics_url,
        walkthrough=demo.summary(done),
        transcript=args.transcript,
    )
    common.emit(args, demo.next_steps(plane, images), result)
    return common.EXIT_OK if all(a.as_expected for a in done) else common.EXIT_FAIL


def _down(args: argparse.Namespace) -> int:
    workdir: Path = (args.dir or default_dir()).resolve()
    try:
        state = controlplane.ControlPlaneState.load(workdir)
    except FileNotFoundError:
        common.emit(args, "Nothing to stop: no dev control plane state found.", {"stopped": []})
        return common.EXIT_OK
    stopped = controlplane.stop(workdir)
    busy = [f"{name}:{port}" for name, port in state.ports.items() if processes.port_is_open(port)]
    if busy:
        raise common.CommandError(f"ports still in use after stopping: {', '.join(busy)}")
    shutil.rmtree(workdir, ignore_errors=True)
    common.emit(
        args,
        f"Stopped {', '.join(stopped) or 'nothing'}; removed {workdir}.",
        {"stopped": stopped, "dir": str(workdir)},
    )
    return common.EXIT_OK

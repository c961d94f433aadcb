"""``muster model digest|verify|scan``: the model gate's checks on model bytes.

``digest`` prints the OpenSSF Model Signing root digest (the subject digest
``model_signing`` signs); ``verify`` checks a model against a digest or an OMS signature
(key, certificate chain, or Sigstore keyless), and its provenance (an in-toto statement over
that digest, ``--provenance``, or the one a ``--model`` names); ``scan`` judges pickles, archives,
safetensors headers and Keras Lambda layers. The init container that re-verifies mounted
models on the node runs ``verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import yaml

from muster.cli import common, progress
from muster.cli.parsers.model import add_register_options, add_workers, register
from muster.models import files as modelfiles
from muster.signatures.rules import oms

# Imported where used: verifying by digest (each pod start) needs neither signatures,
# provenance, nor a cluster.
if TYPE_CHECKING:
    from muster.models import provenancing
    from muster.models.rules import provenance as modelprovenance
    from muster.models.rules import registry as modelregistry
    from muster.signatures import oms as modelsigs

__all__ = ["add_register_options", "add_workers", "register"]


def _hashing(args: argparse.Namespace) -> oms.Serialization:
    return oms.serialization_for(args.hashing_algorithm or "sha256", args.shard_size)


def _digest(args: argparse.Namespace) -> int:
    try:
        manifest = modelfiles.measure(
            args.path,
            _hashing(args),
            extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
            workers=args.workers,
            progress=progress.for_args(args, "hashing"),
        )
    except modelfiles.ModelError as error:
        raise common.CommandError(str(error)) from None
    data = {
        "digest": manifest.digest,
        "model": manifest.model_name,
        "resources": [r.to_json() for r in manifest.resources],
    }
    common.emit(args, manifest.digest, data)
    return common.EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    if args.digest is None and (args.hashing_algorithm or args.shard_size):
        raise common.CommandError(
            "--hashing-algorithm and --shard-size go with --digest: a signature or a Model "
            "records how its model was hashed"
        )
    if args.provenance is None and (args.provenance_key or args.provenance_condition):
        raise common.CommandError("--provenance-key and --provenance-condition need --provenance")
    if args.provenance is not None and args.provenance_key is None:
        raise common.CommandError("--provenance needs --provenance-key")
    try:
        if args.model is not None:
            return _verify_model(args)
        if args.digest is not None:
            _refuse_signature_options(args)
            measured = modelfiles.measure(
                args.path,
                _hashing(args),
                extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
                workers=args.workers,
                progress=progress.for_args(args, "hashing"),
            )
            expected = oms.format_digest(oms.parse_digest(args.digest))
            outcome = modelfiles.Outcome(measured, expected)
        else:
            check = _signature_check(args)
            outcome = modelfiles.verify_signature(
                args.path,
                args.signature,
                check,
                extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
                workers=args.workers,
                progress=progress.for_args(args, "hashing"),
            )
    except _bad_input() as error:
        raise common.CommandError(str(error)) from None
    except _bad_signature() as error:
        common.emit(args, f"FAIL {args.path}: {error}", {"passes": False, "error": str(error)})
        return common.EXIT_FAIL
    if outcome.passes:
        try:
            attested = _provenance_given(args, outcome.measured.digest)
        except _unverified() as error:
            data = {**outcome.to_json(), "passes": False, "error": error.message}
            common.emit(args, f"FAIL {args.path}: {error.message}", data)
            return common.EXIT_FAIL
        signer = f" signed by {outcome.signer}" if outcome.signer else ""
        text = f"OK {args.path} {outcome.measured.digest}{signer}"
        data = outcome.to_json()
        if attested is not None:
            text += f"\n  provenance: {attested.summary()}"
            data["provenance"] = attested.to_status()
        common.emit(args, text, data)
        return common.EXIT_OK
    lines = [d.message for d in outcome.differences] or [
        f"digest is {outcome.measured.digest}, expected {outcome.expected_digest}"
    ]
    text = f"FAIL {args.path}:\n" + "\n".join(f"  {line}" for line in lines)
    common.emit(args, text, outcome.to_json())
    return common.EXIT_FAIL


def _bad_input() -> tuple[type[Exception], ...]:
    """What verifying raises on bad input. An ``except`` evaluates this only when something
    was raised, so a verification by digest that passes never imports the signature stack."""
    from muster.signatures import oms as modelsigs

    return (modelfiles.ModelError, oms.OmsError, modelsigs.InputError)


def _bad_signature() -> type[modelsigs.SignatureError]:
    from muster.signatures import oms as modelsigs

    return modelsigs.SignatureError


def _unverified() -> type[modelprovenance.Unverified]:
    from muster.models.rules import provenance as modelprovenance

    return modelprovenance.Unverified


def _provenance_given(args: argparse.Namespace, digest: str) -> modelprovenance.Verified | None:
    """The provenance of ``--provenance`` verified over the measured ``digest`` (None when
    none is given); :class:`modelprovenance.Unverified` when it does not count."""
    if args.provenance is None:
        return None
    from muster.models.rules import provenance as modelprovenance

    bundle = _read(args.provenance, "provenance").decode(errors="replace")
    try:
        spec = modelprovenance.ProvenanceSpec.model_validate(
            {
                "bundle": bundle,
                "predicateType": args.provenance_type,
                "authorities": [
                    {
                        "name": "--provenance-key",
                        "key": {"data": _read(args.provenance_key, "key").decode(errors="replace")},
                    }
                ],
                "conditions": [{"expression": e} for e in args.provenance_condition],
            }
        )
    except pydantic.ValidationError as error:
        raise common.CommandError(f"--provenance: {error.errors()[0]['msg']}") from None
    requirement = modelprovenance.requirement(spec, {})
    now = datetime.datetime.now(tz=datetime.UTC)
    return modelprovenance.verify(requirement, bundle, digest=digest, now=now)


def _refuse_signature_options(args: argparse.Namespace) -> None:
    if args.key or args.certificate_chain or args.certificate_identity or args.trusted_root:
        raise common.CommandError("--digest takes no key, certificate or trusted-root options")


def _signature_check(args: argparse.Namespace) -> modelsigs.Check:
    from muster.signatures import oms as modelsigs

    keyless = args.certificate_identity or args.certificate_oidc_issuer
    chosen = [bool(args.key), bool(args.certificate_chain), bool(keyless)]
    if sum(chosen) != 1:
        raise common.CommandError(
            "--signature needs exactly one of --key, --certificate-chain, or "
            "--certificate-identity with --certificate-oidc-issuer"
        )
    if args.key:
        pem = _read(args.key, "public key")
        return lambda bundle: modelsigs.verify_with_key(bundle, pem)
    if args.certificate_chain:
        chain = b"".join(_read(path, "certificate chain") for path in args.certificate_chain)
        return lambda bundle: modelsigs.verify_with_certificates(bundle, chain)
    if not (args.certificate_identity and args.certificate_oidc_issuer):
        raise common.CommandError(
            "keyless verification needs both --certificate-identity and --certificate-oidc-issuer"
        )
    identity, issuer, root = (
        args.certificate_identity,
        args.certificate_oidc_issuer,
        args.trusted_root,
    )
    return lambda bundle: modelsigs.verify_with_sigstore(bundle, identity, issuer, root)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise common.CommandError(f"{path}: cannot read {what} ({error.strerror})") from None


def _scan(args: argparse.Namespace) -> int:
    # picklescan logs every finding itself; Muster reports them once, its own way.
    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    try:
        report = modelfiles.scan(
            args.path, allowed=args.allow, progress=progress.for_args(args, "scanning")
        )
    except modelfiles.ModelError as error:
        raise common.CommandError(str(error)) from None
    data = {"passes": report.passes, "files": [f.to_json() for f in report.files]}
    if report.passes:
        common.emit(args, f"OK {args.path}: {len(report.files)} file(s) scanned, none unsafe", data)
        return common.EXIT_OK
    lines = [f"  {f.kind.value}: {f.message}" for f in report.failures]
    common.emit(args, f"FAIL {args.path}:\n" + "\n".join(lines), data)
    return common.EXIT_FAIL


# -- the cluster's registry -------------------------------------------------------------------

PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib"})
FORMATS = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".onnx": "onnx",
    ".keras": "keras",
    ".h5": "keras",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
}


def _read_model(name: str, kubeconfig: Path | None) -> modelregistry.ModelEntry:
    """The Model ``name`` from the cluster, validated; errors as one line."""
    # Imported here: only --model reads a cluster, and every pod start runs verify.
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    from muster.models.rules import registry as modelregistry

    try:
        api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
    except (k8s_config.ConfigException, OSError) as error:
        raise common.CommandError(f"cannot load a kubeconfig: {error}") from None
    try:
        with api:
            found: Any = k8s_client.CustomObjectsApi(api).get_cluster_custom_object(
                "muster.dev", "v1alpha1", "models", name
            )
    except k8s_client.ApiException as error:
        if error.status == 404:
            raise common.CommandError(f"Model {name!r} does not exist in the cluster") from None
        raise common.CommandError(f"cannot read Model {name!r}: HTTP {error.status}") from None
    except OSError as error:  # urllib3 connection errors are OSErrors
        raise common.CommandError(f"cannot reach the cluster: {error}") from None
    try:
        return modelregistry.parse_model(
            name,
            found.get("spec") or {},
            found.get("status") or {},
            generation=(found.get("metadata") or {}).get("generation"),
        )
    except pydantic.ValidationError as error:
        raise common.CommandError(
            f"Model {name!r} is invalid: {error.errors()[0]['msg']}"
        ) from None


def _model_check(
    entry: modelregistry.ModelEntry, kubeconfig: Path | None
) -> modelsigs.Check | None:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    from muster.signatures import oms as modelsigs

    signature = entry.spec.signature
    if signature is None or signature.bundle is None:
        return None
    if signature.keyless is not None:
        identity, issuer = signature.keyless.identity, signature.keyless.issuer
        return lambda bundle: modelsigs.verify_with_sigstore(bundle, identity, issuer)
    if signature.public_key is not None:
        pem = signature.public_key.encode()
    else:
        ref = signature.public_key_secret_ref
        if ref is None:
            raise common.CommandError(f"Model {entry.name!r} names no key")
        api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
        try:
            with api:
                secret: Any = k8s_client.CoreV1Api(api).read_namespaced_secret(
                    ref.name, ref.namespace
                )
        except k8s_client.ApiException as error:
            raise common.CommandError(
                f"cannot read Secret {ref.namespace}/{ref.name}: HTTP {error.status}"
            ) from None
        data = (secret.data or {}).get(ref.key)
        if data is None:
            raise common.CommandError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
        pem = base64.b64decode(data)
    return lambda bundle: modelsigs.verify_with_key(bundle, pem)


async def _cluster_provenance(
    spec: modelregistry.ModelSpec, kubeconfig: Path | None
) -> provenancing.Outcome:
    """The Model's provenance verified here: its bundle, or its ociReference's referrers."""
    from muster.models import provenancing
    from muster.platform import registries

    client = registries.RegistryClient(registries.RegistrySettings())
    try:
        return await provenancing.verify(spec, _cluster_reader(kubeconfig), client)
    finally:
        await client.close()


def _cluster_reader(kubeconfig: Path | None) -> provenancing.Reader:
    """Secret and ConfigMap keys a Model's provenance names, read from the cluster."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    async def read(source: modelprovenance.Source) -> bytes | None:
        api = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig) if kubeconfig else None
        )
        try:
            with api:
                core = k8s_client.CoreV1Api(api)
                found: Any = (
                    core.read_namespaced_secret(source.name, source.namespace)
                    if source.kind == "Secret"
                    else core.read_namespaced_config_map(source.name, source.namespace)
                )
        except k8s_client.ApiException as error:
            if error.status == 404:
                return None
            raise common.CommandError(f"cannot read {source}: HTTP {error.status}") from None
        value = (found.data or {}).get(source.key)
        if not isinstance(value, str):
            return None
        return base64.b64decode(value) if source.kind == "Secret" else value.encode()

    return read


def _verify_model(args: argparse.Namespace) -> int:
    from muster.signatures import oms as modelsigs

    _refuse_signature_options(args)
    if args.provenance is not None:
        raise common.CommandError(
            "--model verifies the provenance the Model names; no --provenance"
        )
    entry = _read_model(args.model, args.kubeconfig)
    if entry.spec.revoked:
        why = entry.spec.revocation_reason or "no reason given"
        text = f"FAIL {args.path}: Model {entry.name!r} is revoked: {why}"
        common.emit(args, text, {"passes": False, "model": entry.name, "revoked": True})
        return common.EXIT_FAIL
    measured = modelfiles.measure(
        args.path,
        entry.spec.hashing,
        extra_ignores=modelfiles.ignore_paths_for(args.path, args.ignore_paths),
        workers=args.workers,
        progress=progress.for_args(args, "hashing"),
    )
    outcome = modelfiles.Outcome(measured, entry.spec.digest)
    check = _model_check(entry, args.kubeconfig)
    signer = None
    signature = entry.spec.signature
    if check is not None and signature is not None and signature.bundle and outcome.passes:
        bundle = json.loads(signature.bundle)
        try:
            signed = check(bundle)
        except modelsigs.SignatureError as error:
            common.emit(args, f"FAIL {args.path}: {error}", {"passes": False, "error": str(error)})
            return common.EXIT_FAIL
        if signed.manifest.digest != entry.spec.digest:
            message = (
                f"Model {entry.name!r}'s signature signs {signed.manifest.digest}, "
                f"not its digest {entry.spec.digest}"
            )
            common.emit(args, f"FAIL {args.path}: {message}", {"passes": False, "error": message})
            return common.EXIT_FAIL
        signer = signed.signer
    data = {**outcome.to_json(), "model": entry.name, "signer": signer}
    if outcome.passes:
        by = f" signed by {signer}" if signer else ""
        text = f"OK {args.path} is Model {entry.name} {measured.digest}{by}"
        if entry.spec.provenance is not None:
            # Verified here, as the operator does, not read from the Model's status.
            attested, _, message = asyncio.run(_cluster_provenance(entry.spec, args.kubeconfig))
            if attested is None:
                failed = {**data, "passes": False, "error": message}
                common.emit(args, f"FAIL {args.path}: Model {entry.name!r}: {message}", failed)
                return common.EXIT_FAIL
            text += f"\n  provenance: {attested.summary()}"
            data["provenance"] = attested.to_status()
        common.emit(args, text, data)
        return common.EXIT_OK
    text = (
        f"FAIL {args.path}: digest is {measured.digest}, "
        f"Model {entry.name!r} is {entry.spec.digest}"
    )
    common.emit(args, text, data)
    return common.EXIT_FAIL


def signature_beside(path: Path, given: Path | None) -> Path | None:
    if given is not None:
        if not given.is_file():
            raise common.CommandError(f"{given}: no such signature file")
        return given
    for candidate in (path.parent / "model.sig", path / "model.sig"):
        if candidate.is_file():
            return candidate
    return None


def measure_for_register(args: argparse.Namespace) -> tuple[oms.Manifest, Path | None]:
    """Measure ``args.path`` as its signature (beside it, or ``--signature``) was hashed, for a
    Model or Dataset manifest; returns the measurement and the signature file found."""
    from muster.signatures import oms as modelsigs

    signature_path = signature_beside(args.path, args.signature)
    ignores = modelfiles.ignore_paths_for(args.path, [])
    if signature_path is not None and args.path.is_dir():
        # model_signing never hashes its own signature when it sits inside the model.
        ignores = modelfiles.ignore_paths_for(args.path, [str(signature_path)])
    try:
        # The digest is hashed the way its signature was (the node re-measures so).
        hashing = signed_hashing(signature_path)
        measured = modelfiles.measure(
            args.path,
            hashing,
            extra_ignores=ignores,
            workers=args.workers,
            progress=progress.for_args(args, "hashing"),
        )
    except (modelfiles.ModelError, modelsigs.InputError, oms.OmsError) as error:
        raise common.CommandError(str(error)) from None
    return measured, signature_path


def _register(args: argparse.Namespace) -> int:
    from muster.models.rules import registry as modelregistry

    measured, signature_path = measure_for_register(args)
    spec: dict[str, Any] = {"digest": measured.digest}
    if args.oci_reference:
        spec["ociReference"] = args.oci_reference
    if args.source:
        spec["source"] = args.source
    suffixes = {Path(r.name).suffix.lower() for r in measured.resources}
    model_format = args.model_format or next(
        (
            FORMATS[s]
            for s in (".safetensors", ".gguf", ".onnx", ".keras", ".h5", ".pt", ".pth", ".bin")
            if s in suffixes
        ),
        None,
    )
    if model_format:
        spec["format"] = model_format
    if args.license:
        spec["license"] = args.license
    if suffixes & PICKLE_SUFFIXES:
        spec["unsafeSerialization"] = True
    if signature_path is not None:
        spec["signature"] = registered_signature(args, signature_path, measured.digest)
    return print_manifest("Model", modelregistry.ModelSpec, args.name, spec)


def print_manifest(
    kind: str, spec_type: type[pydantic.BaseModel], name: str, spec: dict[str, Any]
) -> int:
    """Print the ``kind`` manifest (YAML) of ``spec``, once ``spec_type`` says it is valid."""
    try:
        spec_type.model_validate(spec)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise common.CommandError(f"{where}: {first['msg']}") from None
    manifest = {
        "apiVersion": "muster.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    return common.EXIT_OK


def signed_hashing(signature_path: Path | None) -> oms.Serialization:
    if signature_path is None:
        return oms.Serialization()
    from muster.signatures import oms as modelsigs

    return oms.serialization_of_bundle(modelsigs.read_bundle(signature_path)).hashing


def registered_signature(args: argparse.Namespace, path: Path, digest: str) -> dict[str, Any]:
    """The signature fields, after checking the signature verifies and signs ``digest``."""
    from muster.signatures import oms as modelsigs

    try:
        bundle = modelsigs.read_bundle(path)
    except modelsigs.InputError as error:
        raise common.CommandError(str(error)) from None
    keyless = args.certificate_identity or args.certificate_oidc_issuer
    if args.key and keyless:
        raise common.CommandError("give --key or the keyless identity, not both")
    fields: dict[str, Any] = {"bundle": json.dumps(bundle, separators=(",", ":"))}
    try:
        if args.key:
            pem = _read(args.key, "public key")
            signed = modelsigs.verify_with_key(bundle, pem)
            fields["publicKey"] = pem.decode()
        elif keyless:
            if not (args.certificate_identity and args.certificate_oidc_issuer):
                raise common.CommandError(
                    "keyless needs both --certificate-identity and --certificate-oidc-issuer"
                )
            signed = modelsigs.verify_with_sigstore(
                bundle, args.certificate_identity, args.certificate_oidc_issuer
            )
            fields["keyless"] = {
                "identity": args.certificate_identity,
                "issuer": args.certificate_oidc_issuer,
            }
        else:
            raise common.CommandError(
                f"{path}: a signature needs --key or --certificate-identity with "
                "--certificate-oidc-issuer, so the cluster knows who must have signed it"
            )
    except modelsigs.SignatureError as error:
        raise common.CommandError(f"{path}: {error}") from None
    if signed.manifest.digest != digest:
        raise common.CommandError(
            f"{path} signs {signed.manifest.digest}, but {args.path} measures {digest}"
        )
    return fields

"""Unsafe serialization: the real pickle samples, archives, safetensors and Keras configs."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from muster.models import files as modelfiles
from muster.models.rules import pickles
from tests.paths import fixture

pytestmark = pytest.mark.unit

EXPECTED = json.loads(fixture("pickles", "EXPECTED.json").read_text())

# How each verdict of the fixture table reads in Muster's terms.
KINDS = {
    "MALICIOUS": pickles.Kind.UNSAFE,
    "BENIGN": pickles.Kind.SAFE,
    "BENIGN-ENCRYPTED": pickles.Kind.UNSCANNABLE,  # cannot be inspected: fail closed
    "MALFORMED": pickles.Kind.MALFORMED,
    "NOT-A-PICKLE": pickles.Kind.NOT_PICKLE,
}


@pytest.mark.parametrize("sample", EXPECTED, ids=[s["file"] for s in EXPECTED])
def test_every_pickle_sample_is_classified_as_recorded(sample: dict[str, str]) -> None:
    verdict = modelfiles.scan_file(fixture("pickles", sample["file"]))
    assert verdict is not None
    assert verdict.kind is KINDS[sample["verdict"]], verdict.message
    assert verdict.passes is (sample["verdict"] in ("BENIGN", "NOT-A-PICKLE"))
    if verdict.kind is pickles.Kind.UNSAFE:
        assert verdict.reasons and verdict.message.startswith(Path(sample["file"]).name)


def test_fixture_table_covers_every_verdict() -> None:
    assert {s["verdict"] for s in EXPECTED} == set(KINDS)
    assert len(EXPECTED) >= 60


def test_allowlist_catches_what_the_blocklist_misses() -> None:
    # A global picklescan does not know is still not allowed.
    verdict = pickles.classify_pickle("m.pkl", [pickles.Import("mymodule", "func")])
    assert verdict.kind is pickles.Kind.UNSAFE
    assert verdict.reasons == ("import mymodule.func is not on the allowlist",)
    allowed = pickles.classify_pickle(
        "m.pkl", [pickles.Import("mymodule", "func")], allowed=["mymodule.func"]
    )
    assert allowed.kind is pickles.Kind.SAFE
    # ... but an allowlist entry never overrides picklescan's blocklist.
    dangerous = pickles.classify_pickle(
        "m.pkl", [pickles.Import("os", "system", dangerous=True)], allowed=["os.system"]
    )
    assert dangerous.kind is pickles.Kind.UNSAFE


def test_parse_error_without_a_call_is_malformed_with_a_call_unsafe() -> None:
    imports = [pickles.Import("builtins", "exec", dangerous=True)]
    quiet = pickles.classify_pickle("x", imports, parse_error="boom", called_before_error=False)
    assert quiet.kind is pickles.Kind.MALFORMED
    loud = pickles.classify_pickle("x", imports, parse_error="boom", called_before_error=True)
    assert loud.kind is pickles.Kind.UNSAFE


# Protocol-2 pickles written opcode by opcode: GLOBAL, EMPTY_TUPLE, REDUCE, STOP.
STATE_DICT = b"\x80\x02ccollections\nOrderedDict\n)R."
UNKNOWN_CALL = b"\x80\x02cmymodule\nfunc\n)R."


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_torch_zip_with_allowed_globals_is_safe(tmp_path: Path) -> None:
    rebuild = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R."
    model = write_zip(
        tmp_path / "model.pt",
        {"archive/data.pkl": STATE_DICT + rebuild, "archive/data/0": b"\x00" * 64},
    )
    verdict = modelfiles.scan_file(model)
    assert verdict is not None and verdict.kind is pickles.Kind.SAFE
    assert "collections.OrderedDict" in verdict.imports


def test_torch_zip_with_unknown_global_is_unsafe(tmp_path: Path) -> None:
    model = write_zip(tmp_path / "model.pt", {"archive/data.pkl": UNKNOWN_CALL})
    verdict = modelfiles.scan_file(model)
    assert verdict is not None and verdict.kind is pickles.Kind.UNSAFE
    assert (
        "model.pt:archive/data.pkl: import mymodule.func is not on the allowlist" in verdict.message
    )


def test_zip_bomb_member_is_refused(tmp_path: Path) -> None:
    bomb = b"\x80\x02(" + b"N" * 200_000 + b"t."
    model = write_zip(tmp_path / "model.pt", {"archive/data.pkl": bomb})
    assert model.stat().st_size < 5_000
    verdict = modelfiles.scan_file(model, limits=modelfiles.Limits(max_member_bytes=10_000))
    assert verdict is not None and verdict.kind is pickles.Kind.UNSCANNABLE
    assert "decompresses past 10000 bytes" in verdict.message


def test_zip_total_budget_is_shared_by_members(tmp_path: Path) -> None:
    members = {f"p{i}.pkl": b"\x80\x02(" + b"N" * 4000 + b"t." for i in range(5)}
    model = write_zip(tmp_path / "many.zip", members)
    limits = modelfiles.Limits(max_member_bytes=5000, max_total_bytes=12_000)
    verdict = modelfiles.scan_file(model, limits=limits)
    assert verdict is not None and verdict.kind is pickles.Kind.UNSCANNABLE


def test_zip_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    model = write_zip(tmp_path / "x.zip", {f"f{i}": b"" for i in range(10)})
    verdict = modelfiles.scan_file(model, limits=modelfiles.Limits(max_entries=5))
    assert verdict is not None and verdict.kind is pickles.Kind.UNSCANNABLE
    assert "10 entries" in verdict.message


def test_keras_lambda_layer_is_unsafe(tmp_path: Path) -> None:
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [
                {"class_name": "Dense", "config": {"name": "dense"}},
                {"class_name": "Lambda", "config": {"name": "sneaky", "function": "..."}},
            ]
        },
    }
    model = write_zip(tmp_path / "model.keras", {"config.json": json.dumps(config).encode()})
    verdict = modelfiles.scan_file(model)
    assert verdict is not None and verdict.kind is pickles.Kind.UNSAFE
    assert "Keras Lambda layer 'sneaky' runs Python code on load" in verdict.message
    config["config"]["layers"].pop()  # type: ignore[index]
    clean = write_zip(tmp_path / "clean.keras", {"config.json": json.dumps(config).encode()})
    verdict = modelfiles.scan_file(clean)
    assert verdict is not None and verdict.kind is pickles.Kind.SAFE


SAFETENSORS = sorted(fixture("models", "safetensors").rglob("*.safetensors"))


@pytest.mark.parametrize("path", SAFETENSORS, ids=[p.name for p in SAFETENSORS])
def test_real_safetensors_files_parse(path: Path) -> None:
    verdict = modelfiles.scan_file(path)
    assert verdict is not None and verdict.kind is pickles.Kind.SAFE, verdict


def test_safetensors_fixtures_exist() -> None:
    assert len(SAFETENSORS) >= 15


def safetensors(header: object, buffer: bytes, *, length: int | None = None) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + buffer


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"a": "b"}}


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (safetensors(GOOD, b"\x00" * 8), None),
        (safetensors(GOOD, b"\x00" * 9), "cover 8 bytes but the data buffer holds 9"),
        (safetensors(GOOD, b"\x00" * 4), "cover 8 bytes but the data buffer holds 4"),
        (safetensors([1, 2], b""), "not a JSON object"),
        (safetensors(GOOD, b"\x00" * 8, length=200_000_000), "exceeds 100000000"),
        (safetensors(GOOD, b"\x00" * 8, length=10_000), "runs past the end"),
        (b"\x01\x00", "shorter than the 8-byte header length"),
        (
            safetensors(
                {
                    "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                    "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]},
                },
                b"\x00" * 6,
            ),
            "starts at 2, expected 4",
        ),
        (
            safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\x00" * 8),
            "its shape needs 12",
        ),
        (
            safetensors({"a": {"dtype": "X9", "shape": [], "data_offsets": [0, 0]}}, b""),
            "unknown dtype",
        ),
        (safetensors({"__metadata__": {"a": 1}}, b""), "__metadata__"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not UTF-8 JSON"),
    ],
)
def test_safetensors_header_validation(tmp_path: Path, blob: bytes, reason: str | None) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    verdict = modelfiles.scan_file(path)
    assert verdict is not None
    if reason is None:
        assert verdict.kind is pickles.Kind.SAFE
    else:
        assert verdict.kind is pickles.Kind.MALFORMED
        assert reason in verdict.message


def test_scan_directory_reports_each_file(tmp_path: Path) -> None:
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text("{}")
    (root / "weights.safetensors").write_bytes(safetensors(GOOD, b"\x00" * 8))
    (root / "optimizer.pt").write_bytes(STATE_DICT)
    report = modelfiles.scan(root)
    assert report.passes
    assert {f.path for f in report.files} == {"weights.safetensors", "optimizer.pt"}
    (root / "extra.bin").write_bytes(UNKNOWN_CALL)
    report = modelfiles.scan(root)
    assert not report.passes
    assert [f.path for f in report.failures] == ["extra.bin"]
    assert modelfiles.scan(root, allowed=["mymodule.func"]).passes


def npy(header: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def test_npy_header_parsing() -> None:
    objects = npy(b"{'descr': '|O', 'fortran_order': False, 'shape': (2,), }")
    assert pickles.npy_header(objects) == (len(objects), True)
    plain = npy(b"{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }")
    assert pickles.npy_header(plain) == (len(plain), False)
    structured = npy(b"{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': ()}")
    assert pickles.npy_header(structured)[1] is True
    with pytest.raises(ValueError, match="truncated"):
        pickles.npy_header(objects[:-3])
    with pytest.raises(ValueError, match=r"invalid \.npy header"):
        pickles.npy_header(npy(b"__import__('os')"))


@given(st.binary(max_size=300))
def test_safetensors_check_never_crashes(blob: bytes) -> None:
    prefix, rest = blob[:8], blob[8:]
    length = int.from_bytes(prefix.ljust(8, b"\0"), "little") if len(prefix) == 8 else 0
    verdict = pickles.check_safetensors("x", prefix, rest[:length], len(blob))
    assert verdict.kind in (pickles.Kind.SAFE, pickles.Kind.MALFORMED)


@given(st.binary(max_size=200))
def test_npy_header_only_raises_value_error(blob: bytes) -> None:
    try:
        offset, _ = pickles.npy_header(b"\x93NUMPY" + blob)
    except ValueError:
        return
    assert offset <= len(blob) + 6

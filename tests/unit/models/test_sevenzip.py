"""Pickles inside 7z archives: read with py7zr, within Muster's limits, failing closed.

Archives come from py7zr itself, from the picklescan fixture table (``malicious1.7z``, in
``test_pickles``), and from ``seven_zip`` below, which writes one field at a time what no
archiver would write: lying sizes, names that climb out, a directory holding data.
"""

from __future__ import annotations

import lzma
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import py7zr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muster.models import files as modelfiles
from muster.models.rules import pickles

pytestmark = pytest.mark.unit

# Protocol-2 pickles written opcode by opcode: GLOBAL, EMPTY_TUPLE, REDUCE, STOP.
STATE_DICT = b"\x80\x02ccollections\nOrderedDict\n)R."
UNKNOWN_CALL = b"\x80\x02cmymodule\nfunc\n)R."
# Protocol 0 has no magic number: only the member's name says it is a pickle.
SYSTEM_CALL = b"cos\nsystem\n(S'true'\ntR."


def seven_zip_number(value: int) -> bytes:
    if value < 0x80:
        return bytes([value])
    if value < 0x4000:
        return bytes([0x80 | (value >> 8), value & 0xFF])
    assert value < 0x200000
    return bytes([0xC0 | (value >> 16), value & 0xFF, (value >> 8) & 0xFF])


def seven_zip(
    name: str,
    content: bytes,
    coder: bytes | None = None,
    size: int | None = None,
    *,
    crc: int | None = None,
    attributes: int | None = None,
    substreams: bool = True,
) -> bytes:
    """A one-file 7z archive, LZMA2-compressed, written field by field.

    ``size`` overrides the declared unpacked size, ``crc`` the member's CRC32, ``attributes``
    adds Windows attributes; ``substreams=False`` leaves out the SubStreamsInfo 7-Zip writes.
    """
    packed = lzma.compress(
        content, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
    )
    coder = coder or b"\x21\x21\x01\x10"  # LZMA2, one property byte: 1 MiB dictionary
    n = seven_zip_number
    names = name.encode("utf-16-le") + b"\x00\x00"
    digest = (zlib.crc32(content) if crc is None else crc).to_bytes(4, "little")
    header = (
        b"\x01\x04"
        + b"\x06" + n(0) + n(1) + b"\x09" + n(len(packed)) + b"\x00"
        + b"\x07\x0b" + n(1) + b"\x00" + n(1) + coder
        + b"\x0c" + n(len(content) if size is None else size) + b"\x00"
        + (b"\x08\x0a\x01" + digest + b"\x00" if substreams else b"")
        + b"\x00"
        + b"\x05" + n(1) + b"\x11" + n(len(names) + 1) + b"\x00" + names
        + (b"\x15" + n(6) + b"\x01\x00" + attributes.to_bytes(4, "little") if attributes else b"")
        + b"\x00"
        + b"\x00"
    )  # fmt: skip
    tail = (
        len(packed).to_bytes(8, "little")
        + len(header).to_bytes(8, "little")
        + zlib.crc32(header).to_bytes(4, "little")
    )
    start = b"7z\xbc\xaf\x27\x1c\x00\x04" + zlib.crc32(tail).to_bytes(4, "little") + tail
    return start + packed + header


def write_7z(path: Path, members: list[tuple[str, bytes]], **options: Any) -> Path:
    with py7zr.SevenZipFile(path, "w", **options) as archive:
        for name, content in members:
            archive.writestr(content, name)
    return path


def scan(path: Path, **limits: int) -> pickles.FileVerdict:
    verdict = modelfiles.scan_file(path, limits=modelfiles.Limits(**limits))
    assert verdict is not None
    return verdict


def test_7z_with_allowed_pickle_is_safe_and_with_unknown_global_unsafe(tmp_path: Path) -> None:
    good = tmp_path / "good.7z"
    good.write_bytes(seven_zip("weights/data.pkl", STATE_DICT))
    verdict = modelfiles.scan_file(good)
    assert verdict is not None and verdict.kind is pickles.Kind.SAFE
    assert verdict.imports == ("collections.OrderedDict",)
    bad = tmp_path / "bad.7z"
    bad.write_bytes(seven_zip("data.pkl", UNKNOWN_CALL))
    verdict = modelfiles.scan_file(bad)
    assert verdict is not None and verdict.kind is pickles.Kind.UNSAFE
    assert "bad.7z:data.pkl: import mymodule.func is not on the allowlist" in verdict.message


def test_encrypted_7z_is_unscannable(tmp_path: Path) -> None:
    archive = tmp_path / "secret.7z"
    archive.write_bytes(seven_zip("data.pkl", STATE_DICT, coder=b"\x24\x06\xf1\x07\x01\x01\x00"))
    verdict = modelfiles.scan_file(archive)
    assert verdict is not None and verdict.kind is pickles.Kind.UNSCANNABLE
    assert "encrypted" in verdict.message


@pytest.mark.parametrize("header_encryption", [False, True], ids=["members", "header"])
def test_7z_written_with_a_password_is_unscannable(tmp_path: Path, header_encryption: bool) -> None:
    archive = write_7z(
        tmp_path / "secret.7z",
        [("data.pkl", UNKNOWN_CALL)],
        password="secret",
        header_encryption=header_encryption,
    )
    verdict = scan(archive)
    assert verdict.kind is pickles.Kind.UNSCANNABLE
    assert verdict.reasons == ("encrypted 7z archive",)


def test_7z_bomb_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.7z"
    archive.write_bytes(seven_zip("data.pkl", STATE_DICT, size=50_000))
    verdict = modelfiles.scan_file(archive, limits=modelfiles.Limits(max_member_bytes=10_000))
    assert verdict is not None and verdict.kind is pickles.Kind.UNSCANNABLE
    assert "over 10000" in verdict.message


def test_truncated_7z_is_malformed(tmp_path: Path) -> None:
    archive = tmp_path / "cut.7z"
    archive.write_bytes(seven_zip("data.pkl", STATE_DICT)[:-6])
    verdict = modelfiles.scan_file(archive)
    assert verdict is not None and verdict.kind is pickles.Kind.MALFORMED


def test_solid_archive_judges_pickles_by_name_and_by_magic(tmp_path: Path) -> None:
    members = [
        ("model/data.pkl", STATE_DICT),
        ("model/README.md", b"# a model\n"),
        ("model/weights", UNKNOWN_CALL),  # no pickle suffix: found by its magic number
        ("model/empty.txt", b""),
    ]
    verdict = scan(write_7z(tmp_path / "model.7z", members))
    assert verdict.kind is pickles.Kind.UNSAFE
    assert verdict.reasons == (
        "model.7z:model/weights: import mymodule.func is not on the allowlist",
    )
    assert verdict.imports == ("collections.OrderedDict", "mymodule.func")
    clean = scan(write_7z(tmp_path / "clean.7z", members[:2]))
    assert clean.kind is pickles.Kind.SAFE and clean.imports == ("collections.OrderedDict",)
    text = scan(write_7z(tmp_path / "text.7z", [("notes.txt", b"plain text")]))
    assert text.kind is pickles.Kind.SAFE and text.reasons == ("archive holds no pickles",)


@pytest.mark.parametrize(
    "filters",
    [
        [{"id": py7zr.FILTER_LZMA2}],
        [{"id": py7zr.FILTER_LZMA}],
        [{"id": py7zr.FILTER_X86}, {"id": py7zr.FILTER_LZMA2}],
        [{"id": py7zr.FILTER_DELTA}, {"id": py7zr.FILTER_LZMA2}],
        [{"id": py7zr.FILTER_DEFLATE}],
        [{"id": py7zr.FILTER_BZIP2}],
        [{"id": py7zr.FILTER_COPY}],
        [{"id": py7zr.FILTER_PPMD}],
        [{"id": py7zr.FILTER_ZSTD}],
        [{"id": py7zr.FILTER_BROTLI}],
    ],
    ids=["lzma2", "lzma", "bcj-lzma2", "delta-lzma2", "deflate", "bzip2", "copy", "ppmd", "zstd",
         "brotli"],
)  # fmt: skip
def test_every_coder_is_decoded_and_judged(tmp_path: Path, filters: list[dict[str, int]]) -> None:
    archive = write_7z(tmp_path / "coded.7z", [("data.pkl", UNKNOWN_CALL)], filters=filters)
    verdict = scan(archive)
    assert verdict.kind is pickles.Kind.UNSAFE, verdict.message
    assert verdict.imports == ("mymodule.func",)


def test_every_member_of_a_name_is_judged(tmp_path: Path) -> None:
    # Two members called data.pkl: the second, a protocol-0 pickle without magic, still counts.
    archive = write_7z(tmp_path / "twice.7z", [("data.pkl", STATE_DICT), ("data.pkl", SYSTEM_CALL)])
    verdict = scan(archive)
    assert verdict.kind is pickles.Kind.UNSAFE
    assert verdict.imports == ("collections.OrderedDict", "os.system")
    assert "dangerous import os.system" in verdict.message


def test_7z_limits_are_kept(tmp_path: Path) -> None:
    members = [(f"part-{index}.pkl", STATE_DICT) for index in range(3)]
    archive = write_7z(tmp_path / "parts.7z", members)
    assert scan(archive).kind is pickles.Kind.SAFE
    entries = scan(archive, max_entries=2)
    assert entries.kind is pickles.Kind.UNSCANNABLE
    assert entries.reasons == ("7z holds 3 entries, over 2",)
    budget = 2 * len(STATE_DICT)
    total = scan(archive, max_total_bytes=budget)
    assert total.kind is pickles.Kind.UNSCANNABLE
    assert total.reasons == (f"7z archive unpacks to {3 * len(STATE_DICT)} bytes, over {budget}",)
    size = archive.stat().st_size
    whole = scan(archive, max_member_bytes=size - 1)
    assert whole.kind is pickles.Kind.UNSCANNABLE
    assert whole.reasons == (f"7z archive over {size - 1} bytes",)


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (seven_zip("data.pkl", STATE_DICT, crc=0), "CrcError"),
        (seven_zip("data.pkl", STATE_DICT)[:-1] + b"\x01", "Bad7zFile"),  # header CRC
        (seven_zip("../evil.pkl", STATE_DICT), "Specified path is bad: ../evil.pkl"),
        (seven_zip("w/../../evil.pkl", STATE_DICT), "Specified path is bad"),
        # 7-Zip extracts a member with data as a file whatever its attributes say.
        (
            seven_zip("evil.pkl", SYSTEM_CALL, attributes=0x10),
            "7z member evil.pkl is marked a directory but holds data",
        ),
        (
            seven_zip("evil.pkl", SYSTEM_CALL, attributes=0x8000 | (0o140644 << 16)),  # unix socket
            "7z member evil.pkl is marked a socket but holds data",
        ),
        (seven_zip("data.pkl", STATE_DICT, substreams=False), "unreadable 7z archive"),
        (b"7z\xbc\xaf\x27\x1c" + b"\xff" * 40, "unreadable 7z archive"),
    ],
    ids=["member-crc", "header-crc", "climbs-out", "climbs-out-deeper", "directory-with-data",
         "socket-with-data", "no-substreams", "garbage"],
)  # fmt: skip
def test_hostile_7z_is_malformed(tmp_path: Path, blob: bytes, reason: str) -> None:
    archive = tmp_path / "hostile.7z"
    archive.write_bytes(blob)
    verdict = scan(archive)
    assert verdict.kind is pickles.Kind.MALFORMED, verdict.message
    assert not verdict.passes and reason in verdict.message


def test_unknown_coder_is_unscannable(tmp_path: Path) -> None:
    archive = tmp_path / "odd.7z"
    archive.write_bytes(seven_zip("data.pkl", STATE_DICT, coder=b"\x03\x7f\x7f\x7f"))
    verdict = scan(archive)
    assert verdict.kind is pickles.Kind.UNSCANNABLE
    assert "7z coder is not supported" in verdict.message


VALID = seven_zip("data.pkl", UNKNOWN_CALL)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_a_damaged_7z_never_crashes_nor_passes_unread(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    blob = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(6, len(blob) - 1))] = data.draw(st.integers(0, 255))
    archive = tmp_path_factory.mktemp("damaged") / "damaged.7z"
    archive.write_bytes(bytes(blob))
    verdict = scan(archive)
    # The pickle inside is unsafe: a damaged copy is unsafe, malformed or unscannable, never safe.
    assert not verdict.passes, verdict
    assert verdict.reasons


def test_py7zr_is_imported_only_when_a_7z_is_met() -> None:
    code = (
        "import sys; from muster.models import files; "
        "assert 'py7zr' not in sys.modules, 'imported eagerly'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

"""7-Zip archives opened with py7zr, inside Muster's limits.

picklescan reads 7z through py7zr too. Muster lets py7zr parse and decode, and bounds it:
the archive's size, its number of entries, every member's declared size and the declared
total are checked before anything is decoded, and every member's decoded bytes and the
archive's total (py7zr's ``max_extract_size``) while decoding. An encrypted archive is
reported, never guessed at. What py7zr refuses (a bad CRC, a name that climbs out of the
archive, a header it cannot parse) is malformed, so the file fails; so is a member whose
attributes make py7zr skip data that 7-Zip would still extract as a file, and an archive
whose decoded bytes do not add up to what its header declares (nothing py7zr leaves out
goes unjudged).

Members reach the caller one at a time, as each is decoded, so memory holds the member
being judged rather than the archive. A member the caller does not want (by name, or by its
first bytes) is decoded and counted but not kept.

py7zr is imported by this module alone, and this module only when a 7z archive is met:
importing it costs about 0.1 s (docs/performance.md), which a model without one never pays.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import IO

import py7zr
from py7zr import exceptions as py7zr_errors
from py7zr import io as py7zr_io

__all__ = ["HEAD", "Malformed", "Refused", "read_members"]

HEAD = 8  # bytes of a member shown to ``wanted``: enough for any magic number Muster knows

# py7zr names the second member called ``x`` ``x_0`` (and so on); the name before that suffix
# is the one a reader of the archive sees, so it is offered to ``wanted`` too.
_RENAMED = re.compile(r"_\d+$")


class Refused(Exception):
    """The archive cannot be inspected: encrypted, over a limit, or a coder py7zr lacks."""


class Malformed(Exception):
    """The archive does not parse or decode."""


class _Failed(Exception):
    """``judge`` raised: carried through py7zr untouched, re-raised as itself."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


Wanted = Callable[[str, bytes], bool]  # (member name, first HEAD bytes) -> keep it?
Judge = Callable[[str, bytes], None]  # (member name, content) of each member kept


def read_members(
    handle: IO[bytes],
    *,
    wanted: Wanted,
    judge: Judge,
    max_entries: int,
    max_member_bytes: int,
    max_total_bytes: int,
) -> None:
    """Decode every member of the 7z archive in ``handle``; ``judge`` the ones ``wanted``.

    Raises ``Refused`` or ``Malformed`` with a message that names the reason.
    """
    size = handle.seek(0, 2)
    handle.seek(0)
    if size > max_member_bytes:
        raise Refused(f"7z archive over {max_member_bytes} bytes")
    try:
        with py7zr.SevenZipFile(handle, mode="r", max_extract_size=max_total_bytes) as archive:
            declared = _check(archive, max_entries, max_member_bytes, max_total_bytes)
            factory = _Factory(wanted, judge, max_member_bytes)
            archive.extractall(factory=factory)
        # Every byte the header declares went through a member that was judged: a member
        # py7zr skipped, for whatever reason, would otherwise go unseen.
        decoded = sum(member.size() for member in factory.members)
        if decoded != declared or not all(member.closed for member in factory.members):
            raise Malformed(f"7z archive declares {declared} bytes, {decoded} were decoded")
    except (Refused, Malformed):
        raise
    except _Failed as failed:
        raise failed.error from None
    except py7zr_errors.PasswordRequired:
        raise Refused("encrypted 7z archive") from None
    except py7zr_errors.UnsupportedCompressionMethodError as error:
        raise Refused(f"7z coder is not supported: {error}") from None
    except py7zr_errors.DecompressionBombError as error:
        raise Refused(f"7z archive decompresses past {max_total_bytes} bytes ({error})") from None
    except Exception as error:  # py7zr, lzma, zlib, bz2...: whatever it is, the file fails
        raise Malformed(f"unreadable 7z archive: {type(error).__name__}: {error}") from None


def _check(
    archive: py7zr.SevenZipFile, max_entries: int, max_member_bytes: int, max_total_bytes: int
) -> int:
    """Refuse what the header declares before decoding a byte of it; the bytes declared."""
    members = list(archive.files)
    if len(members) > max_entries:
        raise Refused(f"7z holds {len(members)} entries, over {max_entries}")
    if archive.needs_password():
        raise Refused("encrypted 7z archive")
    total = 0
    for member in members:
        if member.emptystream:
            continue
        if member.is_directory or member.is_socket:
            # py7zr extracts no data for these; 7-Zip would write it out as a file.
            marked = "directory" if member.is_directory else "socket"
            raise Malformed(f"7z member {member.filename} is marked a {marked} but holds data")
        declared = member.uncompressed or 0
        if declared > max_member_bytes:
            raise Refused(
                f"7z member {member.filename} unpacks to {declared} bytes, over {max_member_bytes}"
            )
        total += declared
    if total > max_total_bytes:
        raise Refused(f"7z archive unpacks to {total} bytes, over {max_total_bytes}")
    return total


class _Factory(py7zr_io.WriterFactory):
    def __init__(self, wanted: Wanted, judge: Judge, limit: int) -> None:
        self._wanted = wanted
        self._judge = judge
        self._limit = limit
        self.members: list[_Member] = []

    def create(self, filename: str) -> py7zr_io.Py7zIO:
        member = _Member(filename, self._wanted, self._judge, self._limit)
        self.members.append(member)
        return member


class _Member(py7zr_io.Py7zIO):
    """Receives one member's bytes; keeps them only when wanted, and judges them at close."""

    def __init__(self, name: str, wanted: Wanted, judge: Judge, limit: int) -> None:
        self._name = name
        self._wanted = wanted
        self._judge = judge
        self._limit = limit
        self._size = 0
        # Chunks as decoded, joined once at the end; None once the member is known unwanted.
        self._kept: list[bytes] | None = []
        self._head = b""
        self._decided = False
        self._closed = False

    def write(self, s: bytes | bytearray) -> int:
        self._size += len(s)
        if self._size > self._limit:  # declared sizes were checked; this is what decodes
            raise Refused(f"7z member {self._name} decompresses past {self._limit} bytes")
        if self._kept is not None:
            self._kept.append(bytes(s))
            if not self._decided:
                self._head += s[: HEAD - len(self._head)]
                if len(self._head) >= HEAD:
                    self._decide()
        return len(s)

    def _decide(self) -> None:
        self._decided = True
        original = _RENAMED.sub("", self._name)
        if not (self._wanted(self._name, self._head) or self._wanted(original, self._head)):
            self._kept = None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._decided:
            self._decide()
        if self._kept is None:
            return
        data, self._kept = b"".join(self._kept), None
        try:
            self._judge(self._name, data)
        except Exception as error:
            raise _Failed(error) from error

    def read(self, size: int | None = None) -> bytes:
        return b""  # nothing reads a member back: it is judged as it closes

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self._size

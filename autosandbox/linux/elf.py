"""What an executable is, from its ELF headers alone (nothing is run): its class, and the
functions it imports from shared libraries.

A program that imports pam_open_session() opens login sessions for users (sshd, cron,
vsftpd, login, su); one that only authenticates (postgres's pam_authenticate) does not. A
sandbox on a unit confines every process it starts, sessions included, so this decides
whether learning a unit can see what its sandbox will confine.
"""

from __future__ import annotations

import struct

from autosandbox.linux.files import read_regular

ELF_MAGIC = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
SHT_DYNSYM = 11
MAX_SIZE = 256 << 20  # larger files are not read (a binary that big is not a daemon's)
SESSION_CALL = "pam_open_session"


def is_elf32(path: str) -> bool:
    head = read_regular(path, 5) or b""
    return head[:4] == ELF_MAGIC and len(head) == 5 and head[4] == ELFCLASS32


def imported_functions(path: str) -> frozenset[str] | None:
    """Names of the undefined symbols in .dynsym (what it takes from shared libraries);
    None when the file is not an ELF file we can read (a script, no section headers)."""
    data = read_regular(path, MAX_SIZE + 1)
    if data is None or len(data) > MAX_SIZE or data[:4] != ELF_MAGIC or len(data) < 64:
        return None
    try:
        return _undefined_dynamic_symbols(data)
    except (struct.error, IndexError, UnicodeDecodeError):
        return None  # truncated or odd headers: unknown, not "imports nothing"


def _undefined_dynamic_symbols(data: bytes) -> frozenset[str] | None:
    cls, order = data[4], {1: "<", 2: ">"}.get(data[5])
    if order is None or cls not in (ELFCLASS32, ELFCLASS64):
        return None
    wide = cls == ELFCLASS64
    shoff, shentsize, shnum = (struct.unpack_from(order + "Q", data, 0x28)[0],
                               *struct.unpack_from(order + "HH", data, 0x3A)) if wide else \
        (struct.unpack_from(order + "I", data, 0x20)[0],
         *struct.unpack_from(order + "HH", data, 0x2E))
    if shoff == 0 or shnum == 0:
        return None
    # (type, offset, size, link, entsize) of each section header
    fmt = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    sections = []
    for i in range(shnum):
        f = struct.unpack_from(fmt, data, shoff + i * shentsize)
        sections.append((f[1], f[4], f[5], f[6], f[9]))
    names: set[str] = set()
    for kind, offset, size, link, entsize in sections:
        if kind != SHT_DYNSYM or not entsize:
            continue
        strtab = sections[link][1]
        for at in range(offset, offset + size, entsize):
            if wide:
                name, _, _, shndx = struct.unpack_from(order + "IBBH", data, at)
            else:
                name, shndx = (struct.unpack_from(order + "I", data, at)[0],
                               struct.unpack_from(order + "H", data, at + 14)[0])
            if shndx == 0 and name:  # undefined: imported
                end = data.index(b"\0", strtab + name)
                names.add(data[strtab + name:end].decode("ascii"))
    return frozenset(names)


def opens_sessions(path: str) -> bool:
    """Whether the program opens users' login sessions (imports pam_open_session)."""
    imported = imported_functions(path)
    return imported is not None and SESSION_CALL in imported

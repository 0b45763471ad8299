"""The profile: what a traced program was seen to do. Versioned JSON, the contract between the
tracer (which fills it) and the synthesizer (which reads it). Nothing here knows systemd."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from autosandbox.errors import UserError
from autosandbox.linux.files import write_output

# 2: the subject is a typed record (Subject) and leaves out what it does not know; version 1
# (the subject as a free dict, with nulls) is read the same way.
PROFILE_VERSION = 2
READ_VERSIONS = (1, 2)
# Sources that say the fast tracer learned a profile (its syscall set came from tracefs): by
# raw_syscalls in earlier profiles, by each call's own entry event now.
FAST_SOURCES = frozenset({"tracefs:raw_syscalls", "tracefs:syscalls"})
MAX_EXAMPLES = 5
# Distinct entries kept per directory before they are counted in a PathGroup instead: a
# service that touches 400,000 files must not grow the learner (or the profile) without bound.
GROUP_LIMIT = 256
# Past this many entries in `paths`, a new path is only counted (left out: validation finds
# what is missing) until its directory has GROUP_LIMIT entries; then it is grouped as usual.
# Nothing is ever folded into a directory that did not have that many entries.
PATHS_MAX = 16384
GROUPS_MAX = 4096
DIRS_MAX = 65536  # directories whose entries are counted
ROOT_WRITES_MAX = 4096  # distinct paths written as root kept as capability evidence
# Distinct names remembered across all groups (to count `files` exactly); past it each new
# report counts as a new entry.
GROUP_SEEN_MAX = 131072
# File kinds a Fact records (what stat said at the end of tracing).
FACT_KINDS = ("dir", "file", "link", "char", "block", "fifo", "socket", "missing")
_STAT_KINDS = ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "link"),
               (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
               (stat.S_ISSOCK, "socket"))

# Access kinds recorded per path. Everything but read/exec/stat needs the file system writable.
ACCESS_KINDS = ("read", "write", "create", "delete", "rename", "exec", "mkdir", "chmod", "chown",
                "setattr", "stat")
WRITE_KINDS = frozenset({"write", "create", "delete", "rename", "mkdir", "chmod", "chown",
                         "setattr"})

# Behaviour flags: names are the contract with the synthesizer's catalogue.
FLAGS = (
    "wx_memory", "realtime", "personality", "namespaces", "mount", "module_load", "clock_set",
    "hostname_set", "keyring", "kernel_log", "proc_sys_write", "sys_write", "cgroup_write",
    "device_nodes", "setuid_bits_set", "sysv_ipc", "set_ids", "ptrace", "chroot", "bpf",
    "perf", "raw_io", "reboot", "proc_other_pids", "suid_exec", "filecap_exec",
)


@dataclass
class Evidence:
    """A count and a few examples: enough to explain a decision in one comment."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str, n: int = 1) -> None:
        self.count += n
        if example and example not in self.examples and len(self.examples) < MAX_EXAMPLES:
            self.examples.append(example)

    def merge(self, other: Evidence) -> None:
        self.count += other.count
        for ex in other.examples:
            self.add(ex, 0)

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "examples": list(self.examples)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        return cls(int(data["count"]), [str(x) for x in data.get("examples", [])])


@dataclass(frozen=True, order=True)
class Endpoint:
    family: str  # AF_INET, AF_INET6
    proto: str  # tcp, udp, raw, ...
    addr: str
    port: int

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "proto": self.proto, "addr": self.addr, "port": self.port}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        return cls(str(d["family"]), str(d["proto"]), str(d["addr"]), int(d["port"]))


@dataclass(frozen=True)
class Fact:
    """What the host's file system said about a path when tracing ended (lstat, not followed).

    Synthesis reads facts instead of the host, so it is a pure function of the profile and
    can run later or elsewhere. `target` is where a symlink resolves (realpath)."""

    kind: str  # one of FACT_KINDS
    uid: int = -1
    gid: int = -1
    mode: int = 0  # st_mode & 0o7777
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind != "missing":
            out.update(uid=self.uid, gid=self.gid, mode=f"{self.mode:04o}")
        if self.target is not None:
            out["target"] = self.target
        return out

    @classmethod
    def of_host(cls, path: str) -> Fact:
        """What lstat says of `path` on this host now; a symlink also says where it resolves."""
        try:
            st = os.lstat(path)
        except (OSError, ValueError):
            return cls("missing")
        kind = next((name for test, name in _STAT_KINDS if test(st.st_mode)), "file")
        target = os.path.realpath(path) if kind == "link" else None
        return cls(kind, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), target)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Fact:
        kind = str(d["kind"])
        if kind not in FACT_KINDS:
            raise ValueError(f"unknown fact kind {kind!r}")
        target = d.get("target")
        return cls(kind, int(d.get("uid", -1)), int(d.get("gid", -1)),
                   int(str(d.get("mode", "0")), 8), str(target) if target is not None else None)


@dataclass
class PathGroup:
    """More than GROUP_LIMIT distinct entries directly below one directory: counted here, with
    a few examples, instead of one entry each in Profile.paths."""

    kinds: dict[str, int] = field(default_factory=dict)  # access kind -> count
    files: int = 0  # distinct entries folded in
    examples: list[str] = field(default_factory=list)
    last: str = field(default="", repr=False, compare=False)  # the entry added last

    def add(self, path: str, kind: str, n: int, new: bool) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + n
        if new and path != self.last:
            self.files += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(path)

    def to_json(self) -> dict[str, Any]:
        return {"kinds": dict(sorted(self.kinds.items())), "files": self.files,
                "examples": list(self.examples)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PathGroup:
        return cls({str(k): int(n) for k, n in d.get("kinds", {}).items()}, int(d["files"]),
                   [str(x) for x in d.get("examples", [])])


def _key(name: str) -> dict[str, str]:
    """Field metadata: the JSON key of a field whose Python name would shadow a builtin."""
    return {"key": name}


def _decode(tp: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as the annotated type `tp`; ValueError names what is wrong."""
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # only `X | None` is used
        if value is None:
            return None
        (inner,) = (a for a in args if a is not type(None))
        return _decode(inner, value, where)
    if origin is list and isinstance(value, list):
        return [_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {str(k): _decode(args[1], v, f"{where}[{k!r}]") for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and issubclass(tp, Record) and isinstance(value, dict):
        return tp.from_json(value, where)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(tp, type) and isinstance(value, tp) and (tp is bool
                                                           or not isinstance(value, bool)):
        return value
    name = getattr(tp, "__name__", None) or str(tp)
    raise ValueError(f"{where}: expected {name}, got {value!r}")


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _fields_of(cls: Any) -> list[tuple[dataclasses.Field[Any], str]]:
    """A Record's fields but `extra`, each with its JSON key."""
    return [(f, f.metadata.get("key", f.name)) for f in dataclasses.fields(cls)
            if f.name != "extra"]


class Record:
    """A frozen dataclass whose JSON form is derived from its fields: each field under its
    name (or its metadata "key"), left out while it holds its default (files stay small, and
    an old file's nulls read as defaults). A class with an `extra` field keeps the keys it
    does not know there, and writes them back."""

    _hints: ClassVar[dict[str, Any]]  # each class's resolved annotations, on first use

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(getattr(self, "extra", {}))
        for f, key in _fields_of(self):
            value = getattr(self, f.name)
            default = (f.default if f.default_factory is dataclasses.MISSING
                       else f.default_factory())
            if value != default:
                out[key] = _encode(value)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> Self:
        where = where or cls.__name__.lower()
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        if "_hints" not in cls.__dict__:
            cls._hints = typing.get_type_hints(cls)
        fields = _fields_of(cls)
        missing = [key for f, key in fields if key not in data and f.default
                   is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{where}: no {missing[0]!r}")
        known = {f.name: _decode(cls._hints[f.name], data[key], f"{where}.{key}")
                 for f, key in fields if key in data}
        if "extra" in cls._hints:
            names = {key for _, key in fields}
            known["extra"] = {str(k): v for k, v in data.items() if k not in names}
        return cls(**known)


@dataclass(frozen=True)
class PrivilegedLine(Record):
    """What a `+` Exec line did: it runs outside the sandbox, so it is described, not merged."""

    kind: str = field(metadata=_key("exec"))  # ExecStartPre, ExecStart, ...
    path: str
    written: list[str] = field(default_factory=list)  # the first 20
    written_count: int = 0
    capabilities: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Subject(Record):
    """What was traced (a unit, or a command), as whom, and how the trace went.

    Frozen: tracing completes it with dataclasses.replace (duration, exit code, runs ...), so
    a subject held elsewhere (a merged profile's `merged`) never changes under its holder."""

    unit: str | None = None
    command: list[str] = field(default_factory=list)  # a plain command's argv
    cwd: str | None = None
    uid: int | None = None  # whom it runs as
    gid: int | None = None
    user: str | None = None  # the unit's User= and Group=
    group: str | None = None
    dynamic_user: bool = False
    unit_type: str | None = field(default=None, metadata=_key("type"))  # the unit's Type=
    # the unit's Exec lines: [directive, path, argument ...]
    exec_lines: list[list[str]] = field(default_factory=list, metadata=_key("exec"))
    # a unit of a user's manager: "user", and that user (systemd/manager.py Scope.to_json)
    manager: str | None = None
    manager_uid: int | None = None
    manager_user: str | None = None
    manager_home: str | None = None
    host: str | None = None  # names the profile in a merge (provenance.default_label)
    duration_s: float | None = None
    exit_code: int | None = None  # a command's
    partial: bool = False  # the trace was cut (--keep-partial)
    runs: int | None = None  # a scheduled unit's runs seen
    instances: int | None = None  # a per-connection template's instances traced
    privileged: list[PrivilegedLine] = field(default_factory=list)
    # the unit as learned (fragment and drop-ins) and its own settings, so `synthesize
    # PROFILE` scores and keeps against the same text as `learn` did; None: not stored
    unit_text: str | None = None
    kept: dict[str, str] | None = None
    merged: list[Subject] = field(default_factory=list)  # each merged profile's own subject
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @property
    def name(self) -> str:
        """The unit, else the command line."""
        return self.unit or " ".join(self.command)


@dataclass(frozen=True)
class _Codec:
    """How a Profile field is written to JSON and read back (the one place for each field)."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    omit_empty: bool = False  # left out while empty: fields added after the first profiles


def _json(encode: Callable[[Any], Any], decode: Callable[[Any], Any],
          omit_empty: bool = False) -> dict[str, _Codec]:
    """The metadata of a Profile field the file holds: its codec."""
    return {"codec": _Codec(encode, decode, omit_empty)}


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items()))


def _counts(d: dict[str, Any]) -> dict[str, int]:
    return {str(k): int(n) for k, n in d.items()}


def _key_counts(d: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {str(k): _counts(v) for k, v in d.items()}


def _objects(cls: Any) -> dict[str, _Codec]:
    """Keys to objects with their own to_json and from_json."""
    return _json(lambda v: {k: x.to_json() for k, x in sorted(v.items())},
                  lambda d: {str(k): cls.from_json(x) for k, x in d.items()})


_STRS = _json(list, lambda d: [str(x) for x in d])
_COUNTS = _json(_sorted, _counts)
_KEY_COUNTS = _json(_sorted, _key_counts)
_ENDPOINTS = _json(lambda v: [e.to_json() for e in sorted(v)],
                   lambda d: {Endpoint.from_json(e) for e in d})


def _codecs(cls: Any) -> list[tuple[dataclasses.Field[Any], _Codec]]:
    """The fields a profile file holds, each with its codec."""
    return [(f, f.metadata["codec"]) for f in dataclasses.fields(cls) if "codec" in f.metadata]


def _parent(path: str) -> str:
    return path.rpartition("/")[0] or "/"


def _counter_add(counter: dict[str, int], key: str, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


def _counter_add_all(counter: dict[str, int], other: dict[str, int]) -> None:
    for key, n in other.items():
        _counter_add(counter, key, n)


def _nested_add(mine: dict[str, dict[str, int]], theirs: dict[str, dict[str, int]]) -> None:
    for key, counts in theirs.items():
        _counter_add_all(mine.setdefault(key, {}), counts)


@dataclass
class Profile:
    # The fields a file holds, in its order, each with its codec (metadata, _json).
    subject: Subject = field(default_factory=Subject,
                             metadata=_json(lambda s: s.to_json(), Subject.from_json))
    # strace, tracefs:cap_capable, audit ...
    sources: list[str] = field(default_factory=list, metadata=_STRS)
    # path -> kind -> count
    paths: dict[str, dict[str, int]] = field(default_factory=dict, metadata=_json(
        lambda v: {p: _sorted(k) for p, k in sorted(v.items())}, _key_counts))
    # path -> errno -> n
    failed_paths: dict[str, dict[str, int]] = field(default_factory=dict, metadata=_KEY_COUNTS)
    # path -> setuid/setgid
    execs: dict[str, dict[str, bool]] = field(default_factory=dict, metadata=_json(
        _sorted, lambda d: {str(p): {str(k): bool(b) for k, b in v.items()}
                            for p, v in d.items()}))
    families: dict[str, int] = field(default_factory=dict, metadata=_COUNTS)
    # "AF_INET/SOCK_STREAM"
    socket_types: dict[str, int] = field(default_factory=dict, metadata=_COUNTS)
    binds: set[Endpoint] = field(default_factory=set, metadata=_ENDPOINTS)
    # we connected or sent to
    peers: set[Endpoint] = field(default_factory=set, metadata=_ENDPOINTS)
    # accepted from / received from
    inbound: set[Endpoint] = field(default_factory=set, metadata=_ENDPOINTS)
    # path -> op -> n
    unix_sockets: dict[str, dict[str, int]] = field(default_factory=dict, metadata=_KEY_COUNTS)
    # NETLINK_ROUTE, ...
    netlink: dict[str, int] = field(default_factory=dict, metadata=_COUNTS)
    syscalls: dict[str, int] = field(default_factory=dict, metadata=_COUNTS)
    failed_syscalls: dict[str, dict[str, int]] = field(default_factory=dict,
                                                       metadata=_KEY_COUNTS)
    capabilities: dict[str, Evidence] = field(default_factory=dict, metadata=_objects(Evidence))
    flags: dict[str, Evidence] = field(default_factory=dict, metadata=_objects(Evidence))
    warnings: list[str] = field(default_factory=list, metadata=_STRS)
    # directory -> group
    path_groups: dict[str, PathGroup] = field(default_factory=dict,
                                              metadata=_objects(PathGroup))
    # path -> what the host said
    facts: dict[str, Fact] = field(default_factory=dict, metadata=_objects(Fact))
    # Which merged host saw what (autosandbox/provenance.py); empty for a single run.
    provenance: dict[str, Any] = field(default_factory=dict,
                                       metadata=_json(lambda v: v, dict, omit_empty=True))
    # Paths written by traced processes running as root (fsuid and fsgid 0, no supplementary
    # groups): with the facts, the evidence for CAP_DAC_OVERRIDE (trace/dac.py).
    root_writes: dict[str, dict[str, int]] = field(
        default_factory=dict, metadata=_json(_sorted, _key_counts, omit_empty=True))
    # The host's mount points when tracing ended -> file system type (trace/facts.py): what
    # ProtectSystem=strict must make read-only besides the root (synth/rules.py).
    mounts: dict[str, str] = field(default_factory=dict, metadata=_json(
        _sorted, lambda d: {str(m): str(t) for m, t in d.items()}, omit_empty=True))
    # Written files logrotate renames as it rotates them -> its configuration file saying so
    # (trace/facts.py): their grant is their directory (synth/paths.py).
    rotated: dict[str, str] = field(default_factory=dict, metadata=_json(
        _sorted, lambda d: {str(f): str(c) for f, c in d.items()}, omit_empty=True))
    # Bookkeeping of the aggregation, not serialized: entries per directory, names seen per
    # group (hashes), failed paths left out past GROUP_LIMIT per directory.
    _children: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _failed_children: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _group_seen: set[int] = field(default_factory=set, repr=False, compare=False)
    failed_overflow: int = field(default=0, repr=False, compare=False)
    paths_overflow: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        for path in self.paths:
            _counter_add(self._children, _parent(path))
        for path in self.failed_paths:
            _counter_add(self._failed_children, _parent(path))

    # -- recording -----------------------------------------------------------------------
    def add_path(self, path: str, kind: str, n: int = 1) -> None:
        """Count an access; past GROUP_LIMIT distinct entries of one directory the rest are
        counted in its PathGroup (the first ones keep their own entries)."""
        kinds = self.paths.get(path)
        if kinds is None:
            parent = _parent(path)
            group = self.path_groups.get(parent)
            if group is None:
                children = self._children
                count = children.get(parent, 0)
                if parent == path or (count < GROUP_LIMIT and len(self.paths) < PATHS_MAX):
                    children[parent] = count + 1
                    kinds = self.paths[path] = {}
                elif count >= GROUP_LIMIT and len(self.path_groups) < GROUPS_MAX:
                    group = self.path_groups[parent] = PathGroup()
                else:
                    self.paths_overflow += 1
                    if count or len(children) < DIRS_MAX:
                        children[parent] = count + 1  # a big directory still gets its group
                    return
            if group is not None:
                seen = self._group_seen
                key = hash(path)
                new = key not in seen
                if new and len(seen) < GROUP_SEEN_MAX:
                    seen.add(key)
                group.add(path, kind, n, new)
                group.last = path
                return
            assert kinds is not None
        kinds[kind] = kinds.get(kind, 0) + n

    def add_failed_path(self, path: str, errno: str) -> None:
        errs = self.failed_paths.get(path)
        if errs is None:
            parent = _parent(path)
            count = self._failed_children.get(parent, 0)
            if count >= GROUP_LIMIT and not path.startswith(("socket:", "bind:", "syscall:")):
                self.failed_overflow += 1
                return
            self._failed_children[parent] = count + 1
            errs = self.failed_paths[path] = {}
        _counter_add(errs, errno)

    def add_root_write(self, path: str, kind: str) -> None:
        if path in self.root_writes or len(self.root_writes) < ROOT_WRITES_MAX:
            _counter_add(self.root_writes.setdefault(path, {}), kind)

    def add_cap(self, cap: str, reason: str, n: int = 1) -> None:
        self.capabilities.setdefault(cap, Evidence()).add(reason, n)

    def add_flag(self, flag: str, example: str) -> None:
        assert flag in FLAGS, flag
        self.flags.setdefault(flag, Evidence()).add(example)

    def add_family(self, family: str) -> None:
        _counter_add(self.families, family)

    def add_source(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)

    # -- queries -------------------------------------------------------------------------
    @property
    def fast_traced(self) -> bool:
        """The fast tracer learned it: the syscall set came from the kernel (tracefs or
        bpftrace), and strace skipped calls that rarely decide a directive (trace/command.py's
        FAST_SKIPPED, e.g. the peers of unconnected UDP sockets)."""
        return any(s in FAST_SOURCES for s in self.sources)

    def written_paths(self, with_groups: bool = False) -> dict[str, set[str]]:
        """Written paths and their write kinds; `with_groups` adds each PathGroup directory
        whose entries were written (as DIR/*; synthesis reads path_groups itself)."""
        out = {p: set(k) & WRITE_KINDS for p, k in self.paths.items() if set(k) & WRITE_KINDS}
        if with_groups:
            for d, g in self.path_groups.items():
                kinds = {k for k, n in g.kinds.items() if n} & WRITE_KINDS
                if kinds:
                    out[d.rstrip("/") + "/*"] = kinds
        return out

    def accessed(self, prefix: str) -> list[str]:
        """Paths at or below `prefix` that were touched in any way, failed ones included; a
        PathGroup there counts with its examples (or its directory)."""
        base = prefix.rstrip("/")

        def below(p: str) -> bool:
            return p == base or p.startswith(base + "/")

        found = {p for p in (*self.paths, *self.failed_paths) if below(p)}
        for d, g in self.path_groups.items():
            if below(d):
                found.update(g.examples or [d])
            elif below(d.rstrip("/") + "/"):  # prefix is an entry of the group's directory
                found.update(x for x in g.examples if below(x))
        return sorted(found)

    # -- merge and (de)serialization -----------------------------------------------------
    def merge(self, other: Profile) -> None:
        """Union `other` into this profile (another run, process or host)."""
        self._merge_paths(other)
        for src, dst in ((other.families, self.families), (other.socket_types, self.socket_types),
                         (other.syscalls, self.syscalls), (other.netlink, self.netlink)):
            for k, n in src.items():
                _counter_add(dst, k, n)
        self.binds |= other.binds
        self.peers |= other.peers
        self.inbound |= other.inbound
        for mine_n, theirs_n in ((self.unix_sockets, other.unix_sockets),
                                 (self.failed_syscalls, other.failed_syscalls)):
            _nested_add(mine_n, theirs_n)
        for p, kinds in other.root_writes.items():
            for k, n in kinds.items():
                if p in self.root_writes or len(self.root_writes) < ROOT_WRITES_MAX:
                    _counter_add(self.root_writes.setdefault(p, {}), k, n)
        for m, fstype in other.mounts.items():  # every host's mounts are made read-only
            self.mounts.setdefault(m, fstype)
        for f, conf in other.rotated.items():  # rotated on any host: rotated
            self.rotated.setdefault(f, conf)
        for mine_d, theirs_d in ((self.capabilities, other.capabilities),
                                 (self.flags, other.flags)):
            for k, ev in theirs_d.items():
                mine_d.setdefault(k, Evidence()).merge(ev)
        for s in other.sources:
            self.add_source(s)
        self.warnings.extend(w for w in other.warnings if w not in self.warnings)
        for path, fact in other.facts.items():
            self.facts.setdefault(path, fact)  # the first profile's host speaks for a path
        self.subject = dataclasses.replace(self.subject,
                                           merged=[*self.subject.merged, other.subject])

    def _merge_paths(self, other: Profile) -> None:
        """Paths, failed paths, executables and path groups, within this profile's bounds."""
        for p, kinds in other.paths.items():
            for k, n in kinds.items():
                self.add_path(p, k, n)
        for p, errs in other.failed_paths.items():
            for e, n in errs.items():
                if p not in self.failed_paths:
                    self.add_failed_path(p, e)  # counts 1, within the directory's bound
                    n -= 1
                if p in self.failed_paths and n:
                    _counter_add(self.failed_paths[p], e, n)
        for p, bits in other.execs.items():
            mine = self.execs.setdefault(p, {"setuid": False, "setgid": False})
            for b, v in bits.items():
                mine[b] = mine.get(b, False) or v
        for d, g in other.path_groups.items():
            mine_g = self.path_groups.setdefault(d, PathGroup())
            _counter_add_all(mine_g.kinds, g.kinds)
            mine_g.files += g.files
            mine_g.examples += [x for x in g.examples if x not in mine_g.examples]
            del mine_g.examples[MAX_EXAMPLES:]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": PROFILE_VERSION}
        for f, codec in _codecs(self):
            value = getattr(self, f.name)
            if value or not codec.omit_empty:
                out[f.name] = codec.encode(value)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        version = data.get("version")
        if version not in READ_VERSIONS:
            raise UserError(f"profile version {version!r} is not supported (this autosandbox "
                            f"reads versions {', '.join(map(str, READ_VERSIONS))})")
        try:
            return cls(**{f.name: codec.decode(data[f.name]) for f, codec in _codecs(cls)
                          if f.name in data})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"profile is malformed: {exc}") from None

    def save(self, path: Path) -> None:
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=True) + "\n"
        write_output(path, text.encode("utf-8", errors="surrogateescape"))

    @classmethod
    def load(cls, path: Path) -> Profile:
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise UserError(f"cannot read profile {path}: {exc.strerror}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not a profile (invalid JSON: {exc.msg}, "
                            f"line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise UserError(f"{path} is not a profile (expected a JSON object)")
        return cls.from_json(data)

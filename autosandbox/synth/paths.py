"""From written paths to the fewest writable locations, by rules that can be explained.

Every path is first resolved through the symlinks the profile's facts record (and the
/var/run -> /run aliases): a grant names what systemd will really make writable.
1. A file the service only wrote to (never created, removed or renamed) and that exists stays
   writable by itself, unless logrotate renames it (a fact recorded at trace time): a bind
   mount of the file would stay on the rotated one, so it counts as renamed (rule 2).
2. Files created, removed or renamed need their directory writable (a bind mount cannot make a
   missing file writable, and atomic renames replace the directory entry); a directory the
   service made itself counts as its own, so the topmost such directory is used. A directory
   with more entries than the profile keeps one by one (a path group) counts the same way.
3. Nothing at or below a place whose write access is a privilege escalation, and no shared
   top-level directory (/, /run, /var, /etc, /var/lib, ...), is granted unless the user named
   it (--allow-write): it is withheld with the reason (synth/sensitive.py). A file rewritten
   in place in a shared directory is granted by itself instead of its directory (not one
   logrotate renames: withheld, with how to keep it writable).
4. /var/lib/NAME, /var/cache/NAME, /var/log/NAME and /run/NAME of the unit's own name become
   StateDirectory= (and friends) only where systemd would change nothing on disk: the facts
   show the directory owned by the unit's user and group with exactly the mode systemd sets,
   the unit is not a template instance, and no dynamic user is involved. Otherwise the same
   directory is a ReadWritePaths= entry, with the reason. Writes below the unit's own
   declared *Directory= are covered by it.
5. /tmp and /var/tmp stay private (PrivateTmp=) unless the service read files there it did
   not create, or talked to sockets there: then /tmp is shared and the writes are listed
   (withheld, as broad places are). A unit that sets PrivateTmp=false itself keeps it: there
   the places it wrote below /tmp and /var/tmp are granted, the directories themselves
   included, or strict would make its shared /tmp read-only.
6. Places a rename may cross are one mount: each entry is a bind mount of its own, and
   rename(2) between two mounts fails with EXDEV even on one file system (postfix's queue
   manager moves each message from incoming/ to active/; a Maildir's tmp/ to new/). Entries
   below one parent that each hold a renamed path become that parent, where it may be granted
   (rules 3 and 4).
7. Entries below another entry are dropped. Nothing is generalized further than that.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from autosandbox.profile import WRITE_KINDS, Profile
from autosandbox.synth import sensitive
from autosandbox.synth.host import FileView
from autosandbox.synth.subject import EXEC_DIRS, SubjectView

API_FS = ("/dev/", "/proc/", "/sys/")
TMP_DIRS = ("/tmp", "/var/tmp")
HOME_DIRS = ("/home", "/root", "/run/user")
# What each step of ProtectSystem= mounts read-only (systemd.exec(5)); strict: all but the API
# file systems and the ReadWritePaths= entries.
READ_ONLY_BY = {"strict": ("/",), "full": ("/usr", "/boot", "/efi", "/etc"),
                "yes": ("/usr", "/boot", "/efi")}
MANAGED = tuple((base + "/", directive) for directive, base in EXEC_DIRS.items())
# Never granted as a whole (kept for callers; synth/sensitive.py decides what is withheld).
BROAD = frozenset({"/usr", "/opt", "/boot", "/home", "/root"} | sensitive.BROAD)
_CREATION = frozenset({"create", "delete", "rename", "mkdir"})
_REPLACING = frozenset({"delete", "rename", "mkdir"})  # the directory entry itself changes
# The mode systemd gives an exec directory unless the unit sets *DirectoryMode=.
EXEC_DIR_MODE = 0o755


def under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def writable_anyway(path: str, protect_system: str, protect_home: str) -> bool:
    """`path`, withheld from the grants, is writable all the same under these values (a
    validation that relaxed ProtectSystem=strict to full leaves all of /var writable)."""
    if path.startswith(API_FS):
        return False  # never granted, whatever the step
    if any(under(path, h) for h in HOME_DIRS) and protect_home in ("yes", "read-only",
                                                                     "tmpfs"):
        return False
    return not any(under(path, r) for r in READ_ONLY_BY.get(protect_system, ()))


def _octal(text: str | None, default: int) -> int:
    try:
        return int(text, 8) if text else default
    except ValueError:
        return default


@dataclass
class Anchor:
    path: str
    why: str
    examples: list[str] = field(default_factory=list)
    count: int = 0
    missing_ok: bool = False
    note: str = ""  # why a directory of the service's own stayed a ReadWritePaths= entry
    granted_by: str = ""  # why a broad place is granted (default: --allow-write names it)

    @property
    def broad(self) -> bool:
        return self.path in BROAD

    def add(self, example: str, n: int = 1) -> None:
        self.count += n
        if example not in self.examples and len(self.examples) < 3:
            self.examples.append(example)

    def evidence(self) -> str:
        more = f" (+{self.count - len(self.examples)} more)" if self.count > len(
            self.examples) else ""
        return f"{self.why}: {', '.join(self.examples)}{more}" + (
            f". {self.note}" if self.note else "")


@dataclass
class Withheld:
    """Write access the evidence asked for and that is not granted."""

    path: str  # what would have been made writable
    why: str
    examples: list[str] = field(default_factory=list)
    count: int = 0
    hint: str = ""
    verb: str = "written"

    def line(self) -> str:
        more = f" (+{self.count - len(self.examples)} more)" if self.count > len(
            self.examples) else ""
        return (f"{', '.join(self.examples)}{more} {self.verb} ({self.why}): "
                f"{self.hint or f'--allow-write {self.path} grants it'}")

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "why": self.why, "examples": self.examples,
                "count": self.count, "hint": self.hint}


@dataclass
class WritePlan:
    anchors: dict[str, Anchor] = field(default_factory=dict)  # path -> ReadWritePaths entry
    managed: dict[str, dict[str, Anchor]] = field(default_factory=dict)  # directive -> name
    preserve_runtime: bool = False  # RuntimeDirectoryPreserve=yes goes with RuntimeDirectory=
    withheld: dict[str, Withheld] = field(default_factory=dict)
    covered: dict[str, list[str]] = field(default_factory=dict)  # "StateDirectory=x" -> paths
    tmp_writes: list[str] = field(default_factory=list)
    tmp_shared: list[str] = field(default_factory=list)  # evidence that /tmp is shared
    home_writes: list[str] = field(default_factory=list)
    # resolved path -> (as shown, access kinds): what the service created (for UMask=)
    created: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)

    def writable(self) -> list[str]:
        return [*self.anchors, *(m.path for d in self.managed.values() for m in d.values())]


def is_own(name: str, service: str | None) -> bool:
    """Whether a directory NAME is the service's own: named after it (`nginx`, `nginx-cache`)."""
    if not service:
        return False
    first = name.split("/", 1)[0]
    return first == service or first.startswith((service + "-", service + ".", service + "_"))


@dataclass
class _Write:
    path: str  # resolved
    literal: str  # as recorded
    kinds: set[str]
    count: int = 1
    example: str = ""

    def __post_init__(self) -> None:
        if not self.example:
            self.example = (self.literal if self.literal == self.path
                            else f"{self.literal} (= {self.path})")


def _writes(profile: Profile, view: FileView) -> list[_Write]:
    out: list[_Write] = []
    for path, kinds in sorted(profile.written_paths().items()):
        out.append(_Write(_resolved(path, kinds, view), path, kinds))
    for d, group in sorted(profile.path_groups.items()):
        kinds = {k for k, n in group.kinds.items() if n} & WRITE_KINDS
        if kinds:
            # Many entries of one directory: it is where they were written (never a file of
            # it: the entry below stands for all of them and exists under no such name).
            rd = view.resolve(d)
            eg = f", e.g. {group.examples[0]}" if group.examples else ""
            out.append(_Write(rd + "/\x00group", d, kinds | {"create"}, max(1, group.files),
                              f"{group.files} entries of {d}{eg}"))
    return [w for w in out if not (w.path.startswith(API_FS)
                                   or w.path in ("/dev", "/proc", "/sys"))]


def _resolved(path: str, kinds: set[str], view: FileView) -> str:
    """Where a write really went: an open follows a final symlink, an unlink/rename does not."""
    if kinds & _CREATION:
        parent = os.path.dirname(path) or "/"
        return os.path.join(view.resolve(parent), os.path.basename(path))
    return view.resolve(path)


def plan_writes(profile: Profile, subject: SubjectView, view: FileView,
                allowed: Sequence[str] = ()) -> WritePlan:
    plan = WritePlan()
    writes = _writes(profile, view)
    made_dirs = {w.path for w in writes if "mkdir" in w.kinds}
    for w in writes:
        # a rename's target is a new file too (memcached writes pid.tmp, renames it)
        if w.kinds & {"create", "mkdir", "rename"}:
            plan.created.setdefault(w.path, (w.example, frozenset(w.kinds)))
    _tmp_shared(plan, profile, view)
    kept_shared = _unit_shares_tmp(subject)
    if kept_shared:
        plan.tmp_shared.insert(0, kept_shared)
    declared = subject.declared_paths()
    for w in writes:
        tmp = next((t for t in TMP_DIRS if under(w.path, t)), None)
        if tmp is not None:
            plan.tmp_writes.append(w.literal)
            if not plan.tmp_shared:
                continue  # PrivateTmp= gives the service its own
            if kept_shared:
                # the unit's own choice, not the service's evidence: under strict its shared
                # /tmp would turn read-only (mariadb: PrivateTmp=false, its temporary tables)
                _place(plan, w, subject, view, made_dirs, (*allowed, tmp))
                if tmp in plan.anchors and tmp not in allowed:
                    plan.anchors[tmp].granted_by = f"{kept_shared} (strict would make its " \
                        "shared /tmp read-only)"
                continue
        if any(under(w.path, h) for h in HOME_DIRS):
            plan.home_writes.append(w.literal)
        own = next(((d, directive) for d, directive in declared if under(w.path, d)), None)
        if own is not None:
            name = own[0].rsplit("/", 1)[1]
            plan.covered.setdefault(f"{own[1]}={name}", []).append(w.literal)
            continue
        _place(plan, w, subject, view, made_dirs, allowed)
    _join_renamed(plan, writes, subject, allowed)
    _managed(plan, subject, view)
    _drop_covered(plan)
    return plan


def _unit_shares_tmp(subject: SubjectView) -> str | None:
    """The unit itself keeps /tmp shared (PrivateTmp= off, which the sandbox never loosens)."""
    value = subject.settings.get("PrivateTmp", "").strip()
    if value.lower() in ("no", "false", "off", "0"):
        return f"the unit sets PrivateTmp={value}"
    return None


def _tmp_shared(plan: WritePlan, profile: Profile, view: FileView) -> None:
    """Rule 5: is /tmp shared with others (files read there that the service did not make,
    sockets there)?"""
    created = set(plan.created)
    for path in profile.paths:
        if "read" not in profile.paths[path] or not any(
                under(sensitive.canonical(path), t) for t in TMP_DIRS):
            continue
        rp = view.resolve(path)
        if (any(under(rp, t) for t in TMP_DIRS) and rp not in TMP_DIRS
                and "read" in profile.paths[path] and rp not in created
                and view.kind(rp) != "dir"):
            plan.tmp_shared.append(f"read {path}")
    for sock in profile.unix_sockets:
        if any(under(sock, t) for t in TMP_DIRS):
            plan.tmp_shared.append(f"socket {sock}")


def _place(plan: WritePlan, w: _Write, subject: SubjectView, view: FileView,
           made_dirs: set[str], allowed: Sequence[str]) -> None:
    """Rules 1-3 for one write: the entry that makes it writable, or why it is withheld."""
    rotated = view.rotated_by(w.path)
    anchor, why = _anchor_for(w.path, w.kinds | ({"rename"} if rotated else set()), made_dirs,
                              view)
    if rotated:
        why = (f"its files are renamed by logrotate ({rotated}): a grant of the file itself "
               "would stay on the rotated one")
    example = w.example
    reason = sensitive.withheld(anchor, allowed, subject.home)
    if reason is None:
        _add(plan.anchors, anchor, why, example, w.count)
        return
    # A file it may create (O_CREAT) on a file system emptied at boot is missing after the
    # next one: its grant (missing_ok) is then skipped and the read-only directory refuses the
    # new file (haproxy's /run/haproxy.pid, lighttpd's /run/lighttpd.pid, which it also
    # removes at stop: its validation fell back to ProtectSystem=full).
    recreated = "create" in w.kinds and view.volatile(w.path)
    if (anchor != w.path and _shared_dir(anchor) and not w.kinds & _REPLACING
            and not rotated and not recreated and view.kind(w.path) == "file"
            and sensitive.withheld(w.path, allowed, subject.home) is None):
        _add(plan.anchors, w.path, f"rewritten in place in the shared directory {anchor} "
             "(the file itself, not the directory)", example, w.count, missing_ok=True)
        return
    hint = f"--allow-write {anchor} grants it"
    if rotated:
        hint = (f"logrotate renames {w.literal} ({rotated}), so a grant of the file alone "
                "would break at its first rotation: rotate it with copytruncate, give the "
                f"service a directory of its own below {anchor}, or {hint}")
    elif anchor == "/":  # the whole file system is no grant to suggest
        hint = (f"give the service a directory of its own (e.g. "
                f"{_own_dir_hint(anchor, subject.service)})")
    elif _shared_dir(anchor):
        hint = (f"give the service a directory of its own below {anchor} (e.g. "
                f"{_own_dir_hint(anchor, subject.service)}), or {hint}")
    wh = plan.withheld.setdefault(anchor, Withheld(anchor, reason, hint=hint))
    wh.count += w.count
    if example not in wh.examples and len(wh.examples) < 3:
        wh.examples.append(example)


def _join_renamed(plan: WritePlan, writes: list[_Write], subject: SubjectView,
                  allowed: Sequence[str]) -> None:
    """Rule 6: entries that each hold a renamed path, below a parent that may be granted,
    become that parent (the nearest one two of them share), so that a rename between them
    stays within one mount. Seen: postfix under its learned drop-in ("qmgr: rename from
    incoming to active: Invalid cross-device link"), no mail delivered."""
    while True:
        renamed = sorted({a for w in writes if "rename" in w.kinds
                          for a in plan.anchors if under(w.path, a)})
        joined = False
        for parent in sorted({os.path.commonpath([a, b]) for a in renamed for b in renamed
                              if a < b}, key=len, reverse=True):
            members = [a for a in renamed if a != parent and under(a, parent)]
            if (len(members) < 2 or parent in plan.anchors or _shared_dir(parent)
                    or sensitive.withheld(parent, allowed, subject.home) is not None):
                continue
            anchor = Anchor(parent, "written, and renamed between "
                            + ", ".join(members[:3])
                            + (f" (+{len(members) - 3} more)" if len(members) > 3 else "")
                            + " (one mount: a rename between two fails with EXDEV)")
            for m in members:
                old = plan.anchors.pop(m)
                for e in old.examples:
                    anchor.add(e, 0)
                anchor.count += old.count
            plan.anchors[parent] = anchor
            joined = True
            break
        if not joined:
            return


def _drop_covered(plan: WritePlan) -> None:
    """Rule 7: drop entries covered by another entry or by a managed directory."""
    covering = plan.writable()
    for a in sorted(plan.anchors, key=len, reverse=True):
        outer = next((c for c in sorted(covering, key=len) if c != a and under(a, c)), None)
        if outer is not None:
            if outer in plan.anchors:
                plan.anchors[outer].count += plan.anchors[a].count
            del plan.anchors[a]
            covering = [c for c in covering if c != a]


def _shared_dir(path: str) -> bool:
    return path in sensitive.BROAD or path.count("/") == 1


def _own_dir_hint(base: str, service: str | None) -> str:
    name = service or "NAME"
    if base == "/":  # a directory of its own at the top is no better: its state directory
        return f"/var/lib/{name} with StateDirectory={name} in the unit"
    for directive, b in EXEC_DIRS.items():
        if b == base:
            return f"{b}/{name} with {directive}={name} in the unit"
    return f"{base.rstrip('/')}/{name}"


def _add(anchors: dict[str, Anchor], path: str, why: str, example: str, n: int = 1,
         missing_ok: bool = False) -> None:
    a = anchors.get(path)
    if a is None:
        a = anchors[path] = Anchor(path, why, missing_ok=missing_ok)
    a.add(example, n)


def _managed(plan: WritePlan, subject: SubjectView, view: FileView) -> None:
    """Rule 4: the service's own directories that systemd can manage without touching them."""
    for a in sorted(plan.anchors):
        for base, directive in MANAGED:
            if not a.startswith(base) or "/" in a[len(base):]:
                continue
            name = a[len(base):]
            f = view.fact(a)
            if not is_own(name, subject.service) or (f is not None and f.kind != "dir"):
                break  # another's, or a file (/run/NAME.pid): no directory to manage
            anchor = plan.anchors[a]
            refused = _exec_dir_refusal(a, directive, subject, view)
            if refused:
                anchor.note = f"Not {directive}={name}: {refused}"
                break
            moved = plan.anchors.pop(a)
            moved.why = "written below"
            moved.note = (f"the service's own directory, already owned by "
                          f"{_ids(subject)} with mode "
                          f"{_mode_for(directive, subject):04o}: systemd changes nothing")
            plan.managed.setdefault(directive, {})[name] = moved
            if directive == "RuntimeDirectory" and \
                    subject.settings.get("RuntimeDirectoryPreserve", "").lower() != "yes":
                plan.preserve_runtime = True
            break


def _ids(subject: SubjectView) -> str:
    return f"uid {subject.uid}, gid {subject.gid}"


def _mode_for(directive: str, subject: SubjectView) -> int:
    return _octal(subject.settings.get(directive + "Mode"), EXEC_DIR_MODE)


def _exec_dir_refusal(path: str, directive: str, subject: SubjectView,
                      view: FileView) -> str | None:
    """Why systemd managing `path` as `directive` could change something (None: it cannot)."""
    if subject.unit is None:
        return "not learned from a unit, so its user is unknown"
    if subject.is_instance:
        return "a template instance: the directory would be shared with the other instances"
    if subject.dynamic_user:
        return "DynamicUser= would move it below a private directory"
    if subject.uid is None or subject.gid is None:
        return "the unit's user and group were not recorded"
    f = view.fact(path)
    if f is None or f.kind != "dir":
        return "nothing recorded about it" if f is None else f"it is {f.kind}, not a directory"
    mode = _mode_for(directive, subject)
    if (f.uid, f.gid, f.mode) != (subject.uid, subject.gid, mode):
        return (f"it is uid {f.uid}, gid {f.gid}, mode {f.mode:04o}; systemd would make it "
                f"uid {subject.uid}, gid {subject.gid}, mode {mode:04o}")
    if directive == "RuntimeDirectory":
        own = subject.declared.get("RuntimeDirectory") or subject.settings.get(
            "RuntimeDirectory")
        keep = subject.settings.get("RuntimeDirectoryPreserve", "").lower()
        if own and keep != "yes":
            return ("RuntimeDirectoryPreserve=yes, needed so stopping keeps it, would also "
                    "keep the unit's own RuntimeDirectory=")
    return None


def _anchor_for(path: str, kinds: set[str], made_dirs: set[str],
                view: FileView) -> tuple[str, str]:
    if not kinds & _CREATION:
        if view.exists(path):
            return path, "written"
        return _existing(os.path.dirname(path) or "/", view), "written, since removed"
    if "mkdir" in kinds and not kinds & {"delete", "rename"} and view.exists(path):
        start = path
    else:
        start = os.path.dirname(path) or "/"
    # Climb through directories the service made itself (rule 2) to the topmost that exists.
    top = start
    while (os.path.dirname(top) != top and os.path.dirname(top) in made_dirs
           and view.exists(os.path.dirname(top))):
        top = os.path.dirname(top)
    return _existing(top, view), "files created/removed/renamed in it"


def _existing(path: str, view: FileView) -> str:
    while not view.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path) or "/"
    return path

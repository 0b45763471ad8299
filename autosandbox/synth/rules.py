"""Rules that decide a directive from a profile, for rows the generic flag rule cannot decide.

Every rule returns Settings (with their evidence) and Omissions (with the reason); values are
rendered through unitfile, so nothing a traced program named reaches the drop-in raw.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autosandbox import unitfile
from autosandbox.linux.capabilities import CAP_NAMES
from autosandbox.linux.devices import PSEUDO_DEVICE_PREFIXES, PSEUDO_DEVICES
from autosandbox.profile import WRITE_KINDS, Endpoint, Profile
from autosandbox.synth import sensitive
from autosandbox.synth.host import FileView
from autosandbox.synth.model import Omission, Setting
from autosandbox.synth.paths import HOME_DIRS, TMP_DIRS, Withheld, WritePlan, under
from autosandbox.synth.subject import SubjectView
from autosandbox.synth.target import Target

if TYPE_CHECKING:  # the catalogue's rows name the rules below: it imports this module
    from autosandbox.synth.catalogue import Directive

FLAG_TEXT: dict[str, str] = {
    "wx_memory": "writable+executable memory", "realtime": "realtime scheduling",
    "personality": "personality() changes", "namespaces": "namespace creation",
    "mount": "mounts", "module_load": "kernel module loading", "clock_set": "clock setting",
    "hostname_set": "host name changes", "keyring": "kernel keyring use",
    "kernel_log": "kernel log reads", "proc_sys_write": "writes to /proc/sys",
    "sys_write": "writes to /sys", "cgroup_write": "cgroupfs writes",
    "device_nodes": "device nodes", "setuid_bits_set": "setting setuid/setgid bits",
    "sysv_ipc": "SysV IPC", "set_ids": "uid/gid changes", "ptrace": "ptrace",
    "chroot": "chroot", "bpf": "bpf()", "perf": "perf events", "raw_io": "raw I/O ports",
    "reboot": "reboot/kexec", "proc_other_pids": "other processes in /proc",
    "suid_exec": "executing setuid/setgid binaries",
    "filecap_exec": "executing binaries with file capabilities",
}
NS_NAMES = {"CLONE_NEWNS": "mnt", "CLONE_NEWUTS": "uts", "CLONE_NEWIPC": "ipc",
            "CLONE_NEWUSER": "user", "CLONE_NEWPID": "pid", "CLONE_NEWNET": "net",
            "CLONE_NEWCGROUP": "cgroup", "CLONE_NEWTIME": "time"}
_FAMILY = re.compile(r"^AF_[A-Z0-9]+$")
_SYSCALL = re.compile(r"^[a-z0-9_]+$")
_PROC_OWN = re.compile(r"^/proc(/(\d+|self|thread-self)(/.*)?)?$")


@dataclass
class Context:
    profile: Profile
    target: Target
    subject: SubjectView
    view: FileView
    plan: WritePlan
    allow_write: Sequence[str] = ()
    ip_allow: Sequence[str] = ()  # peers the user pins (--ip-allow), already validated
    warnings: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    withheld: list[Withheld] = field(default_factory=list)  # besides the plan's
    # file systems ProtectSystem=strict leaves writable (a pid file the service makes in /run)
    left_writable: list[str] = field(default_factory=list)

    @property
    def service(self) -> str | None:
        return self.subject.service


# What a rule decides for its directive (results.Result is the whole learn's outcome).
Decisions = list[Setting | Omission]
Rule = Callable[[Context, "Directive"], Decisions]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def flag_rule(ctx: Context, d: Directive) -> Decisions:
    p = ctx.profile
    hits = [f for f in d.blocked_by if f in p.flags]
    if hits:
        ev = p.flags[hits[0]]
        why = (f"needed: {FLAG_TEXT.get(hits[0], hits[0])} seen {_plural(ev.count, 'time')}"
               f" ({', '.join(ev.examples[:2])})")
        return [Omission(d.name, why)]
    for prefix in d.blocked_paths:
        seen = p.accessed(prefix)
        if seen:
            return [Omission(d.name, f"needed: accessed {seen[0]}"
                                     + (f" (+{len(seen) - 1} more)" if len(seen) > 1 else ""))]
    what = ", ".join(FLAG_TEXT.get(f, f) for f in d.blocked_by) or d.restricts
    return [Setting(d.name, [d.tightest], f"not seen: {what}")]


def protect_system(ctx: Context, d: Directive) -> Decisions:
    plan = ctx.plan
    n = len(plan.anchors) + sum(len(v) for v in plan.managed.values())
    if n:
        # what the trace saw, not what the setting promises: true after a relaxation too
        ev = f"writable below: the {_plural(n, 'location')} the service wrote"
    elif plan.withheld or plan.covered:
        ev = "no location made writable"
    else:
        ev = "nothing written outside /dev, /proc, /sys and private /tmp"
    if plan.covered:
        ev += "; already writable through the unit's own " + ", ".join(
            f"{k} ({_plural(len(v), 'path')}, e.g. {v[0]})"
            for k, v in sorted(plan.covered.items()))
    if plan.withheld:
        ev += f"; {_plural(len(plan.withheld), 'place')} withheld (see Withheld)"
    out: Decisions = [Setting(d.name, ["strict"], ev)]
    covered, left = separate_mounts(ctx)
    if covered:
        values = [v for v in (unitfile.path_value(m, "-") for m in covered) if v]
        why = ("systemd 252 leaves separate file systems writable under ProtectSystem=strict "
               "when ProtectKernelTunables=, ProtectControlGroups= or ProtectProc= is set "
               "(measured: /run in a VM and a container); read-only as strict means, the "
               "paths made writable below excepted")
        if left:
            why += "; left as systemd leaves it: " + "; ".join(left)
        if any(m in sensitive.RUNTIME_CONFIG for m in covered):
            why += ("; what root's tools load from there stays read-only (runtime units in "
                    "/run/systemd, udev rules, tmpfiles, sudo's timestamps, ...)")
        out.append(Setting("ReadOnlyPaths", values, why))
    return out


# File systems whose mount point a bind mount may hang on or that are not the host's to
# protect (network, FUSE, automount, namespace files): strict leaves them to systemd.
_REMOTE = ("nfs", "nfs4", "cifs", "smb3", "autofs", "9p", "ceph", "glusterfs", "nsfs")
_OTHERS = ("/proc", "/sys", "/dev", *TMP_DIRS, *HOME_DIRS)  # other directives' domains


def separate_mounts(ctx: Context) -> tuple[list[str], list[str]]:
    """The host's mount points besides / that ProtectSystem=strict must cover (the topmost
    of each tree), and those left writable with the reason: one the service creates files
    directly in (a pid file in /run), or one below a path it may write."""
    writable = [ctx.view.resolve(p) for p in ctx.plan.writable()]
    text = ctx.profile.subject.unit_text
    if text is not None:  # the unit's own grants (every line, not only the last)
        for value in unitfile.values_of(text, "ReadWritePaths"):
            writable += [ctx.view.resolve(w.lstrip("-+")) for w in unitfile.split_words(value)]
    writable += [path for path, _ in ctx.subject.declared_paths()]
    created_in = {w.path: w.examples[0] if w.examples else w.path
                  for w in ctx.plan.withheld.values()}
    covered: list[str] = []
    left: list[str] = []
    guarded: list[str] = []  # sensitive.RUNTIME_CONFIG below a file system left writable
    for m, fstype in sorted(ctx.profile.mounts.items()):
        if (m == "/" or any(under(m, o) for o in _OTHERS) or fstype in _REMOTE
                or fstype.startswith("fuse") or any(under(m, c) for c in covered)):
            continue
        if any(under(m, w) for w in writable):
            continue  # a grant covers it: the more specific path decides
        if m in created_in:
            left.append(f"{m} (it writes {created_in[m]} there)")
            ctx.left_writable.append(m)
            # a socket below stays usable read-only (sd_notify, the journal): a read-only
            # mount refuses writes to files and directories only
            written = [p for p, kinds in ctx.profile.paths.items() if WRITE_KINDS & set(kinds)]
            guarded.extend(g for g in sensitive.RUNTIME_CONFIG if under(g, m) and not any(
                under(w, g) or under(g, w) for w in [*written, *writable]))
            continue
        covered.append(m)
    return covered + sorted(set(guarded)), left


def write_paths(ctx: Context, d: Directive) -> Decisions:
    out: Decisions = []
    if d.name == "ReadWritePaths":
        for a in sorted(ctx.plan.anchors.values(), key=lambda a: a.path):
            value = unitfile.path_value(a.path, "-" if a.missing_ok else "")
            if value is None:
                ctx.warnings.append(f"left out a writable path that cannot be written safely "
                                    f"into a unit file: {a.path!r}")
                continue
            ev = a.evidence()
            if a.broad:
                ev += f". Broad: granted because {a.granted_by or f'--allow-write names {a.path}'}"
            out.append(Setting(d.name, [value], ev))
        return out
    for name, m in sorted(ctx.plan.managed.get(d.name, {}).items()):
        value = unitfile.name_value(name)
        if value is None:
            ctx.warnings.append(f"left out {d.name}: unsafe name {name!r}")
            continue
        out.append(Setting(d.name, [value], m.evidence()))
    if out and d.name == "RuntimeDirectory" and ctx.plan.preserve_runtime:
        out.append(Setting("RuntimeDirectoryPreserve", ["yes"],
                           "the directory existed before the service: stopping must not "
                           "remove it (systemd removes a RuntimeDirectory= at stop otherwise)"))
    return out


def protect_home(ctx: Context, d: Directive) -> Decisions:
    p = ctx.profile
    reads: list[str] = []
    for path, kinds in p.paths.items():
        if any(under(path, h) for h in HOME_DIRS) and set(kinds) - {"stat"}:
            reads.append(path)
    if ctx.plan.home_writes:
        first = ctx.plan.home_writes[0]
        granted = any(under(ctx.view.resolve(first), w) for w in ctx.plan.writable())
        where = "listed in ReadWritePaths=" if granted else "withheld (see Withheld)"
        return [Setting(d.name, ["read-only"],
                        f"writes below home directories ({first}) are {where}")]
    if reads:
        return [Setting(d.name, ["read-only"], f"reads below home directories: {sorted(reads)[0]}"
                        + (f" (+{len(reads) - 1} more)" if len(reads) > 1 else ""))]
    looked = [x for h in HOME_DIRS for x in p.accessed(h)]
    ev = "no file below /home, /root, /run/user read or written"
    if looked:
        ev += f" (only looked up: {looked[0]})"
    return [Setting(d.name, ["yes"], ev)]


def private_tmp(ctx: Context, d: Directive) -> Decisions:
    plan = ctx.plan
    if plan.tmp_shared:
        return [Omission(d.name, f"/tmp is shared with other processes: {plan.tmp_shared[0]}")]
    if plan.tmp_writes:
        return [Setting(d.name, ["yes"],
                        f"{_plural(len(plan.tmp_writes), 'file')} written in /tmp or /var/tmp, "
                        "none shared with other processes")]
    return [Setting(d.name, ["yes"], "no shared use of /tmp or /var/tmp seen")]


def _device_paths(ctx: Context) -> list[tuple[str, str]]:
    """(path, kind) of the device nodes opened (char or block, as the facts say)."""
    p = ctx.profile
    out = []
    for path in p.paths:
        if (path.startswith("/dev/") and path not in PSEUDO_DEVICES
                and not path.startswith(PSEUDO_DEVICE_PREFIXES)
                and set(p.paths[path]) - {"stat"}):
            kind = ctx.view.kind(path)
            if kind in ("char", "block"):
                out.append((path, kind))
    return sorted(out)


def devices(ctx: Context, d: Directive) -> Decisions:
    if "device_nodes" not in ctx.profile.flags:
        return [Omission(d.name, "PrivateDevices=yes already closes all devices")]
    out: Decisions = [Setting(d.name, ["closed"], "only the device nodes seen, and pseudo devices")]
    for dev, kind in _device_paths(ctx):
        kinds = ctx.profile.paths[dev]
        mode = "rw" if set(kinds) - {"read", "stat"} else "r"
        why = sensitive.withheld(dev, ctx.allow_write)
        if why is None and kind == "block" and not any(
                under(dev, a) for a in ctx.allow_write):
            why = sensitive.BLOCK_DEVICE
        if why is not None:
            ctx.withheld.append(Withheld(dev, why, [f"{dev} ({', '.join(kinds)})"], 1,
                                         f"--allow-write {dev} grants DeviceAllow={dev}",
                                         verb="opened"))
            continue
        value = unitfile.path_value(dev)
        if value is None:
            ctx.warnings.append(f"left out DeviceAllow= for unsafe device name {dev!r}")
            continue
        out.append(Setting("DeviceAllow", [value, mode], f"opened {dev} ({', '.join(kinds)})"))
    return out


def proc_subset(ctx: Context, d: Directive) -> Decisions:
    others = [x for x in ctx.profile.accessed("/proc") if not _PROC_OWN.match(x)]
    if others:
        return [Omission(d.name, f"needed: reads {others[0]}"
                                 + (f" (+{len(others) - 1} more)" if len(others) > 1 else ""))]
    return [Setting(d.name, ["pid"], "only process directories of /proc used")]


def _ip_families(p: Profile) -> set[str]:
    return {f for f in p.families if f in ("AF_INET", "AF_INET6")}


def private_network(ctx: Context, d: Directive) -> Decisions:
    p = ctx.profile
    uses = sorted(set(p.families) - {"AF_UNIX"})
    abstract = [s for s in p.unix_sockets if s.startswith("@")]
    if uses:
        return [Omission(d.name, f"needed: {', '.join(uses)} sockets")]
    if abstract:
        return [Omission(d.name, f"needed: abstract socket {abstract[0]} lives in the host's "
                                 "network namespace")]
    return [Setting(d.name, ["yes"], "no network sockets (only AF_UNIX with paths, or none)")]


def address_families(ctx: Context, d: Directive) -> Decisions:
    fams = sorted(f for f in ctx.profile.families if _FAMILY.match(f))
    if not fams:
        value = "none" if ctx.target.version >= 249 else "AF_UNIX"
        return [Setting(d.name, [value], "no socket created")]
    ev = ", ".join(f"{f} ({ctx.profile.families[f]})" for f in fams)
    return [Setting(d.name, [unitfile.word(f) for f in fams], f"sockets created: {ev}")]


def _is_loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _ep(e: Endpoint) -> str:
    return f"{e.addr}:{e.port}/{e.proto}"


def ip_addresses(ctx: Context, d: Directive) -> Decisions:
    """An allow-list only for a server that only accepted connections (its clients are the
    peers it saw), or with the peers the user pins: a client's peers change with DNS, NTP
    pools and failover, so what a short trace saw is no list to enforce."""
    p = ctx.profile
    if not _ip_families(p):
        return [Setting(d.name, ["any"], "no IP socket created")]
    loopback = any(_is_loopback(e.addr) for e in (*p.binds, *p.peers, *p.inbound))
    if ctx.ip_allow:
        allow = [*(["localhost"] if loopback else []), *ctx.ip_allow]
        return [Setting(d.name, ["any"], "all IP traffic denied but the peers below"),
                Setting("IPAddressAllow", [unitfile.word(a) for a in allow],
                        "peers named with --ip-allow" + (" and loopback, which the service "
                                                         "used" if loopback else ""))]
    served = {(e.proto, e.port) for e in p.binds if e.port}
    own = {(e.proto, e.addr, e.port) for e in p.binds if e.port}
    public = sorted({_ep(e) for e in p.binds if e.port and not _is_loopback(e.addr)})
    if public:
        return [Omission(d.name, f"serves {public[0]}: clients may come from any address "
                                 "(--ip-allow ADDR[/PREFIX] pins them)")]
    # Replies to a client (UDP) and connections to its own ports are not outbound peers.
    inbound = {(e.addr, e.port, e.proto) for e in p.inbound}
    outbound = sorted(_ep(e) for e in p.peers if (e.addr, e.port, e.proto) not in inbound
                      and (e.proto, e.addr, e.port) not in own)
    why = ("peers change with DNS answers, NTP pools and failover, so a trace's list is no "
           "allow-list; --ip-allow ADDR[/PREFIX] pins them")
    if outbound:
        return [Omission(d.name, f"a client: connects or sends to {outbound[0]}"
                                 + (f" (+{len(outbound) - 1} more)" if len(outbound) > 1 else "")
                                 + f"; {why}")]
    if not served and not p.inbound:
        return [Omission(d.name, f"IP sockets, but nothing served or accepted: a client; {why}")]
    udp = [t for t in p.socket_types if t.startswith(("AF_INET/", "AF_INET6/"))
           and t.endswith("SOCK_DGRAM")]
    if udp and p.fast_traced:
        return [Omission(d.name, f"{udp[0]} sockets, whose peers the fast tracer does not "
                                 f"record: it may be a client too; {why}")]
    resolves = _name_resolution(p)
    if resolves:  # offline or early in its life a client may not have talked to anyone yet
        return [Omission(d.name, f"resolves names ({resolves}): it may connect to peers the "
                                 f"trace did not see; {why}")]
    remote = sorted({e.addr for e in p.inbound if not _is_loopback(e.addr)})
    if remote:  # not reachable with loopback-only binds; never pin what cannot be proven
        return [Omission(d.name, f"accepted from {remote[0]}: clients may come from any "
                                 "address")]
    binds = sorted({_ep(e) for e in p.binds if e.port})
    return [Setting(d.name, ["any"], "all IP traffic denied but the peers below"),
            Setting("IPAddressAllow", ["localhost"],
                    f"a server on loopback only ({', '.join(binds[:3]) or 'accepted'}) that "
                    "accepted only from loopback and connected nowhere")]


_RESOLVER_SOCKETS = ("/run/systemd/resolve/", "/run/nscd/", "/var/run/nscd/")


def _name_resolution(p: Profile) -> str | None:
    """Evidence that the service looks names up (so it has peers named by DNS), or None."""
    for path in sorted(p.paths):
        if path.endswith("/resolv.conf") and "read" in p.paths[path]:
            return f"read {path}"
    for path in sorted(p.failed_paths):  # looked for, even where there is none
        if path.endswith("/resolv.conf"):
            return f"looked for {path}"
    for sock in sorted(p.unix_sockets):
        if sock.startswith(_RESOLVER_SOCKETS):
            return f"asked {sock}"
    dns = sorted(_ep(e) for e in p.peers if e.port == 53)
    return f"queried {dns[0]}" if dns else None


def socket_bind(ctx: Context, d: Directive) -> Decisions:
    p = ctx.profile
    out: Decisions = [Setting(d.name, ["any"], "binding denied but to the ports below")]
    ports = sorted({(e.proto, e.port) for e in p.binds if e.port and e.proto in ("tcp", "udp")})
    for proto, port in ports:
        out.append(Setting("SocketBindAllow", [f"{proto}:{port}"], f"bound {proto} port {port}"))
    return out


def bounding_set(profile: Profile) -> list[str]:
    """The capabilities CapabilityBoundingSet= keeps: those with evidence recorded."""
    return sorted(c for c, ev in profile.capabilities.items() if c in CAP_NAMES and ev.examples)


def capabilities(ctx: Context, d: Directive) -> Decisions:
    """Only capabilities with evidence (the call or the owner/mode facts that needed them)."""
    caps = bounding_set(ctx.profile)
    bare = sorted(c for c in ctx.profile.capabilities if c in CAP_NAMES and c not in caps)
    if bare:
        ctx.warnings.append(f"left out of CapabilityBoundingSet=, no evidence recorded: "
                            f"{', '.join(bare)}")
    if not caps:
        return [Setting(d.name, [], "no capability used")]
    ev = "; ".join(f"{c}: {', '.join(ctx.profile.capabilities[c].examples[:2])}" for c in caps)
    return [Setting(d.name, [unitfile.word(c) for c in caps], ev)]


def namespaces(ctx: Context, d: Directive) -> Decisions:
    ev = ctx.profile.flags.get("namespaces")
    if ev is None:
        return [Setting(d.name, ["yes"], "no namespace created")]
    kinds = sorted({NS_NAMES[x] for x in ev.examples if x in NS_NAMES})
    if not kinds or "setns(any)" in ev.examples:
        return [Omission(d.name, "needed: namespaces of any type")]
    return [Setting(d.name, kinds, f"created: {', '.join(kinds)}")]


def umask(ctx: Context, d: Directive) -> Decisions:
    """UMask= changes the mode of every file the service creates: set it only where the facts
    show each one already lacks the bits it would take away."""
    modes, unknown = _created_modes(ctx)
    if not modes and not unknown:
        # Absence of evidence is no proof where it can write: memcached recreates its pid
        # file at each start, unseen by one trace, and UMask=0077 made it 0600 for good.
        places = [*ctx.plan.writable(), *ctx.plan.covered]
        if places:
            return [Omission(d.name, f"keeps the default: it can create files in {places[0]}"
                                     + (f" (+{len(places) - 1} more)" if len(places) > 1 else "")
                                     + ", and no file it created is left to show their modes")]
        return [Setting(d.name, ["0077"], "nothing writable but its private /tmp, and nothing it "
                                          "created outside it is left")]
    private = "" if ctx.plan.tmp_shared else " outside its private /tmp"
    if unknown:
        return [Omission(d.name, f"keeps the default: the mode of {unknown[0]}"
                                 + (f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else "")
                                 + ", created by the service, was not recorded")]
    refused = ""
    for value, mask in (("0077", 0o077), ("0027", 0o027)):
        hits = [(e, m) for e, m in modes if m & mask]
        if not hits:
            ev = (f"all {_plural(len(modes), 'file')} the service created{private} already "
                  f"lack the bits UMask={value} removes (e.g. {modes[0][0]} {modes[0][1]:04o})")
            return [Setting(d.name, [value], ev + refused)]
        e, m = hits[0]
        refused = (f"; not 0077: {e} has mode {m:04o}, UMask=0077 would make it "
                   f"{m & ~0o077:04o}")
    e, m = next((e, m) for e, m in modes if m & 0o027)
    return [Omission(d.name, f"keeps the default: {e} was created with mode {m:04o}; even "
                             f"UMask=0027 would make it {m & ~0o027:04o}")]


def _created_modes(ctx: Context) -> tuple[list[tuple[str, int]], list[str]]:
    """(example, mode) of what the service created and still exists, and the examples whose
    mode was not recorded; its private /tmp and temporaries gone by now do not count."""
    modes: list[tuple[str, int]] = []
    unknown: list[str] = []
    for path, (example, kinds) in sorted(ctx.plan.created.items()):
        if not ctx.plan.tmp_shared and any(under(path, t) for t in TMP_DIRS):
            continue  # in its private /tmp: no other service sees it, whatever its mode
        f = ctx.view.fact(path)
        if f is not None and f.kind == "missing" and kinds & {"delete", "rename"}:
            continue  # a temporary, gone or renamed: what replaced it is checked by its name
        if f is None or f.kind == "missing":
            unknown.append(example)
        elif f.kind != "link":  # a symlink's own mode means nothing
            modes.append((example, f.mode))
    return modes, unknown


def architectures(ctx: Context, d: Directive) -> Decisions:
    classes = {x: ctx.view.elf_class(x) for x in ctx.profile.execs}
    foreign = sorted(x for x, c in classes.items() if c == 1)
    if foreign:
        return [Omission(d.name, f"needed: 32-bit binary {foreign[0]} executed")]
    if not classes:
        return [Setting(d.name, ["native"], "no binary executed")]
    return [Setting(d.name, ["native"], f"no 32-bit ELF binary among the "
                                        f"{_plural(len(classes), 'program')} executed")]


# The groups `systemd-analyze security` scores a filter by (SystemCallFilter=~@...): a part
# of @system-service with a member in one is allowed only when seen. The other parts are
# allowed unseen: refusing them makes no sandbox tighter by that measure, nor by much in
# fact (capabilities and the rows above bound what they can do), and a code path the trace
# missed then failed with EPERM, which programs do not fall back from (PHP's copy() of an
# upload: copy_file_range, a 0-byte file).
SCORED_SYSCALL_GROUPS = ("@clock", "@cpu-emulation", "@debug", "@module", "@mount",
                         "@obsolete", "@privileged", "@raw-io", "@reboot", "@resources", "@swap")
# ...and calls of @system-service that are an exploit's tool more than a service's
LEARNED_SYSCALLS = frozenset({"userfaultfd"})
# Scored groups whose calls, without these capabilities, act on nothing but the caller's own
# (a file's owner set to its own, a uid among its own): allowed unseen when the bounding set
# withholds them all. mariadb copies a file's ownership to the copy it made (fchown to its own
# uid): a filter without @chown broke CREATE OR REPLACE VIEW and its upgrade step, paths one
# trace rarely sees. The price is ~@privileged's score: 1.7 -> 1.8 for README's example.
INERT_WITHOUT = {"@chown": ("CAP_CHOWN",), "@setuid": ("CAP_SETUID", "CAP_SETGID")}


def syscall_filter(ctx: Context, d: Directive) -> Decisions:
    groups = ctx.target.groups
    if not groups:
        return [Omission(d.name, "the target's syscall groups are unknown")]
    seen = {s for s in ctx.profile.syscalls if _SYSCALL.match(s)}
    known = groups.get("@known") or frozenset().union(*groups.values())
    unknown = sorted(seen - known)
    seen &= known
    scored = LEARNED_SYSCALLS.union(*(groups.get(g, frozenset()) for g in SCORED_SYSCALL_GROUPS))
    caps = set(bounding_set(ctx.profile))
    inert = {g for g, need in INERT_WITHOUT.items() if not caps & set(need)}
    chosen: list[str] = []
    covered: set[str] = set()
    unseen: list[str] = []
    for part in ctx.target.service_parts:
        members = groups.get(part, frozenset()) if part.startswith("@") else frozenset({part})
        if part == "@default" or members & seen or not members & scored or part in inert:
            chosen.append(part)
            covered |= members
            if part != "@default" and not members & seen:
                unseen.append(part)
    inert_unseen = [g for g in unseen if g in inert]
    extra = sorted(seen - covered)
    if unknown:
        ctx.warnings.append(f"syscalls unknown to {ctx.target.describe()} left out of "
                            f"SystemCallFilter=: {', '.join(unknown)}")
    outside = [s for s in extra if s not in groups.get("@system-service", frozenset())]
    scored_unseen = [g for g in unseen if g not in inert_unseen]
    ev = (f"{len(seen)} distinct syscalls seen; the parts of @system-service that were used"
          + (f", and {len(scored_unseen)} unseen that systemd-analyze security does not score "
             f"(e.g. {', '.join(scored_unseen[:3])})" if scored_unseen else "")
          + (f"; {' '.join(inert_unseen)} unseen, allowed: without "
             f"{', '.join(c for g in inert_unseen for c in INERT_WITHOUT[g])} they act only on "
             "the service's own files and ids" if inert_unseen else "")
          + (f"; outside @system-service: {', '.join(outside)}" if outside else ""))
    return [Setting(d.name, [unitfile.word(x) for x in (*chosen, *extra)], ev),
            Setting("SystemCallErrorNumber", ["EPERM"],
                    "a call outside the list fails with EPERM instead of killing the service")]


def private_users(ctx: Context, d: Directive) -> Decisions:
    """Only for a user's manager (catalogue: user="only"), whose namespaced rows need it."""
    return [Setting(d.name, [d.tightest],
                    "a user's manager sets up the namespaces and capability limits below only "
                    "inside a user namespace of the service's own; only its user is mapped")]


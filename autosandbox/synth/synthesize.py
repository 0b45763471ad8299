"""Profile -> Sandbox: walk the catalogue, gate each row on the target, apply its rule."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence

from autosandbox import unitfile
from autosandbox.errors import UserError
from autosandbox.profile import Profile
from autosandbox.synth.catalogue import BY_NAME, CATALOGUE, COMPANIONS, USER_NS, Directive
from autosandbox.synth.host import FileView
from autosandbox.synth.model import Omission, Sandbox, Setting
from autosandbox.synth.paths import plan_writes
from autosandbox.synth.rules import Context
from autosandbox.synth.subject import subject_of
from autosandbox.synth.target import Target


def service_name(profile: Profile) -> str | None:
    """The name a service's own directories would carry: unit name, else the program's."""
    return subject_of(profile).service


def allow_write_paths(paths: Iterable[str]) -> list[str]:
    """--allow-write values: absolute paths that can be written into a unit file."""
    out: list[str] = []
    for raw in paths:
        path = os.path.normpath(raw) if raw.startswith("/") else ""
        if not path or unitfile.path_value(path) is None:
            raise UserError(f"--allow-write {raw!r}: give an absolute path without quotes, "
                            "backslashes or control characters")
        if path not in out:
            out.append("/" + path.lstrip("/"))
    return out


IP_KEYWORDS = ("localhost", "link-local", "multicast")


def ip_allow_peers(values: Iterable[str]) -> list[str]:
    """--ip-allow values: ADDR[/PREFIX] (or systemd's localhost, link-local, multicast)."""
    out: list[str] = []
    for raw in values:
        text = raw.strip()
        if text in IP_KEYWORDS:
            word = text
        else:
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise UserError(f"--ip-allow {raw!r}: expected ADDR[/PREFIX] (e.g. 192.0.2.10 "
                                f"or 2001:db8::/32) or one of {', '.join(IP_KEYWORDS)}") from None
            word = (str(net.network_address) if net.prefixlen == net.max_prefixlen
                    else str(net))
        if word not in out:
            out.append(word)
    return out


def synthesize(profile: Profile, target: Target, keep: dict[str, str] | None = None,
               allow_write: Sequence[str] = (), ip_allow: Sequence[str] = ()) -> Sandbox:
    """`keep`: directives the unit already sets, which the sandbox never loosens.
    `allow_write`: places the user lets the service write even if sensitive (--allow-write);
    `ip_allow`: peers the user pins (--ip-allow). Reads the file system only through the
    profile's facts (the host only for a profile that has none)."""
    allowed = allow_write_paths(allow_write)
    subject = subject_of(profile)
    view = FileView.of(profile)
    ctx = Context(profile, target, subject, view, plan_writes(profile, subject, view, allowed),
                  allowed, ip_allow_peers(ip_allow))
    name = profile.subject.name
    settings: list[Setting] = []
    omitted: list[Omission] = []
    for d in CATALOGUE:
        why_not = _not_in_manager(d, subject.user_manager)
        if why_not is not None:
            if why_not:
                omitted.append(Omission(d.name, why_not))
            continue
        if d.since > target.version:
            omitted.append(Omission(d.name, f"needs systemd {d.since}, target has "
                                            f"{target.version}"))
            continue
        if d.feature and not target.has(d.feature):
            omitted.append(Omission(d.name, f"not enforced: {target.describe()} is built "
                                            f"without {d.feature}"))
            continue
        for item in d.rule(ctx, d):
            if isinstance(item, Setting):
                if keep and not _may_override(d.name, item, keep):
                    owner = item.directive if item.directive in keep else d.name
                    omitted.append(Omission(item.directive, f"the unit already sets "
                                                            f"{owner}={keep[owner]}; kept"))
                    continue
                settings.append(item)
            else:
                omitted.append(item)
    withheld = [*ctx.plan.withheld.values(), *ctx.withheld]
    warnings = [*profile.warnings, *ctx.warnings, *(f"withheld: {w.line()}" for w in withheld)]
    strict = any(s.directive == "ProtectSystem" and list(s.values) == ["strict"]
                 for s in settings)
    return Sandbox(name or "unknown", target, list(profile.sources), tuple(settings),
                   tuple(omitted), _hints(profile), warnings, withheld, allowed,
                   tuple(sorted(set(ctx.left_writable))) if strict else ())


def _not_in_manager(d: Directive, user_manager: bool) -> str | None:
    """Why row `d` is not written for this kind of manager ("": silently), None if it is."""
    if d.user == "only":
        return None if user_manager else ""
    if not user_manager or d.user in ("yes", USER_NS):
        return None
    return f"not for a user's manager: {d.user}"


# Lists a drop-in only adds to: what the unit already allows stays allowed either way
# (ReadOnlyPaths= covers no path the unit makes writable: synth/rules.py separate_mounts).
ADDITIVE = frozenset({"ReadWritePaths", "StateDirectory", "CacheDirectory", "LogsDirectory",
                      "RuntimeDirectory", "DeviceAllow", "RuntimeDirectoryPreserve",
                      "ReadOnlyPaths"})


def _may_override(row: str, item: Setting, keep: dict[str, str]) -> bool:
    """Never loosen what the unit sets: only additive lists and strictly tighter ladder steps."""
    name = item.directive
    if name not in keep and COMPANIONS.get(name, row) not in keep:
        return True
    if name in ADDITIVE:
        return True
    if name not in BY_NAME or name not in keep:
        return False
    ladder = BY_NAME[name].ladder
    ours = " ".join(item.values)
    theirs = keep[name].strip()
    aliases = {"true": "yes", "on": "yes", "1": "yes"}
    theirs = aliases.get(theirs.lower(), theirs)
    return ours in ladder and theirs in ladder and ladder.index(ours) < ladder.index(theirs)


def _hints(profile: Profile) -> list[str]:
    uid = profile.subject.uid
    user = profile.subject.user
    caps = set(profile.capabilities)
    if uid == 0 and not user and not caps & {"CAP_SETUID", "CAP_SETGID"}:
        need = ", ".join(sorted(caps)) or "none"
        return [
            f"runs as root but used no identity change (capabilities used: {need}). Consider "
            "User= (or DynamicUser=yes) with AmbientCapabilities= for the capabilities above, "
            "after checking who owns the files it writes. Not applied."]
    return []

"""What processes running as root wrote, against the host facts recorded at trace time
(facts.py): the DAC capabilities they needed, each with its evidence (linux/dac.py has the
kernel's check)."""

from __future__ import annotations

from autosandbox.linux.dac import Need, W, describe, entry_need, root_allows, search_need
from autosandbox.profile import Fact, Profile

# Kinds that make or remove a name in the directory (may_create/may_delete: write and search
# on the directory); "create" also covers bind() of a unix socket and link()'s new name.
ENTRY_KINDS = frozenset({"create", "mkdir", "delete", "rename"})
# Kinds after which the end-of-trace facts of a path are the traced tree's own doing. An
# open with O_CREAT is "create" in the profile whether or not it made the file: for a file,
# only a creation proven as root's counts (root's files are root's, which root may write).
SELF_MADE = frozenset({"create", "mkdir", "rename", "chmod", "chown"})
FILE_SELF_MADE = SELF_MADE - {"create"}


def infer_root_writes(profile: Profile) -> dict[str, list[str]]:
    """Capabilities that the traced processes running as root needed for what they wrote
    (profile.root_writes), by the host facts recorded at trace time: {cap: [evidence]}.

    A directory or file whose owner or mode the traced tree made or changed itself proves
    nothing (its facts are the service's doing), nor does a path without facts."""
    facts = profile.facts
    paths = profile.paths

    def host_fact(p: str, changed: frozenset[str] = SELF_MADE) -> Fact | None:
        if changed & set(paths.get(p, {})):
            return None
        f = facts.get(p)
        return None if f is None or f.kind == "missing" else f

    out: dict[str, list[str]] = {}
    for path, kinds in sorted(profile.root_writes.items()):
        needs: list[tuple[Need, str]] = []
        done = ", ".join(sorted(kinds))
        if ENTRY_KINDS & set(kinds):
            n = entry_need(path, host_fact)
            if n is not None:
                needs.append((n, f"{done} {path} as root"))
        if "write" in kinds and not ENTRY_KINDS & set(kinds):
            f = host_fact(path, FILE_SELF_MADE)
            if f is not None and f.kind == "file" and not root_allows(f, W):
                needs.append((Need("CAP_DAC_OVERRIDE", f"{describe(path, f)} is not writable "
                                                       "by root by its mode bits"),
                              f"wrote {path} as root"))
        s = search_need(path, host_fact)
        if s is not None:
            needs.append((s, f"{done} {path} as root"))
        for n, what in needs:
            ev = out.setdefault(n.cap, [])
            text = f"{what}: {n.why}"
            if len(ev) < 5 and text not in ev:
                ev.append(text)
    return out

"""The strace parser on a trace recorded here from a real multi-process program
(tests/data/multiproc.sh: bash, coreutils, a 4-thread Python; 2,578 unfinished calls)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from autosandbox.profile import Endpoint, Profile, Subject
from autosandbox.trace.recorder import READ_CALLS, Recorder
from autosandbox.trace.strace_parser import StraceParser, Syscall, split_args, unescape

DATA = Path(__file__).parent / "data" / "multiproc.strace.gz"


def _record() -> tuple[Profile, StraceParser, Recorder]:
    profile = Profile(subject=Subject(command=["bash", "multiproc.sh"]))
    rec = Recorder(profile, "/tmp")
    parser = StraceParser(READ_CALLS)
    with gzip.open(DATA, "rt", encoding="latin-1") as f:
        for line in f:
            ev = parser.feed(line.rstrip("\n"))
            if ev is not None:
                rec.handle(ev)
    return rec.finish(parser), parser, rec


def test_every_line_is_understood() -> None:
    profile, parser, rec = _record()
    assert parser.lines == 7636
    assert parser.unparsed == 0
    assert not profile.warnings
    assert len(rec.pids) == 11  # bash, subshells, coreutils, python and its 4 threads
    assert all(code == 0 for code in rec.exit_codes.values())


def test_paths_resolved_across_processes_threads_and_dirfds() -> None:
    p, _, _ = _record()
    base = "/tmp/asb-rec/work"
    assert {"mkdir"} <= set(p.paths[base + "/sub"])
    assert "create" in p.paths[base + "/sub/f.txt"] and "delete" in p.paths[base + "/sub/f.txt"]
    assert "rename" in p.paths[base + "/count"] and "rename" in p.paths[base + "/count.final"]
    # 4 threads x 20 files created and unlinked, many calls split by <unfinished ...>
    thread_files = [x for x in p.paths if x.startswith(base + "/t")]
    assert len(thread_files) == 80
    assert all({"create", "delete"} <= set(p.paths[x]) for x in thread_files)
    assert "create" in p.paths[base + "/rel-via-dirfd"]  # openat relative to a directory fd
    # exec follows symlinks: recorded where python3 leads on this host
    assert os.path.realpath("/usr/bin/python3") in p.execs and "exec" in p.paths["/usr/bin/wc"]


def test_sockets() -> None:
    p, _, _ = _record()
    assert p.families == {"AF_INET": 2, "AF_INET6": 1}
    assert any(e.addr == "127.0.0.1" and e.proto == "tcp" for e in p.binds)
    assert Endpoint("AF_INET6", "udp", "::1", 9) in p.peers
    assert any(e.addr == "127.0.0.1" for e in p.inbound)


def test_syscall_counts_count_each_call_once() -> None:
    p, _, _ = _record()
    with gzip.open(DATA, "rt", encoding="latin-1") as f:
        raw = f.read().splitlines()
    resumed = sum(1 for x in raw if "<... unlink resumed>" in x)
    started = sum(1 for x in raw if " unlink(" in x)
    assert p.syscalls["unlink"] == started and resumed > 0


def test_split_and_unescape() -> None:
    assert split_args('3</a, b>, "x, \\"y\\"", {a=1, b=[2, 3]}, f(1, 2)') == [
        "3</a, b>", '"x, \\"y\\""', "{a=1, b=[2, 3]}", "f(1, 2)"]
    assert unescape(r"a\nb\303\251\\\"\x41") == 'a\nbé\\"A'
    assert unescape(r"bad\377") == "bad\udcff"


def test_hostile_return_decoration_does_not_confuse_the_split() -> None:
    parser = StraceParser(READ_CALLS)
    ev = parser.feed('42 openat(AT_FDCWD</x>, "a) = 0", O_RDONLY) = 3</x/a) = 0>')
    assert isinstance(ev, Syscall)
    assert ev.ret == "3" and ev.ret_path == "/x/a) = 0"
    ev = parser.feed('42 openat(AT_FDCWD</x>, "q", O_RDONLY) = -1 ENOENT (No such file)')
    assert isinstance(ev, Syscall) and ev.errno == "ENOENT" and not ev.ok

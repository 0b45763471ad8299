"""UMask= and IP allow-lists from hand-built profiles: set only where the facts prove nothing
changes (UMask=) or where the peers are known (a server's clients, or --ip-allow)."""

from __future__ import annotations

import pytest

from autosandbox.errors import UserError
from autosandbox.profile import Endpoint, Fact
from autosandbox.synth.model import Sandbox

from .synth_profiles import served, synth, touch, unit_profile, verified

SRV = "/srv/autosandbox-absent-7f3e"


def _omitted(sb: Sandbox, directive: str) -> str:
    return next(o.why for o in sb.omitted if o.directive == directive)


# -- UMask= (issue #9 item 8) ---------------------------------------------------------------

def test_umask_kept_default_when_a_created_file_is_readable_by_others() -> None:
    # chrony: chronyd.sock 0755 and chrony.drift 0644 became 0700 and 0600 under UMask=0077
    p = unit_profile("chrony.service")
    touch(p, "/run/chrony/chronyd.sock", "create", fact=Fact("socket", 0, 0, 0o755))
    touch(p, "/var/lib/chrony/chrony.drift", "create", "write", "rename",
          fact=Fact("file", 0, 0, 0o644))
    p.unix_sockets["/run/chrony/chronyd.sock"] = {"bind": 1}
    sb = synth(p)
    verified(p, sb)
    assert sb.values("UMask") is None
    why = _omitted(sb, "UMask")
    assert "/run/chrony/chronyd.sock was created with mode 0755" in why
    assert "would make it 0750" in why


def test_umask_kept_default_where_it_can_write_but_no_creation_was_seen() -> None:
    # memcached recreates its pid file at each start, unseen by one trace: UMask=0077 then
    # turned it from 0644 into 0600 while applied (zoo run, container)
    p = unit_profile("memcached.service")
    touch(p, f"{SRV}/memcached.pid", "write", fact=Fact("file", 0, 0, 0o644))
    p.facts[SRV] = Fact("dir", 0, 0, 0o755)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("UMask") is None
    assert "no file it created is left" in _omitted(sb, "UMask")
    bare = unit_profile("calc.service")  # nothing writable at all: the mask changes nothing
    assert synth(bare).values("UMask") == ["0077"]


def test_umask_sees_a_file_renamed_into_place() -> None:
    # memcached writes memcached.pid.tmp (0644) and renames it over memcached.pid: the
    # temporary is gone, the file that stays is what UMask= would change
    p = unit_profile("memcached.service")
    touch(p, f"{SRV}/m.pid.tmp", "write", "create", "rename", fact=Fact("missing"))
    touch(p, f"{SRV}/m.pid", "rename", fact=Fact("file", 0, 0, 0o644))
    p.facts[SRV] = Fact("dir", 0, 0, 0o755)
    sb = synth(p)
    assert sb.values("UMask") is None
    assert "m.pid was created with mode 0644" in _omitted(sb, "UMask")


def test_umask_0077_when_everything_created_is_private_already() -> None:
    p = unit_profile("memcached.service")
    touch(p, f"{SRV}/state/a", "create", "write", fact=Fact("file", 0, 0, 0o600))
    touch(p, f"{SRV}/state/sub", "mkdir", fact=Fact("dir", 0, 0, 0o700))
    touch(p, f"{SRV}/state/tmp.123", "create", "write", "rename")  # renamed away: gone
    p.facts[f"{SRV}/state/tmp.123"] = Fact("missing")
    sb = synth(p)
    verified(p, sb)
    assert sb.values("UMask") == ["0077"]
    ev = next(s.evidence for s in sb.settings if s.directive == "UMask")
    assert ("all 2 files the service created outside its private /tmp already lack the bits "
            "UMask=0077 removes") in ev


def test_umask_0027_when_group_bits_are_used_and_others_none() -> None:
    p = unit_profile()
    touch(p, f"{SRV}/log/app.log", "create", "write", fact=Fact("file", 0, 4, 0o640))
    sb = synth(p)
    assert sb.values("UMask") == ["0027"]
    ev = next(s.evidence for s in sb.settings if s.directive == "UMask")
    assert "not 0077: " in ev and "mode 0640" in ev


def test_umask_kept_default_when_the_mode_of_a_created_file_is_unknown() -> None:
    # memcached's pid file: created, and still there, but nothing recorded about it
    p = unit_profile("memcached.service")
    p.add_path("/run/memcached/memcached.pid", "create")
    p.add_path("/run/memcached/memcached.pid", "write")
    p.facts.update({"/run": Fact("dir", 0, 0, 0o755), "/run/memcached": Fact("dir", 0, 0, 0o755)})
    sb = synth(p)
    assert sb.values("UMask") is None
    assert "was not recorded" in _omitted(sb, "UMask")


# -- clients vs servers (issue #9 item 6) -----------------------------------------------------

def test_ntp_client_gets_no_allow_list() -> None:
    # chrony: an NTP client whose servers (a pool) change; it also serves chronyc on loopback
    p = unit_profile("chrony.service")
    served(p, "127.0.0.1", 323, "udp")
    p.peers.add(Endpoint("AF_INET", "udp", "192.0.2.7", 123))
    sb = synth(p)
    verified(p, sb)
    assert sb.values("IPAddressDeny") is None and sb.values("IPAddressAllow") is None
    why = _omitted(sb, "IPAddressDeny")
    assert why.startswith("a client: connects or sends to 192.0.2.7:123/udp")
    assert "--ip-allow" in why


def test_resolver_talking_to_loopback_upstream_is_still_a_client() -> None:
    # unbound: serves 127.0.0.1:53, resolves through whatever it was pointed at (here loopback)
    p = unit_profile("unbound.service")
    served(p, "127.0.0.1", 53, "udp")
    p.inbound.add(Endpoint("AF_INET", "udp", "127.0.0.1", 40000))
    p.peers.add(Endpoint("AF_INET", "udp", "127.0.0.1", 40000))  # the reply to its client
    p.peers.add(Endpoint("AF_INET", "udp", "127.0.0.53", 53))  # upstream
    sb = synth(p)
    assert sb.values("IPAddressAllow") is None
    assert "127.0.0.53:53/udp" in _omitted(sb, "IPAddressDeny")


def test_client_with_pinned_peers() -> None:
    p = unit_profile("chrony.service")
    served(p, "127.0.0.1", 323, "udp")
    p.peers.add(Endpoint("AF_INET", "udp", "192.0.2.7", 123))
    sb = synth(p, ip_allow=["192.0.2.0/24", "2001:db8::1", "192.0.2.9/32"])
    verified(p, sb)
    assert sb.values("IPAddressDeny") == ["any"]
    assert sb.values("IPAddressAllow") == ["localhost", "192.0.2.0/24", "2001:db8::1",
                                           "192.0.2.9"]
    for bad in ("example.org", "192.0.2.0/33", "any"):
        with pytest.raises(UserError):
            synth(p, ip_allow=[bad])


def test_loopback_server_is_pinned_to_localhost() -> None:
    p = unit_profile("web.service")
    served(p, "127.0.0.1", 8080)
    p.inbound.add(Endpoint("AF_INET", "tcp", "127.0.0.1", 51000))
    p.peers.add(Endpoint("AF_INET", "tcp", "127.0.0.1", 8080))  # its own port (a self-check)
    sb = synth(p)
    verified(p, sb)
    assert sb.values("IPAddressDeny") == ["any"]
    assert sb.values("IPAddressAllow") == ["localhost"]
    ev = next(s.evidence for s in sb.settings if s.directive == "IPAddressAllow")
    assert "server on loopback only (127.0.0.1:8080/tcp)" in ev


@pytest.mark.parametrize("evidence", ["read", "failed"])
def test_loopback_server_that_resolves_names_is_a_client(evidence: str) -> None:
    # chrony in an offline container: its only sockets were the command port on loopback,
    # yet it is an NTP client; IPAddressAllow=localhost cut it off its pool on a real host
    p = unit_profile("chrony.service")
    served(p, "127.0.0.1", 323, "udp")
    if evidence == "read":
        touch(p, "/etc/resolv.conf", "read", fact=Fact("file", 0, 0, 0o644))
    else:
        p.add_failed_path("/etc/resolv.conf", "ENOENT")
    sb = synth(p)
    verified(p, sb)
    assert sb.values("IPAddressDeny") is None and sb.values("IPAddressAllow") is None
    assert "resolves names" in _omitted(sb, "IPAddressDeny")


def test_public_udp_server_is_not_pinned_to_the_clients_it_saw() -> None:
    p = unit_profile("dnsmasq.service")
    served(p, "0.0.0.0", 53, "udp")
    p.inbound.add(Endpoint("AF_INET", "udp", "192.0.2.50", 5353))
    p.peers.add(Endpoint("AF_INET", "udp", "192.0.2.50", 5353))
    sb = synth(p)
    assert sb.values("IPAddressDeny") is None
    assert "serves 0.0.0.0:53/udp" in _omitted(sb, "IPAddressDeny")


def test_ip_sockets_without_serving_are_a_client() -> None:
    p = unit_profile("haproxy.service")
    p.add_family("AF_INET")
    sb = synth(p)
    assert sb.values("IPAddressDeny") is None
    assert "nothing served or accepted" in _omitted(sb, "IPAddressDeny")


def test_fast_tracer_udp_server_is_not_pinned() -> None:
    # the fast tracer does not see peers of unconnected UDP sockets: a sender looks silent
    p = unit_profile()
    served(p, "127.0.0.1", 5000, "udp")
    p.add_source("tracefs:raw_syscalls")
    sb = synth(p)
    assert sb.values("IPAddressDeny") is None
    assert "fast tracer" in _omitted(sb, "IPAddressDeny")


def test_no_ip_socket_denies_all() -> None:
    p = unit_profile()
    sb = synth(p)
    assert sb.values("IPAddressDeny") == ["any"] and sb.values("IPAddressAllow") is None


def test_umask_ignores_files_in_a_private_tmp_but_not_in_a_shared_one() -> None:
    p = unit_profile()
    p.add_path("/tmp/scratch.sock", "create")  # seen by nobody else under PrivateTmp=yes
    p.facts["/tmp"] = Fact("dir", 0, 0, 0o1777)
    sb = synth(p)
    assert sb.values("PrivateTmp") == ["yes"] and sb.values("UMask") == ["0077"]
    p.add_path("/tmp/theirs", "read")  # a file someone else made: /tmp is shared
    p.facts["/tmp/theirs"] = Fact("file", 1000, 1000, 0o644)
    sb = synth(p)
    assert sb.values("PrivateTmp") is None and sb.values("UMask") is None
    assert "/tmp/scratch.sock" in _omitted(sb, "UMask")

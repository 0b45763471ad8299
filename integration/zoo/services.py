"""The eight stock Debian 12 services of the zoo: unit, where they keep things, their log
files, and the files a test adds (and removes again) to make one usable offline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Service:
    name: str  # the test id and the name of its workload script, NAME.sh
    unit: str
    # every file and directory below these is snapshotted (owner, group, mode)
    paths: tuple[str, ...]
    # the service's own log files, scanned for denials besides the journal
    logs: tuple[str, ...] = ()
    # files the test writes before starting the unit and removes at the end: path -> text
    # (a drop-in of ours, or a config file it points the unit at)
    extra_files: dict[str, str] = field(default_factory=dict)
    # in a container only (what the container does not allow); same shape as extra_files
    container_files: dict[str, str] = field(default_factory=dict)
    learn_seconds: int = 8
    conflicts: tuple[str, ...] = ()  # units that hold the same port
    # a network client as shipped (NTP, forwarding/recursive DNS, a proxy's backends): offline
    # it reaches nobody, so an IP allow-list learned here would cut it off on a real network
    client: bool = False

    def script(self, action: str) -> str:
        return f"sh {HERE / (self.name + '.sh')} {action}"


def _haproxy_cfg() -> str:
    stock = Path("/etc/haproxy/haproxy.cfg")
    text = stock.read_text() if stock.exists() else ""
    return text + (HERE / "haproxy-zoo.cfg").read_text()


# haproxy's default config has no frontend: the test points the unit at a copy of it with
# ours appended (stock global section: chroot, stats socket, user haproxy, daemon).
HAPROXY_CFG = "/etc/haproxy/zoo-test.cfg"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/10-zoo-test.conf"

# chrony.service has ConditionCapability=CAP_SYS_TIME, which systemd-nspawn does not grant:
# in a container only, the condition is dropped and chronyd told not to touch the clock
# (-x), the rest of /etc/default/chrony kept (-F 1: its own seccomp filter).
CHRONY_DROPIN = "/etc/systemd/system/chrony.service.d/10-zoo-container.conf"
CHRONY_ENV = "/etc/default/zoo-chrony-container"

SERVICES = {s.name: s for s in [
    Service("memcached", "memcached.service",
            ("/etc/memcached.conf", "/etc/default/memcached", "/run/memcached",
             "/var/log/memcached.log", "/usr/share/memcached"),
            logs=("/var/log/memcached.log",)),
    Service("postgresql", "postgresql@15-main.service",
            ("/etc/postgresql", "/etc/postgresql-common", "/var/lib/postgresql",
             "/var/log/postgresql", "/run/postgresql", "/var/cache/postgresql"),
            logs=("/var/log/postgresql/postgresql-15-main.log",), learn_seconds=10),
    Service("chrony", "chrony.service",
            ("/etc/chrony", "/etc/default/chrony", "/var/lib/chrony", "/var/log/chrony",
             "/run/chrony", "/run/chrony-dhcp", "/var/spool"),
            logs=("/var/log/chrony/*.log",), client=True,
            container_files={
                CHRONY_DROPIN: "[Unit]\nConditionCapability=\n\n[Service]\nEnvironmentFile=\n"
                               f"EnvironmentFile={CHRONY_ENV}\n",
                CHRONY_ENV: 'DAEMON_OPTS="-F 1 -x"\n'}),
    Service("dnsmasq", "dnsmasq.service",
            ("/etc/dnsmasq.conf", "/etc/dnsmasq.d", "/etc/default/dnsmasq", "/run/dnsmasq",
             "/var/lib/misc", "/usr/share/dnsmasq"),
            conflicts=("unbound.service",), client=True),
    Service("unbound", "unbound.service",
            ("/etc/unbound", "/etc/default/unbound", "/var/lib/unbound", "/run/unbound.ctl",
             "/run/unbound"),
            conflicts=("dnsmasq.service",), client=True),
    Service("apache2", "apache2.service",
            ("/etc/apache2", "/var/log/apache2", "/var/lib/apache2", "/var/cache/apache2",
             "/run/apache2", "/run/lock/apache2", "/var/www"),
            logs=("/var/log/apache2/error.log",)),
    Service("haproxy", "haproxy.service",
            ("/etc/haproxy", "/etc/default/haproxy", "/var/lib/haproxy", "/run/haproxy",
             "/run/haproxy.pid", "/run/haproxy-master.sock"),
            client=True, extra_files={HAPROXY_CFG: "", HAPROXY_DROPIN:
                         f'[Service]\nEnvironment="CONFIG={HAPROXY_CFG}"\n'}),
    Service("mosquitto", "mosquitto.service",
            ("/etc/mosquitto", "/var/lib/mosquitto", "/var/log/mosquitto", "/run/mosquitto"),
            logs=("/var/log/mosquitto/mosquitto.log",)),
]}


def file_text(path: str, text: str) -> str:
    """The text to write for one of extra_files (haproxy's config is made at run time)."""
    return _haproxy_cfg() if path == HAPROXY_CFG else text

"""Places whose write access is a privilege escalation or too broad to grant on evidence.

A traced service decides what we see, so what it wrote is evidence of a need, never a proof
that the need is legitimate: a service that writes /etc/cron.d once would get to run code as
root for ever. Such places are never written into a drop-in unless the user names them
(`--allow-write PATH`); the drop-in and the summary say what was withheld and why.
"""

from __future__ import annotations

from collections.abc import Sequence

# (prefix, why): writing at or below `prefix` is withheld. Checked longest prefix first.
SENSITIVE: tuple[tuple[str, str], ...] = (
    ("/etc/systemd", "unit files and drop-ins run code as root"),
    ("/run/systemd", "runtime units and drop-ins run code as root"),
    ("/lib/systemd", "unit files run code as root"),
    ("/etc/init.d", "init scripts run as root"),
    ("/etc/rc0.d", "init scripts run as root"), ("/etc/rc1.d", "init scripts run as root"),
    ("/etc/rc2.d", "init scripts run as root"), ("/etc/rc3.d", "init scripts run as root"),
    ("/etc/rc4.d", "init scripts run as root"), ("/etc/rc5.d", "init scripts run as root"),
    ("/etc/rc6.d", "init scripts run as root"), ("/etc/rcS.d", "init scripts run as root"),
    ("/etc/cron.d", "cron jobs run as root"), ("/etc/crontab", "cron jobs run as root"),
    ("/etc/cron.hourly", "cron jobs run as root"), ("/etc/cron.daily", "cron jobs run as root"),
    ("/etc/cron.weekly", "cron jobs run as root"),
    ("/etc/cron.monthly", "cron jobs run as root"), ("/var/spool/cron", "cron jobs"),
    ("/etc/anacrontab", "cron jobs run as root"),
    ("/etc/sudoers", "sudo rules grant root"), ("/etc/sudoers.d", "sudo rules grant root"),
    ("/run/sudo", "sudo time stamps skip passwords"),
    ("/var/lib/sudo", "sudo time stamps skip passwords"),
    ("/etc/passwd", "accounts"), ("/etc/shadow", "passwords"), ("/etc/group", "groups"),
    ("/etc/gshadow", "group passwords"), ("/etc/subuid", "user namespaces ids"),
    ("/etc/subgid", "user namespaces ids"),
    ("/etc/pam.d", "PAM decides who logs in"), ("/etc/security", "PAM and login limits"),
    ("/etc/ssh", "sshd configuration and host keys"),
    ("/etc/profile", "login shells run it"), ("/etc/profile.d", "login shells run it"),
    ("/etc/bash.bashrc", "interactive shells run it"), ("/etc/environment", "every login"),
    ("/etc/ld.so.preload", "preloaded into every program"),
    ("/etc/ld.so.conf", "library search path of every program"),
    ("/etc/ld.so.conf.d", "library search path of every program"),
    ("/etc/ld.so.cache", "library search path of every program"),
    ("/etc/apt", "package sources and hooks run as root"),
    ("/etc/dpkg", "dpkg hooks run as root"),
    ("/var/lib/dpkg", "the package database and maintainer scripts"),
    ("/var/lib/apt", "package lists"), ("/var/cache/apt", "downloaded packages"),
    ("/etc/modprobe.d", "kernel module options and install hooks"),
    ("/etc/modules-load.d", "kernel modules loaded at boot"),
    ("/etc/modules", "kernel modules loaded at boot"),
    ("/etc/sysctl.d", "kernel settings at boot"), ("/etc/sysctl.conf", "kernel settings"),
    ("/etc/udev", "udev rules run programs as root"),
    ("/etc/tmpfiles.d", "tmpfiles rules change any file at boot"),
    ("/etc/polkit-1", "polkit grants privileges"),
    ("/var/lib/polkit-1", "polkit grants privileges"),
    ("/etc/dbus-1", "D-Bus policy"), ("/etc/logrotate.d", "logrotate scripts run as root"),
    ("/etc/logrotate.conf", "logrotate scripts run as root"),
    ("/etc/update-motd.d", "run as root at login"), ("/etc/xdg", "session autostart"),
    ("/etc/kernel", "kernel install hooks run as root"),
    ("/etc/alternatives", "which program a command runs"),
    ("/etc/hosts", "name resolution of every program"),
    ("/etc/resolv.conf", "name resolution of every program"),
    ("/etc/nsswitch.conf", "name resolution of every program"),
    ("/var/lib/systemd", "systemd's own state"),
    ("/root", "root's home (shell start-up files, ssh keys)"),
    ("/home", "users' homes (shell start-up files, ssh keys)"),
    ("/run/user", "users' runtime directories"),
    ("/usr", "programs and libraries"), ("/boot", "kernels and boot loader"),
    ("/efi", "boot loader"), ("/bin", "programs"), ("/sbin", "programs"),
    ("/lib", "libraries"), ("/lib64", "libraries"), ("/lib32", "libraries"),
    ("/libx32", "libraries"),
    ("/etc/rc.local", "run as root at boot"), ("/etc/default", "sourced by init scripts as root"),
    ("/etc/network", "interface scripts run as root"),
    ("/etc/NetworkManager", "dispatcher scripts run as root"),
    ("/etc/dhcp", "client hooks run as root"), ("/etc/binfmt.d", "interpreters of binaries"),
    ("/etc/sysusers.d", "accounts made at boot"),
    ("/etc/environment.d", "every user session"),
    ("/etc/fstab", "mounts (and their options) at boot"),
    ("/etc/rsyslog.conf", "log actions run programs as root"),
    ("/etc/rsyslog.d", "log actions run programs as root"),
    ("/etc/apparmor.d", "security policy"), ("/etc/selinux", "security policy"),
    ("/etc/login.defs", "login policy"), ("/etc/sudo.conf", "sudo's plugins"),
    ("/etc/doas.conf", "doas rules grant root"),
    # Device nodes whose access is the machine's: memory, I/O ports, CPU registers, raw disks
    # (a block device anywhere is withheld by its kind: devices rule in rules.py).
    ("/dev/mem", "physical memory"), ("/dev/kmem", "kernel memory"),
    ("/dev/port", "I/O ports"), ("/dev/cpu", "CPU registers"),
    ("/dev/disk", "raw disks bypass every file permission"),
    ("/dev/mapper", "raw disks bypass every file permission"),
)
# Below the home of a user whose own manager runs the service (its own place: granted on
# evidence), what still is not: (path below the home, why).
HOME_SENSITIVE: tuple[tuple[str, str], ...] = (
    ("/.config/systemd", "the user's units and drop-ins run code as the user"),
    ("/.local/share/systemd", "the user's units run code as the user"),
    ("/.config/autostart", "session autostart"), ("/.config/environment.d", "every session"),
    ("/.ssh", "ssh keys and who may log in"), ("/.gnupg", "private keys"),
    ("/.profile", "login shells run it"), ("/.bash_profile", "login shells run it"),
    ("/.bash_login", "login shells run it"), ("/.bash_logout", "shells run it"),
    ("/.bashrc", "interactive shells run it"), ("/.zshrc", "interactive shells run it"),
    ("/.zshenv", "every zsh runs it"), ("/.zprofile", "login shells run it"),
    ("/.config/fish", "interactive shells run it"), ("/.pam_environment", "every login"),
    ("/.xinitrc", "the X session runs it"), ("/.xprofile", "the X session runs it"),
    ("/.forward", "mail delivery runs programs"), ("/.local/bin", "programs on its PATH"),
    ("/bin", "programs on its PATH"), ("/.config/user-dirs.dirs", "sourced by sessions"),
)
# Why a block device node is never granted on evidence alone.
BLOCK_DEVICE = "a block device: raw disk access bypasses every file permission"
# Never granted as a whole: top-level directories, and shared trees whose every entry belongs
# to someone else. Below them, a directory of the service's own is fine.
BROAD: frozenset[str] = frozenset({
    "/", "/etc", "/var", "/var/lib", "/var/log", "/var/cache", "/var/spool", "/var/tmp",
    "/var/mail", "/var/local", "/var/opt", "/var/backups", "/run", "/run/lock", "/srv",
    "/mnt", "/media", "/tmp", "/usr/local", "/dev/shm",
})
# Runtime configuration below /run that root's tools load (systemd's runtime units and
# drop-ins, udev rules, tmpfiles, sysctl, modprobe, binfmt, sudo's timestamps, NetworkManager's
# connections): when strict leaves /run writable (a pid file the service makes there), these
# stay read-only unless the service wrote below one (rules.separate_mounts).
RUNTIME_CONFIG: tuple[str, ...] = (
    "/run/systemd", "/run/udev", "/run/tmpfiles.d", "/run/sysctl.d", "/run/modprobe.d",
    "/run/modules-load.d", "/run/binfmt.d", "/run/sudo", "/run/NetworkManager",
)
# Old names of directories that are symlinks on a Debian system (resolve before checking).
ALIASES: tuple[tuple[str, str], ...] = (("/var/run", "/run"), ("/var/lock", "/run/lock"))


def _under(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def canonical(path: str) -> str:
    """`path` with the well-known directory aliases (/var/run -> /run) replaced."""
    for old, new in ALIASES:
        if _under(path, old):
            return new + path[len(old):]
    return path


def withheld(path: str, allowed: Sequence[str] = (), home: str | None = None) -> str | None:
    """Why write access to `path` is not granted on evidence alone, or None if it may be.

    `allowed`: paths the user named (--allow-write); at or below one of them, nothing is
    withheld. `home`: the home of the user whose own manager runs the service (--user): below
    it, only HOME_SENSITIVE and the home as a whole are withheld."""
    path = canonical(path.rstrip("/") or "/")
    if any(_under(path, canonical(a.rstrip("/") or "/")) for a in allowed):
        return None
    if home and home.count("/") > 1 and _under(path, home.rstrip("/")):
        home = home.rstrip("/")
        if path == home:
            return f"{home} is the user's whole home"
        for sub, why in HOME_SENSITIVE:
            if _under(path[len(home):], sub):
                return f"~{sub}: {why}"
        return None
    if path in BROAD or path.count("/") == 1:
        return f"{path} is a shared top-level directory"
    for prefix, why in sorted(SENSITIVE, key=lambda s: -len(s[0])):
        if _under(path, prefix):
            return f"{prefix}: {why}"
    return None

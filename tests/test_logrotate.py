"""Which files logrotate renames, read from its configuration as Debian ships it."""

from __future__ import annotations

from pathlib import Path

from autosandbox.linux.logrotate import rotated_files

# Debian 12's rsyslog and vsftpd files as shipped, postgresql-common's (copytruncate) and
# a global copytruncate default that a later block overrides.
RSYSLOG = """\
/var/log/syslog
/var/log/mail.log
/var/log/kern.log
{
\trotate 4
\tweekly
\tmissingok
\tnotifempty
\tcompress
\tdelaycompress
\tsharedscripts
\tpostrotate
\t\t# copytruncate named in a script is shell, not a directive
\t\t/usr/lib/rsyslog/rsyslog-rotate
\tendscript
}
"""
VSFTPD = """\
/var/log/vsftpd.log
{
\tcreate 640 root adm
\tmissingok
\tnotifempty
\trotate 4
\tweekly
}
"""
POSTGRES = """\
/var/log/postgresql/*.log {
       weekly
       rotate 10
       copytruncate
       delaycompress
       compress
       notifempty
       missingok
       su root root
}
"""


def _tree(tmp: Path, main: str, files: dict[str, str]) -> Path:
    d = tmp / "logrotate.d"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text.replace("/var/log", str(tmp / "log")))
    conf = tmp / "logrotate.conf"
    conf.write_text(main.replace("INCLUDE", str(d)))
    for name in ("syslog", "mail.log", "vsftpd.log", "postgresql/main.log", "app.log",
                 "old.log"):
        f = tmp / "log" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x\n")
    return conf


def test_renamed_files_are_found_and_copied_ones_are_not(tmp_path: Path) -> None:
    conf = _tree(tmp_path, "weekly\nrotate 4\ncreate\ninclude INCLUDE\n",
                 {"rsyslog": RSYSLOG, "vsftpd": VSFTPD, "postgresql-common": POSTGRES,
                  "old.dpkg-old": "/var/log/old.log {\n weekly\n}\n"})
    log = tmp_path / "log"
    found = rotated_files(conf)
    assert found == {str(log / "syslog"): str(tmp_path / "logrotate.d" / "rsyslog"),
                     str(log / "mail.log"): str(tmp_path / "logrotate.d" / "rsyslog"),
                     str(log / "vsftpd.log"): str(tmp_path / "logrotate.d" / "vsftpd")}
    # kern.log does not exist: logrotate would find nothing to rotate either


def test_a_global_copytruncate_holds_until_a_block_says_otherwise(tmp_path: Path) -> None:
    conf = _tree(tmp_path, "copytruncate\ninclude INCLUDE\n",
                 {"app": "/var/log/app.log {\n daily\n}\n",
                  "vsftpd": VSFTPD.replace("\tweekly", "\tnocopytruncate")})
    log = tmp_path / "log"
    assert rotated_files(conf) == {str(log / "vsftpd.log"): str(tmp_path / "logrotate.d" /
                                                                 "vsftpd")}


def test_an_include_loop_and_a_missing_file_end_quietly(tmp_path: Path) -> None:
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"include {conf}\ninclude {tmp_path / 'missing'}\n")
    assert rotated_files(conf) == {}
    assert rotated_files(tmp_path / "none.conf") == {}

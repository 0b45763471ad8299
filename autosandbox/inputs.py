"""Checks of what the user gives on the command line, done before anything starts."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from autosandbox.errors import UserError

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$")


def check_url(url: str) -> None:
    """--health-url: http or https to a host (a file: or ftp: URL is no health check)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UserError(f"--health-url {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UserError(f"--health-url {url!r}: only http:// and https:// URLs are checked")
    if not parts.hostname:
        raise UserError(f"--health-url {url!r} names no host")
    if port == 0:
        raise UserError(f"--health-url {url!r}: port 0 is not a port")
    if any(ord(c) < 0x21 or ord(c) == 0x7f for c in url):
        raise UserError(f"--health-url {url!r} contains spaces or control characters")


def check_port(text: str) -> None:
    """--health-port: PORT or HOST:PORT ([V6ADDR]:PORT), the port from 1 to 65535."""
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UserError(f"--health-port {text!r}: give [HOST:]PORT with a port from 1 to 65535")
    if not sep:
        return
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(bare)
        return
    except ValueError:
        pass
    if not _HOSTNAME.match(bare):
        raise UserError(f"--health-port {text!r}: {host!r} is not a host name or address")

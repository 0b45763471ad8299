"""Talking to systemd: D-Bus, drop-ins, systemd-analyze."""

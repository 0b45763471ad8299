"""Synthesis: turn a Profile into the tightest drop-in the target systemd enforces."""

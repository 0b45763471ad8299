"""Tracing: run a program or a unit under strace (and tracefs), yield a Profile."""

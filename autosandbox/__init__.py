"""autosandbox: learn the tightest systemd sandbox a service can live with."""

__version__ = "0.1.0"

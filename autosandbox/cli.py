"""Command line: parse, call one stage, print. No logic lives here."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

from autosandbox import __version__
from autosandbox.durations import parse_duration
from autosandbox.errors import UserError
from autosandbox.learn import LearnOptions, learn_command, learn_unit
from autosandbox.profile import Profile
from autosandbox.report import summarize
from autosandbox.results import Result, result_for_profile
from autosandbox.trace.unit import reset_unit

_UNIT_NAME = re.compile(r"^[\w:.\\@-]+\.(service|socket|timer|target|mount|path|slice|scope|"
                        r"device|swap|automount)$")


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"autosandbox: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("autosandbox: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:
            if os.environ.get("AUTOSANDBOX_DEBUG"):
                raise
            click.echo(f"autosandbox: internal error: {type(exc).__name__}: {exc} "
                       "(AUTOSANDBOX_DEBUG=1 shows the traceback)", err=True)
            ctx.exit(70)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="autosandbox")
def main() -> None:
    """Learn the tightest systemd sandbox a service can live with.

    autosandbox runs a program (or restarts a unit) under strace while its real workload
    runs, records every path, socket, capability and system call it uses, and writes the
    tightest drop-in that still allows exactly that, each line with its evidence.

    \b
    Typical use:
      autosandbox learn -- python3 -m http.server 8080      # trace until exit or Ctrl-C
      autosandbox learn --duration 30s -o app.conf -- /usr/bin/myapp --flag
      autosandbox learn myapp.service --duration 10m        # trace a running service
      autosandbox synthesize app.json                       # profile -> drop-in, later
      autosandbox merge a.json b.json -o all.json           # union of several runs
      autosandbox show app.json                             # what was seen
    """


def _target_options(f: Any) -> Any:
    f = click.option("--systemd-version", type=int, metavar="N",
                     help="Write for systemd N (another host) instead of this host's.")(f)
    f = click.option("--bpf/--no-bpf", default=None,
                     help="Whether the target systemd is built with BPF_FRAMEWORK "
                          "(SocketBindAllow/Deny=); default: as detected.")(f)
    return f


def _emit(result: Result, output: Path | None, as_json: bool) -> None:
    if output is not None:
        _write(output, result.dropin)
    if as_json:
        click.echo(json.dumps(result.to_json(output), indent=1))
        return
    if output is None:
        click.echo(result.dropin, nl=False)
    for line in result.messages(output):
        click.echo(line, err=True)


def _write(path: Path, text: str) -> None:
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("-d", "--duration", metavar="TIME",
              help="How long to trace (30s, 10m, 1h). Commands: until they exit or Ctrl-C "
                   "by default. Units: required.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the drop-in here instead of stdout (the profile goes next to it).")
@click.option("--profile-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the raw profile (JSON) here, for synthesize/merge/show.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option("-q", "--quiet", is_flag=True, help="No progress line.")
@click.option("--exercise", metavar="CMD",
              help="Units: a workload command run while learning (e.g. 'curl -s localhost').")
@_target_options
def learn(target: tuple[str, ...], duration: str | None, output: Path | None,
          profile_out: Path | None, as_json: bool, quiet: bool, exercise: str | None,
          systemd_version: int | None, bpf: bool | None) -> None:
    """Trace a command or a unit and print the tightest drop-in for it.

    \b
    A command goes after `--` and is run under strace:
      autosandbox learn -- /usr/bin/myapp --port 8080
    A unit is restarted with its Exec lines wrapped in strace (root only), traced for
    --duration while its real workload runs, then restored exactly as it was:
      autosandbox learn myapp.service --duration 10m
    """
    opts = LearnOptions(
        duration=parse_duration(duration) if duration else None,
        progress=not quiet and not as_json,
        systemd_version=systemd_version, bpf=bpf, exercise=exercise,
    )
    raw = sys.argv[sys.argv.index("learn") + 1:] if "learn" in sys.argv else []
    if "--" not in raw and len(target) == 1 and _UNIT_NAME.match(target[0]):
        if not target[0].endswith(".service"):
            raise UserError(f"{target[0]} is not a service: autosandbox learns .service units")
        result = learn_unit(target[0], opts)
    else:
        result = learn_command(list(target), opts)
    prof = profile_out or (output.with_suffix(".json") if output else None)
    if prof is None and result.profile.subject.get("unit"):
        prof = Path(f"{result.profile.subject['unit']}.profile.json")
    if prof is not None:
        result.profile.save(prof)
        result.profile_path = prof.absolute()
    _emit(result, output, as_json)
    if result.exit_code:
        sys.exit(result.exit_code)


@main.command()
@click.argument("unit")
def reset(unit: str) -> None:
    """Remove a trace or trial drop-in left by a killed autosandbox and restart the unit."""
    done = reset_unit(unit)
    for line in done or [f"nothing to reset for {unit}"]:
        click.echo(line, err=True)


@main.command()
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the drop-in here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@_target_options
def synthesize(profile: Path, output: Path | None, as_json: bool, systemd_version: int | None,
               bpf: bool | None) -> None:
    """Turn a saved profile into a drop-in (any time later, for any systemd version)."""
    result = result_for_profile(Profile.load(profile), systemd_version, bpf)
    result.profile_path = profile
    _emit(result, output, as_json)


@main.command()
@click.argument("profiles", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the merged profile.")
def merge(profiles: tuple[Path, ...], output: Path) -> None:
    """Union several profiles (runs, hosts, workloads) into one."""
    merged = Profile.load(profiles[0])
    first_subject = dict(merged.subject)
    merged.subject = {**first_subject, "merged": [first_subject]}
    for path in profiles[1:]:
        merged.merge(Profile.load(path))
    merged.save(output)
    click.echo(f"merged {len(profiles)} profiles into {output}", err=True)


@main.command()
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def show(profile: Path, as_json: bool) -> None:
    """Summarize what a profile saw: paths, sockets, capabilities, behaviour, syscalls."""
    p = Profile.load(profile)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1))
    else:
        click.echo(summarize(p), nl=False)

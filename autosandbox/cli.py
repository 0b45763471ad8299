"""Command line: parse, call one stage, print. No logic lives here."""

from __future__ import annotations

import json
import os
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
from autosandbox.systemd.manager import check_unit_name, looks_like_unit
from autosandbox.trace.unit import reset_unit
from autosandbox.validate.apply import apply, diff, load_learned, revert, save_learned
from autosandbox.validate.health import HealthChecks
from autosandbox.validate.trials import parse_candidate, render_validated, validate


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


def _health_options(f: Any) -> Any:
    opts = [
        click.option("--health-cmd", metavar="CMD",
                     help="A command that must exit 0 while the service is healthy."),
        click.option("--health-url", metavar="URL",
                     help="A URL that must answer with a status below 400."),
        click.option("--health-port", metavar="[HOST:]PORT",
                     help="A TCP port that must accept connections."),
        click.option("--settle", default="5s", show_default=True, metavar="TIME",
                     help="How long the service must stay up after each restart."),
        click.option("--max-trials", default=12, show_default=True, type=click.IntRange(1, 100),
                     help="At most this many restarts while validating."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _checks(health_cmd: str | None, health_url: str | None, health_port: str | None,
            settle: str, exercise: str | None) -> HealthChecks:
    return HealthChecks(settle=parse_duration(settle), command=health_cmd, url=health_url,
                        port=health_port, exercise=exercise)


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
              help="Units: a workload command run while learning and again in every trial, "
                   "so trials see the code paths learning saw (e.g. 'curl -fsS localhost').")
@click.option("--tracer", type=click.Choice(["auto", "fast", "full"]), default="auto",
              show_default=True,
              help="'fast' ptraces only the calls the sandbox is built from, takes the "
                   "syscall set from tracefs and, with bpftrace installed, opens from the "
                   "kernel (a busy server keeps about two thirds of its throughput); 'full' "
                   "ptraces every call (a twentieth); 'auto' is fast where tracefs allows it "
                   "(not in a container).")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Units: prove the drop-in by restarts and health checks, relaxing only "
                   "what broke.")
@_health_options
@_target_options
def learn(target: tuple[str, ...], duration: str | None, output: Path | None,
          profile_out: Path | None, as_json: bool, quiet: bool, exercise: str | None,
          tracer: str, validate: bool, health_cmd: str | None, health_url: str | None,
          health_port: str | None, settle: str, max_trials: int,
          systemd_version: int | None, bpf: bool | None) -> None:
    """Trace a command or a unit and print the tightest drop-in for it.

    \b
    A command goes after `--` and is run under strace:
      autosandbox learn -- /usr/bin/myapp --port 8080
    A unit is restarted with its Exec lines wrapped in strace (root only), traced for
    --duration while its real workload runs, then restored exactly as it was; the drop-in
    is then validated by trial restarts (see `autosandbox validate --help`):
      autosandbox learn myapp.service --duration 10m --exercise 'curl -fsS localhost/'
    The result is also kept as /var/lib/autosandbox/UNIT/learned.conf for `apply`.
    """
    opts = LearnOptions(
        duration=parse_duration(duration) if duration else None,
        progress=not quiet and not as_json,
        systemd_version=systemd_version, bpf=bpf, exercise=exercise, validate=validate,
        checks=_checks(health_cmd, health_url, health_port, settle, exercise),
        max_trials=max_trials, fast={"auto": None, "fast": True, "full": False}[tracer],
    )
    raw = sys.argv[sys.argv.index("learn") + 1:] if "learn" in sys.argv else []
    if "--" not in raw and len(target) == 1 and looks_like_unit(target[0]):
        check_unit_name(target[0])
        result = learn_unit(target[0], opts)
    else:
        result = learn_command(list(target), opts)
    prof = profile_out or (output.with_suffix(".json") if output else None)
    if prof is None and result.profile.subject.get("unit"):
        prof = Path(f"{result.profile.subject['unit']}.profile.json")
    if prof is not None:
        result.profile.save(prof)
        result.profile_path = prof.absolute()
    if result.profile.subject.get("unit"):
        save_learned(str(result.profile.subject["unit"]), result.dropin)
    _emit(result, output, as_json)
    if result.exit_code:
        sys.exit(result.exit_code)


@main.command("validate")
@click.argument("unit")
@click.argument("dropin", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the validated drop-in here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option("--exercise", metavar="CMD", help="A workload command run in every trial.")
@click.option("-q", "--quiet", is_flag=True, help="No trial lines while working.")
@_health_options
def validate_cmd(unit: str, dropin: Path, output: Path | None, as_json: bool,
                 exercise: str | None, quiet: bool, health_cmd: str | None,
                 health_url: str | None, health_port: str | None, settle: str,
                 max_trials: int) -> None:
    """Prove a drop-in on a unit by trial and error.

    \b
    Each trial installs the candidate as a runtime drop-in (/run, never /etc), restarts the
    unit and watches it for --settle: it must reach active, not restart, keep its main
    process and pass the --health-* checks and --exercise. Denials in the unit's journal
    relax the candidate with evidence (a denied path becomes a ReadWritePaths= entry);
    otherwise bisection over the directives finds the one that broke it and relaxes it one
    step. The unit is restored as it was found. Exit 3 if no healthy candidate was found.
    """
    checks = _checks(health_cmd, health_url, health_port, settle, exercise)
    candidate = parse_candidate(_read(dropin), unit)
    say = None if quiet or as_json else (lambda text: click.echo(text, err=True))
    v = validate(unit, candidate, checks, max_trials, on_event=say)
    text = render_validated(v)
    if output is not None:
        _write(output, text)
    if as_json:
        click.echo(json.dumps({"dropin": text, "healthy": v.healthy, "restarts": v.restarts,
                               "trials": [t.to_json() for t in v.trials], "notes": v.notes},
                              indent=1))
    elif output is None:
        click.echo(text, nl=False)
    for n in v.notes:
        click.echo(f"note: {n}", err=True)
    if not v.healthy:
        sys.exit(3)


@main.command("apply")
@click.argument("unit")
@click.argument("dropin", required=False, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option("--exercise", metavar="CMD", help="A workload command that must succeed.")
@_health_options
def apply_cmd(unit: str, dropin: Path | None, as_json: bool, exercise: str | None,
              health_cmd: str | None, health_url: str | None, health_port: str | None,
              settle: str, max_trials: int) -> None:
    """Install a drop-in for good, health-check, roll back by itself if unhealthy.

    Installs DROPIN (default: the one `learn` kept for UNIT) as
    /etc/systemd/system/UNIT.d/50-autosandbox.conf, backing up a file it replaces, then
    daemon-reload, restart and health checks. `autosandbox revert UNIT` undoes it.
    """
    text = _read(dropin) if dropin else load_learned(unit)
    done = apply(unit, text, _checks(health_cmd, health_url, health_port, settle, exercise))
    if as_json:
        click.echo(json.dumps({"installed": str(done.path), "healthy": done.health.healthy,
                               "backup": str(done.backup) if done.backup else None}))
    else:
        click.echo(f"installed {done.path}; {unit} is healthy", err=True)


@main.command("revert")
@click.argument("unit")
def revert_cmd(unit: str) -> None:
    """Remove the drop-in `apply` installed and restore the file it replaced, byte for byte."""
    for line in revert(unit):
        click.echo(line, err=True)


@main.command("diff")
@click.argument("unit")
@click.argument("dropin", required=False, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))
def diff_cmd(unit: str, dropin: Path | None) -> None:
    """Show what applying DROPIN (default: the learned one) would change for UNIT."""
    click.echo(diff(unit, _read(dropin) if dropin else load_learned(unit)), nl=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


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

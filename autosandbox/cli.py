"""Command line: parse, call one stage, print. No logic lives here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import sys
from pathlib import Path
from typing import Any

import click

from autosandbox import __version__, interrupts, logs
from autosandbox.durations import SETTLE_BOUNDS, TRACE_BOUNDS, parse_duration
from autosandbox.errors import UserError
from autosandbox.inputs import check_port, check_url
from autosandbox.learn import LearnOptions, learn_command, learn_unit, unit_target
from autosandbox.linux.files import write_output
from autosandbox.profile import Profile
from autosandbox.provenance import default_label, describe, merge_profiles
from autosandbox.report import QUIET, ProgressLine, Reporter, summarize
from autosandbox.reset import reset_unit
from autosandbox.results import Result, result_for_profile
from autosandbox.systemd import runstate
from autosandbox.systemd.manager import (
    check_learnable_name,
    check_unit_name,
    looks_like_unit,
    template_of,
    use_scope,
    user_scope,
)
from autosandbox.systemd.session import require_root
from autosandbox.validate.apply import (
    apply,
    diff,
    learned_profile,
    load_learned,
    revert,
    save_learned,
)
from autosandbox.validate.health import HealthChecks
from autosandbox.validate.trials import parse_candidate, render_validated, validate

_RAW_ARGS: list[str] = []  # the command line as given (click drops `--`; learn needs it)


class _Group(click.Group):
    def main(self, args: Any = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        """SIGINT, SIGTERM, SIGHUP and the other signals of interrupts.SIGNALS interrupt every
        command alike, from the first moment; bad usage is one line and exit 2, like every
        other error."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        old = interrupts.install()
        _RAW_ARGS[:] = list(sys.argv[1:] if args is None else args)
        code: Any = 0
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except (KeyboardInterrupt, click.Abort):
            code = _interrupted()
        except click.UsageError as exc:
            hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            click.echo(f"autosandbox: error: {exc.format_message()}{hint}", err=True)
            code = 2
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        finally:
            interrupts.restore(old)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            if interrupts.interrupted():  # an error while unwinding from a signal
                ctx.exit(_interrupted())
            click.echo(f"autosandbox: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            ctx.exit(_interrupted())
        except (click.exceptions.Exit, click.ClickException):
            raise
        except OSError as exc:  # the environment (a full /run, a read-only directory)
            if os.environ.get("AUTOSANDBOX_DEBUG"):
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"autosandbox: error: {exc.strerror or exc}{where}", err=True)
            ctx.exit(2)
        except Exception as exc:
            if os.environ.get("AUTOSANDBOX_DEBUG"):
                raise
            click.echo(f"autosandbox: internal error: {type(exc).__name__}: {exc} "
                       "(AUTOSANDBOX_DEBUG=1 shows the traceback)", err=True)
            ctx.exit(70)


def _interrupted() -> int:
    click.echo(f"autosandbox: interrupted by {_signal_name()}: what was started is "
               "stopped and the unit restored; nothing learned was saved", err=True)
    return 130


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="autosandbox")
@click.option("-v", "--verbose", is_flag=True,
              help="Show on stderr each external command, each systemd job and each step of "
                   "putting things back, with the seconds since start.")
def main(verbose: bool) -> None:
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
    logs.configure(verbose)


def _target_options(f: Any) -> Any:
    # 219 (RHEL/CentOS 7) is the oldest systemd still met on servers; 999 leaves centuries
    # of releases (two a year, 257 in 2024) and refuses a typo.
    f = click.option("--systemd-version", type=click.IntRange(219, 999), metavar="N",
                     help="Write for systemd N (219-999; another host) instead of this "
                          "host's.")(f)
    f = click.option("--bpf/--no-bpf", default=None,
                     help="Whether the target systemd is built with BPF_FRAMEWORK "
                          "(SocketBindAllow/Deny=); default: as detected.")(f)
    return f


def _grant_options(f: Any) -> Any:
    """What the user grants by name, beyond what evidence alone may grant."""
    f = click.option("--allow-write", "allow_write", multiple=True, metavar="PATH",
                     help="Let the drop-in make PATH writable when the service wrote there, "
                          "even though it is a sensitive or shared place (/etc/cron.d, /run, "
                          "...) that is otherwise withheld. Repeatable.")(f)
    f = click.option("--ip-allow", "ip_allow", multiple=True, metavar="ADDR[/PREFIX]",
                     help="Pin the service's IP peers: IPAddressDeny=any with these allowed "
                          "(without it, only a loopback-only server is pinned). "
                          "Repeatable.")(f)
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
    """The health options, each checked before anything starts."""
    for name, cmd in (("--health-cmd", health_cmd), ("--exercise", exercise)):
        if cmd is not None and not cmd.strip():
            raise UserError(f"{name} is empty: give a shell command")
    if health_url is not None:
        check_url(health_url)
    if health_port is not None:
        check_port(health_port)
    return HealthChecks(settle=parse_duration(settle, "--settle", SETTLE_BOUNDS),
                        command=health_cmd, url=health_url, port=health_port,
                        exercise=exercise)


def _learn_target(target: tuple[str, ...]) -> str | None:
    """The unit `learn` works on, or None for a command. Options are ours wherever they stand
    before `--`; after it everything is the command's. A unit name is never run."""
    raw = _RAW_ARGS[_RAW_ARGS.index("learn") + 1:] if "learn" in _RAW_ARGS else list(target)
    if "--" in raw:
        after = len(raw) - raw.index("--") - 1
        before = list(target[:len(target) - after])
    else:
        before = list(target)
    for word in before:
        if word.startswith("-"):
            raise UserError(f"no such option: {word} (a command and its options go after "
                            "--: autosandbox learn [OPTIONS] -- CMD [ARGS...])")
    if "--" in raw:
        if before:
            raise UserError("give either a unit or a command after --, not both")
        return None
    if looks_like_unit(target[0]):
        if len(target) > 1:
            raise UserError(f"learn takes one unit, got: {' '.join(target)}")
        check_learnable_name(target[0])
        return target[0]
    if len(target) > 1:
        raise UserError(f"a command goes after --: autosandbox learn [OPTIONS] -- "
                        f"{' '.join(target)}")
    return None


def _template_option(f: Any) -> Any:
    return click.option("--template", is_flag=True,
                        help="UNIT is an instance (NAME@INST.service): the drop-in is for "
                             "every instance (NAME@.service.d/), proven on this one.")(f)


def _user_option(f: Any) -> Any:
    f = click.option("-M", "--machine", metavar="USER@",
                     help="With --user: the user whose manager it is (a name or a uid, "
                          "like systemctl --user -M USER@); no other machine.")(f)
    return click.option("--user", is_flag=True,
                        help="A unit of a user's service manager (systemctl --user), with "
                             "-M USER@; as root. Its drop-ins go to the user's own unit "
                             "directories.")(f)


def _use_manager(user: bool, machine: str | None, unit: str | None = None) -> str:
    """Pick the manager this run works on, before anything else; the unit name is checked
    again against it. Returns what to add to a command line that names this unit."""
    if machine is not None and not user:
        raise UserError(f"-M {machine}: only with --user (a user's manager on this host); "
                        "other machines are not supported")
    if user:
        if machine is None:
            raise UserError("--user needs -M USER@ and root (strace, its FIFOs and our state "
                            "are root's): sudo autosandbox ... --user -M USER@ UNIT")
        use_scope(user_scope(machine))
        if unit is not None:
            check_unit_name(unit)
        return f" --user -M {machine}"
    return ""


def _unit_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.endswith("@.service"):
        check_unit_name(value)  # a template: only one an Accept=yes socket starts (apply.py)
    return value


def _check_writable(path: Path | None) -> None:
    """An output file must be writable before a long trace starts, not after it."""
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"{path} is a directory: give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"cannot write {path}: permission denied")
    # `-o x.conf --json > x.json`: the profile (x.json) would replace the file the shell
    # opened for our output, which would then go to a file no name leads to any more
    try:
        st = path.stat()
    except OSError:
        return
    for fd, name in ((1, "standard output"), (2, "standard error")):
        with contextlib.suppress(OSError):
            out = os.fstat(fd)
            if stat.S_ISREG(out.st_mode) and (out.st_dev, out.st_ino) == (st.st_dev, st.st_ino):
                raise UserError(f"cannot write {path}: it is where {name} goes (use another "
                                "name, or --profile-out for the profile)")


def _keep_partial(result: Result, prof: Path | None) -> None:
    """--keep-partial after a signal: the profile only (marked partial), then exit 130."""
    path = prof or Path("partial.profile.json")
    result.profile.save(path)
    click.echo(f"autosandbox: interrupted by {_signal_name()}: partial profile saved to "
               f"{path}; no drop-in was written", err=True)
    sys.exit(130)


def _signal_name() -> str:
    return signal.Signals(interrupts.interrupted() or signal.SIGINT).name


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
    write_output(path, text.encode("utf-8"))


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("target", nargs=-1, type=click.UNPROCESSED, required=True)
@click.option("-d", "--duration", metavar="TIME",
              help="How long to trace (30s, 10m, 1h). Commands: until they exit or Ctrl-C "
                   "by default. Units: required, counted from the service's first traced "
                   "call.")
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
@click.option("--keep-partial", is_flag=True,
              help="If a signal cuts the trace, still save the profile so far (marked "
                   "partial; no drop-in, no validation, exit 130).")
@click.option("--sessions", is_flag=True,
              help="Learn a unit that opens users' login sessions (sshd, cron, vsftpd: its "
                   "program calls pam_open_session) all the same. Refused without it: its "
                   "sandbox would confine every session it starts, which no trace foresees.")
@_template_option
@_user_option
@_health_options
@_target_options
@_grant_options
def learn(target: tuple[str, ...], duration: str | None, output: Path | None,
          profile_out: Path | None, as_json: bool, quiet: bool, exercise: str | None,
          tracer: str, validate: bool, health_cmd: str | None, health_url: str | None,
          health_port: str | None, settle: str, max_trials: int,
          systemd_version: int | None, bpf: bool | None, keep_partial: bool,
          allow_write: tuple[str, ...], ip_allow: tuple[str, ...], template: bool,
          user: bool, machine: str | None, sessions: bool) -> None:
    """Trace a command or a unit and print the tightest drop-in for it.

    \b
    A command goes after `--` and is run under strace:
      autosandbox learn -- /usr/bin/myapp --port 8080
    A unit is restarted with its Exec lines wrapped in strace (root only), traced for
    --duration while its real workload runs, then restored exactly as it was; the drop-in
    is then validated by trial restarts (see `autosandbox validate --help`):
      autosandbox learn myapp.service --duration 10m --exercise 'curl -fsS localhost/'
    A .socket or .timer learns the service it starts (the socket or timer is left as it
    is); a timer's service is not restarted: the runs the timer starts within --duration are
    traced. An instance (NAME@INST.service) is learned for itself, or with --template for
    every instance (NAME@.service.d/). An Accept=yes socket, its template NAME@.service or
    one of its instances learn the template from every instance started within --duration
    (nothing is restarted; the checks must connect through the socket).
    A validated result is kept as /var/lib/autosandbox/UNIT/learned.conf for `apply`; one
    that is not validated as unvalidated.conf, which `apply` installs only with --force.
    """
    flag = _use_manager(user, machine)
    unit = _learn_target(target)
    if user and unit is None:
        raise UserError("--user learns a unit of a user's manager: give a NAME.service")
    if template and unit is None:
        raise UserError("--template needs a unit (NAME@INSTANCE.service)")
    if unit is not None:
        require_root()  # before anything is written: as another user nothing can work
    prof = profile_out or (output.with_suffix(".json") if output else None)
    if prof is None and unit is not None:
        prof = Path(f"{unit}.profile.json")
    for path in (output, prof):
        _check_writable(path)
    opts = LearnOptions(
        duration=(parse_duration(duration, "--duration", TRACE_BOUNDS)
                  if duration is not None else None),
        progress=not quiet and not as_json, keep_partial=keep_partial,
        systemd_version=systemd_version, bpf=bpf, exercise=exercise, validate=validate,
        checks=_checks(health_cmd, health_url, health_port, settle, exercise),
        max_trials=max_trials, fast={"auto": None, "fast": True, "full": False}[tracer],
        allow_write=allow_write, ip_allow=ip_allow, template=template,
        sessions=sessions,
    )
    service = unit_target(unit, opts) if unit else None  # a .socket's or .timer's service
    with runstate.session(service.service if service else None, _RAW_ARGS):
        result = learn_unit(service, opts) if service else learn_command(list(target), opts)
        if not result.profile.subject.partial:
            interrupts.check()
    if result.profile.subject.partial:
        _keep_partial(result, prof)
    if prof is not None:
        result.profile.save(prof)
        result.profile_path = prof.absolute()
    unit = result.profile.subject.unit
    if unit:
        # a validated learn is what `apply UNIT` installs; another only with --force
        kept = save_learned(str(unit), result.dropin, result.validated, template,
                            result.profile.to_json())
        how = f"{unit} --template{flag}" if template else f"{unit}{flag}"
        if kept is not None:
            result.notes.append(f"kept for 'autosandbox apply {how}': {kept}"
                                if result.validated else
                                f"kept, not validated: {kept} ('autosandbox apply {how}' "
                                "installs it only with --force)")
    _emit(result, output, as_json)
    if result.exit_code:
        sys.exit(result.exit_code)


@main.command("validate")
@click.argument("unit", callback=_unit_arg)
@click.argument("dropin", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the validated drop-in here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option("--exercise", metavar="CMD", help="A workload command run in every trial.")
@click.option("-q", "--quiet", is_flag=True, help="No trial lines while working.")
@click.option("--allow-write", "allow_write", multiple=True, metavar="PATH",
              help="Let relaxation make PATH writable on evidence although it is a sensitive "
                   "or shared place that is otherwise withheld. Repeatable.")
@_user_option
@_health_options
def validate_cmd(unit: str, dropin: Path, output: Path | None, as_json: bool,
                 exercise: str | None, quiet: bool, allow_write: tuple[str, ...],
                 health_cmd: str | None, health_url: str | None, health_port: str | None,
                 settle: str, max_trials: int, user: bool, machine: str | None) -> None:
    """Prove a drop-in on a unit by trial and error.

    \b
    DROPIN must be what autosandbox writes: one [Service] section of sandboxing directives
    and comments (anything else is refused, exit 2). The first trial runs the unit as found,
    without the candidate: if that is unhealthy, nothing else is tried (exit 2). Each trial
    installs the candidate as a runtime drop-in (/run, never /etc) and runs the unit's life
    cycle: start, the --health-* checks and --exercise until ready, --settle, again; reload
    (if it has ExecReload=); stop (within twice its stop time as found, + 5s); start again.
    It must stay active with the same main process, cause no denial (journal, audit) and
    change no owner or mode on disk. Denials relax the candidate with evidence (a denied
    path becomes a ReadWritePaths= entry, a refused chown CAP_CHOWN); otherwise bisection
    over the directives finds the one that broke it and relaxes it one step. The unit is
    restored as it was found. Exit 3 if no healthy candidate was found.
    """
    _use_manager(user, machine, unit)
    _check_writable(output)
    checks = _checks(health_cmd, health_url, health_port, settle, exercise)
    candidate = parse_candidate(_read(dropin), unit)
    reporter: Reporter = QUIET if quiet or as_json else ProgressLine()
    # files the service writes outside its directories are watched only if a learn saw them
    learned = learned_profile(unit)
    written = sorted(Profile.load(learned).written_paths()) if learned is not None else []
    with runstate.session(unit, _RAW_ARGS):
        v = validate(unit, candidate, checks, max_trials, reporter=reporter,
                     allow_write=allow_write, written=written)
        interrupts.check()  # nothing validated by a cut run is printed or saved
    v.notes.append(f"watched on disk: the unit's directories and the {len(written)} path(s) "
                   f"written in the learned profile {learned}" if learned is not None else
                   "no learned profile of this unit was found: only the unit's directories "
                   "are watched on disk ('autosandbox learn' keeps one)")
    text = render_validated(v)
    if output is not None:
        _write(output, text)
    if as_json:
        click.echo(json.dumps({"dropin": text, "healthy": v.healthy, "restarts": v.restarts,
                               "trials": [t.to_json() for t in v.trials], "notes": v.notes},
                              indent=1))
    elif output is None:
        click.echo(text, nl=False)
    if not v.healthy:
        click.echo(f"NOT VALIDATED: no healthy sandbox found in {v.restarts} restart(s), the "
                   "baseline included; the drop-in is the last candidate", err=True)
    elif output is not None:
        click.echo(f"validated in {v.restarts} restart(s), the baseline included: {output}",
                   err=True)
    for n in v.notes:
        click.echo(f"note: {n}", err=True)
    if not v.healthy:
        sys.exit(3)


@main.command("apply")
@click.argument("unit", callback=_unit_arg)
@click.argument("dropin", required=False, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@click.option("--exercise", metavar="CMD", help="A workload command that must succeed.")
@click.option("--force", is_flag=True,
              help="Install a drop-in that was not validated on UNIT (it is still "
                   "health-checked and rolled back if unhealthy).")
@_template_option
@_user_option
@_health_options
def apply_cmd(unit: str, dropin: Path | None, as_json: bool, exercise: str | None,
              force: bool, template: bool, health_cmd: str | None, health_url: str | None,
              health_port: str | None, settle: str, max_trials: int, user: bool,
              machine: str | None) -> None:
    """Install a drop-in for good, health-check, roll back by itself if unhealthy.

    Installs DROPIN (default: the one `learn` kept for UNIT) as
    /etc/systemd/system/UNIT.d/50-autosandbox.conf, backing up a file it replaces, then
    daemon-reload, restart and health checks. `autosandbox revert UNIT` undoes it.
    Only what autosandbox writes is accepted (one [Service] section of sandboxing
    directives); a drop-in not validated on UNIT only with --force. With --template, UNIT is
    an instance: the drop-in goes to NAME@.service.d/ and UNIT is the one health-checked
    (other instances get it at their next start). With --user -M USER@ the drop-in goes to
    ~USER/.config/systemd/user/UNIT.d/, owned by USER (`revert` removes every directory it
    made there).
    """
    _use_manager(user, machine, unit)
    if template:
        template_of(unit)
    text = _read(dropin) if dropin else load_learned(unit, unvalidated_ok=force,
                                                     template=template)
    checks = _checks(health_cmd, health_url, health_port, settle, exercise)
    with runstate.session(unit, _RAW_ARGS):
        done = apply(unit, text, checks, force, template=template)
    if as_json:
        click.echo(json.dumps({"installed": str(done.path), "healthy": done.health.healthy,
                               "backup": str(done.backup) if done.backup else None}))
    else:
        click.echo(f"installed {done.path}; {unit} is healthy", err=True)


@main.command("revert")
@click.argument("unit", callback=_unit_arg)
@_template_option
@_user_option
def revert_cmd(unit: str, template: bool, user: bool, machine: str | None) -> None:
    """Remove the drop-in `apply` installed and restore the file it replaced, byte for byte."""
    _use_manager(user, machine, unit)
    if template:
        template_of(unit)
    with runstate.session(unit, _RAW_ARGS):
        lines = revert(unit, template=template)
    for line in lines:
        click.echo(line, err=True)


@main.command("diff")
@click.argument("unit", callback=_unit_arg)
@click.argument("dropin", required=False, type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path))
@_template_option
@_user_option
def diff_cmd(unit: str, dropin: Path | None, template: bool, user: bool,
             machine: str | None) -> None:
    """Show what applying DROPIN (default: the learned one) would change for UNIT."""
    _use_manager(user, machine, unit)
    if template:
        template_of(unit)
    text = _read(dropin) if dropin else load_learned(unit, unvalidated_ok=True,
                                                     template=template)
    click.echo(diff(unit, text, template=template), nl=False)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


@main.command()
@click.argument("unit", required=False, callback=_unit_arg)
@click.option("--all", "all_runs", is_flag=True,
              help="Every killed run on record: of units and of commands.")
@_user_option
def reset(unit: str | None, all_runs: bool, user: bool, machine: str | None) -> None:
    """Undo what a killed autosandbox left behind (SIGKILL, a crash, a power cut of /run).

    
    Each run records what it creates as it creates it (/run/autosandbox/runs). For runs
    whose process is dead, reset removes exactly that: trace and trial drop-ins, FIFOs,
    tracefs instances, audit rules, an unfinished apply's drop-in (the previous file is put
    back), and kills helper processes (bpftrace, strace, the exercise) that survived,
    each verified by pid and start time. The unit is then restarted (or stopped, if the
    run found it stopped), even if the kill came while the run had it stopped; owners,
    modes and ACLs a killed trial changed are put back as the run found them. A run
    still alive is left alone.
    """
    if (unit is None) == (not all_runs):
        raise UserError("give a UNIT or --all")
    _use_manager(user, machine, unit)
    done = reset_unit(unit)
    for line in done or [f"nothing to reset for {unit or 'any run'}"]:
        click.echo(line, err=True)


@main.command()
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the drop-in here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for machines.")
@_target_options
@_grant_options
def synthesize(profile: Path, output: Path | None, as_json: bool, systemd_version: int | None,
               bpf: bool | None, allow_write: tuple[str, ...], ip_allow: tuple[str, ...]) -> None:
    """Turn a saved profile into a drop-in (any time later, for any systemd version)."""
    result = result_for_profile(Profile.load(profile), systemd_version, bpf, allow_write,
                                ip_allow)
    result.profile_path = profile
    _emit(result, output, as_json)


@main.command()
@click.argument("profiles", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the merged profile.")
@click.option("-l", "--label", "labels", multiple=True, metavar="NAME",
              help="Name of each profile's host or run, in the order of PROFILES (default: "
                   "the file name without .json). `show` says which NAME saw what.")
def merge(profiles: tuple[Path, ...], output: Path, labels: tuple[str, ...]) -> None:
    """Union several profiles (runs, hosts, workloads) into one, recording which saw what.

    \b
      autosandbox merge web1.json web2.json -o fleet.json
      autosandbox show fleet.json --host web2     # what web2 saw that not every host saw
    """
    if labels and len(labels) != len(profiles):
        raise UserError(f"{len(labels)} --label for {len(profiles)} profiles: give one each")
    loaded = [Profile.load(path) for path in profiles]
    names = labels or tuple(default_label(path, p)
                            for path, p in zip(profiles, loaded, strict=True))
    merged = merge_profiles(list(zip(names, loaded, strict=True)))
    merged.save(output)
    click.echo(f"merged {len(profiles)} profiles ({', '.join(merged.provenance['hosts'])}) "
               f"into {output}", err=True)


@main.command()
@click.argument("profile", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@click.option("--host", metavar="NAME",
              help="Of a merged profile: only what host NAME saw that not every host saw.")
def show(profile: Path, as_json: bool, host: str | None) -> None:
    """Summarize what a profile saw: paths, sockets, capabilities, behaviour, syscalls.

    Of a merged profile, also which host saw what not every host saw (paths, families,
    capabilities, ...).
    """
    p = Profile.load(profile)
    lines = describe(p, host)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1))
    elif host is not None:
        click.echo("\n".join(lines))
    else:
        click.echo(summarize(p), nl=False)
        if lines:
            click.echo("\n".join(["", *lines]))

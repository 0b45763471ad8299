"""A trial of a per-connection template (a socket with Accept=yes): nothing is restarted; the
user's checks drive connections through the socket, and the trial is judged by them and by
how every instance they started ended (started after the drop-in was loaded, each must end
cleanly; none started means nothing was tested)."""

from __future__ import annotations

import time
from collections.abc import Callable

from autosandbox.errors import UserError
from autosandbox.systemd.instances import Outcomes, outcomes, prefix_of
from autosandbox.validate.health import Health, HealthChecks, user_checks


def require_connections(checks: HealthChecks, template: str, socket: str) -> None:
    """Before anything changes: a trial without a check connects nowhere and tests nothing."""
    if not checks.user_checks():
        raise UserError(f"validating {template} needs a check that connects through {socket} "
                        "(--exercise or --health-cmd/--health-url/--health-port): each "
                        "trial is judged by the instances it starts")


def judge_instances(out: Outcomes, template: str, socket: str) -> list[str]:
    """Problems with the instances a trial started (pure: the journal's word on them)."""
    if not out.started:
        return [f"no instance of {template} was started (nothing was tested): the checks "
                f"must connect through {socket}"]
    problems = [f"instance {u}" for u in out.failed()[:3]]
    unfinished = out.unfinished()
    if unfinished:
        problems.append(f"{len(unfinished)} instance(s) did not end within the trial "
                        f"(e.g. {unfinished[0]})")
    return problems


def connection_trial(checks: HealthChecks, template: str, socket: str, cursor: str | None,
                     accepted: Callable[[], int]) -> tuple[Health, Outcomes]:
    """Run the checks (they open the connections), again after --settle, then wait for the
    instances started since `cursor` to end (bounded) and judge them. `accepted()`: the
    socket's count of accepted connections (NAccepted): as many instances are awaited as it
    grew by (systemd starts an instance a moment after the check's connection is gone)."""
    accepted0 = accepted()
    begun = time.monotonic()
    problems = user_checks(checks, retry_for=checks.ready)
    ready_s = None if problems else time.monotonic() - begun
    if not problems and checks.settle:
        time.sleep(checks.settle)
        problems += user_checks(checks)
    deadline = time.monotonic() + max(30.0, checks.ready)
    prefix = prefix_of(template)
    expected = accepted() - accepted0
    while True:
        out = outcomes(prefix, cursor)
        if (len(out.started) >= expected and not out.unfinished()) or \
                time.monotonic() >= deadline:
            break
        time.sleep(0.3)
    problems += judge_instances(out, template, socket)
    return Health(not problems, problems, "active", ready_s), out

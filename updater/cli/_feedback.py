"""`updater feedback`: a person tells the vendor something is wrong, with this machine's
evidence attached (docs/updater.md, "Feedback")."""

from pathlib import Path
from typing import TYPE_CHECKING

import click

from greenlight.channels import printable
from greenlight.updater._errors import StoreError, UsageError
from greenlight.updater.cli._common import (
    app,
    json_option,
    open_root,
    print_json,
    root_option,
    run_command,
    say,
)

if TYPE_CHECKING:
    from greenlight.channels import FeedbackReport
    from greenlight.updater.output import FeedbackResult
    from greenlight.updater.store import InstallRoot

__all__: list[str] = []


def _collect(install: "InstallRoot", result: "FeedbackResult") -> None:
    """What the product's UI left in its inbox, into `result`; a hostile inbox is one line
    and never keeps the person's own feedback from being queued."""
    from greenlight.updater.operations import collect_inbox

    try:
        found = collect_inbox(install)
    except (StoreError, OSError) as e:
        said = str(e) if isinstance(e, StoreError) else f"{e.filename or 'inbox'}: {e.strerror}"
        result.refused.append(f"inbox: {printable(said, 300)}")
        return
    except Exception as e:  # never in the way of the person's own feedback
        said = str(e).splitlines()[0] if str(e) else ""
        result.refused.append(f"inbox: not collected: {type(e).__name__}: "
                              f"{printable(said, 200)}")
        return
    result.collected += [r.id for r in found.accepted]
    result.refused += found.refused
    result.dropped += found.dropped
    if found.waiting:
        result.refused.append(f"{found.waiting} more inbox files wait for the next collection")


def _send(install: "InstallRoot", result: "FeedbackResult") -> None:
    from greenlight.updater.agent import send_feedback
    from greenlight.updater.store import feedback_refusal, queued_feedback

    result.sent = send_feedback(install)
    result.queued = len(queued_feedback(install))
    if result.queued:
        result.waiting = feedback_refusal(install) or (
            "the collector did not answer (now or lately): the agent, or the next command, "
            "sends it")


def _evidence(report: "FeedbackReport") -> str:
    incident = (f"the last incident ({report.incident.event}"
                + (f", {report.incident.check}" if report.incident.check else "") + ")"
                if report.incident else "no incident")
    logs = (f"{len(report.logs)} log tails" if report.logs_consent
            else "no logs (--logs attaches them)")
    return (f"{report.release_key or 'nothing installed'} on {report.channel or '-'}, cohort "
            f"{report.cohort or '-'}; {len(report.checks)} check results, {incident}, "
            f"{len(report.history)} history entries, {logs}")


@app.command("feedback")
@root_option
@click.argument("text", nargs=-1)
@click.option("--logs", is_flag=True,
              help="Attach the product's log tails (the last 8 KiB of each, redacted): your "
                   "consent; without it no log is read.")
@click.option("--dry-run", is_flag=True,
              help="Print exactly the JSON document that would be sent; queue nothing.")
@click.option("--export", "export", type=click.Path(path_type=Path), default=None,
              metavar="FILE",
              help="Write every queued feedback to FILE (new; JSON lines, each signed with "
                   "this machine's key) for `release feedback import`, then take it off the "
                   "queue.")
@click.option("--collect", is_flag=True,
              help="Only take what the product's UI left in its inbox, and send.")
@json_option
def feedback_cmd(root: Path | None, text: tuple[str, ...], logs: bool, dry_run: bool,
                 export: Path | None, collect: bool, as_json: bool) -> None:
    """Tell the vendor something is wrong: TEXT with this machine's evidence (its release,
    channel and cohort, Greenlight's version, the last health results and incident, the
    recent history; with --logs the product's log tails), queued and sent to the fleet
    collector ([report] url) by the agent and after commands, signed with this machine's
    key; or exported to a file on an air-gapped machine. Every run also takes what the
    product's UI left in <root>/feedback/inbox/.
    """
    from greenlight.updater.output import FeedbackResult

    install = open_root(root)
    words = " ".join(text)
    queued: list[FeedbackReport] = []

    def work() -> "FeedbackResult | bytes":
        from greenlight.updater.operations import (
            compose_feedback,
            dry_run_body,
            export_feedback,
            submit_feedback,
        )

        if (export is not None or collect) and (words or logs or dry_run):
            raise UsageError("--export and --collect take no TEXT, --logs or --dry-run")
        if export is not None and collect:
            raise UsageError("give --export FILE or --collect, not both")
        install.require()
        if dry_run:
            return dry_run_body(compose_feedback(install, words, "cli", logs))
        if not (export is not None or collect) and not words.strip():
            raise UsageError('the feedback is empty: say what is wrong, e.g. updater feedback '
                             '"the panel says: denying api access"')
        result = FeedbackResult(root=str(install.path), queued=0)
        _collect(install, result)
        if export is not None:
            result.exported, result.file = export_feedback(install, export), str(export)
            from greenlight.updater.store import queued_feedback

            result.queued = len(queued_feedback(install))
            return result
        if not collect:
            report, dropped = submit_feedback(install, words, logs)
            result.id, result.logs, result.dropped = report.id, logs, result.dropped + dropped
            queued.append(report)
        _send(install, result)
        return result

    done = run_command(as_json, work, install)
    if isinstance(done, bytes):
        say(done.decode())
        return
    if as_json:
        print_json(done)
        return
    for report in queued:
        say(f"feedback {report.id} queued: {_evidence(report)}")
    _print(done)


def _print(done: "FeedbackResult") -> None:
    for line in done.refused:
        say(line)
    for ident in done.collected:
        say(f"inbox: the product's feedback {ident} queued")
    if done.dropped:
        say(f"the queue holds 100 feedback: the {done.dropped} oldest dropped")
    if done.file is not None:
        say(f"{done.exported} feedback exported to {done.file} (signed; the vendor imports "
            "it with `release feedback import FILE`)" if done.exported else
            "nothing to export: no feedback is queued")
        return
    if done.sent:
        say(f"{done.sent} feedback sent to the collector")
    if done.waiting:
        said = done.waiting
        say(said if said.startswith("queued") else f"queued; {said}")
    elif not done.queued and not done.sent and not done.id:
        say("nothing queued")

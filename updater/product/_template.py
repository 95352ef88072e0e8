"""The greenlight.toml that `updater init` writes: complete and commented.

Top-level keys come first, then each table, so nothing appended below can land in the wrong
table. Every optional table and every check type is there as a commented example; the values
chosen at `init` are real TOML, rendered by tomli_w.
"""

import tomli_w

from greenlight.channels import Config

__all__ = ["config_text"]

_HEAD = """\
# greenlight.toml: the installation's repository and channel, and the product's services
# and health checks. Reference: docs/configuration.md in Greenlight's source.
#
# Top-level keys first. A key written below a [table] header belongs to that table, so add
# top-level keys (channel, keep_releases, backend) here, never at the end of the file.
"""

_TOP_NOTES = """\
# backend = "process"           # "process": the updater starts the services itself (they
#                               # outlive it); "systemd": units greenlight-<name>.service
#                               # (see `updater systemd-units`)
"""

_REPOSITORY_NOTES = """\
# metadata_url = "..."          # default: <url>metadata/
# targets_url = "..."           # default: <url>targets/
# timeout = 30.0                # seconds for one metadata request, and every download's slack
# min_rate = 65536              # bytes/s: an artifact must arrive in timeout + size / min_rate
"""

_TABLES = """
# ---- The product: uncomment and edit, or let the offline installer write it. ------------
# Relative paths (bearer_token_file) are relative to the installation root. Placeholders in
# commands, URLs and check fields: {root}, {release_dir}, {version}, {python}.

# [health]
# grace = 15.0                  # seconds the new release has to pass every check
# soak = 3.0                    # then seconds the checks must keep passing
# interval = 0.5                # seconds between rounds of checks

# [stop]
# drain = true                  # false: every service signalled at once, nothing drained
# timeout = 10.0                # per service: bound on draining and exiting, then a kill

# Services start in this order (each ready before the next) and stop in reverse. Output goes
# to <root>/logs/<name>.log; the working directory is `workdir` (default: the root).
# [[service]]
# name = "core"
# command = ["{python}", "{release_dir}/core/core.py", "--port", "18080"]
# ready = "core-ping"           # a [[check]] below that means "ready"
# restart = "on-failure"        # as systemd's Restart=: or "always", "no"
# restart_delay = 1.0           # seconds before a restart
# restart_burst = 5             # starts allowed within restart_interval; one more is a
# restart_interval = 60.0       # crash loop: left down, an incident and a fleet report
# drain_url = "http://127.0.0.1:18080/api/drain"
# stop_signal = "SIGTERM"       # or SIGINT, SIGHUP, SIGQUIT
# success_exit_status = [143]   # more clean stops, as systemd's SuccessExitStatus
# start_timeout = 20.0
# workdir = "{root}"
# env = { CORE_MODE = "production" }

# [[service]]
# name = "ui"
# command = ["sh", "-c", "exec '{release_dir}/ui/ui' --core http://127.0.0.1:18080"]

# One example of every check type. Every check also takes these fields: required (true),
# timeout (3.0), retries (0), interval (0.5). A `process` check per service is automatic.
# [[check]]
# name = "core-ping"
# type = "http"
# url = "http://127.0.0.1:18080/api/ping"
# status = 200
# bearer_token_file = "data/ui-token"   # relative to the root; redacted from every report
# json_fields = { "status" = "ok" }     # dotted JSON paths and the values they must have
# body_contains = "ok"

# [[check]]
# name = "ui-socket"
# type = "websocket"
# url = "ws://127.0.0.1:18080/api/events"
# bearer_token_file = "data/ui-token"
# send = ["ping"]
# expect = ["pong"]

# [[check]]
# name = "core-port"
# type = "tcp"
# host = "127.0.0.1"
# port = 18080

# [[check]]
# name = "product-dns"
# type = "dns"
# resolver = "127.0.0.1:5353"
# query = "core.product.test"
# rdtype = "A"
# expect = "127.0.0.1"

# [[check]]
# name = "core-version"
# type = "version"
# url = "http://127.0.0.1:18080/api/version"
# format = "json"                       # or "text": the version as a word of the body
# field = "version"                     # json: the dotted path of the version

# [[check]]
# name = "ui-probe"
# type = "command"
# command = ["{release_dir}/ui/ui", "--probe"]

# [[check]]
# name = "core-alive"
# type = "process"
# service = "core"

# ---- The agent (`updater agent`) and fleet reports. ---------------------------------------
# [agent]
# interval = 21600.0            # seconds between cycles (6 h), plus up to `jitter`
# jitter = 600.0
# apply = "auto"                # "auto": install; "download": fetch and verify, then wait for
#                               # `updater upgrade`; "notify": only report
# window = ["02:00-05:00"]      # when installs may happen (local time); empty: any time
# leave_revoked_at_once = true  # leave a yanked release outside the windows and holds
# on_event = ["/usr/local/bin/notify-ops"]  # gets each event as JSON on stdin
# hook_timeout = 10.0
# retry = 30.0                  # first back-off after a failed cycle, doubling to `interval`

# [report]                      # opt-in: outcomes to the fleet collector (`release collector`)
# url = "https://fleet.example.com/"
# token_file = "data/fleet-token"   # this fleet's token; never printed or logged
# queue_max = 200               # reports kept while the collector is unreachable
# timeout = 2.0
# cohort_label = "model-x"      # the vendor's kind of machine: rollouts may hold one kind
"""


def config_text(config: Config) -> str:
    """The commented file for `config` as `updater init` chose it (no product yet)."""
    top = {"channel": config.channel, "keep_releases": config.keep_releases}
    if config.backend != "process":
        top["backend"] = config.backend
    if config.repository is None:
        table = ("# No [repository]: an air-gapped root, updated by `updater sideload BUNDLE`\n"
                 "# (and offline installers). To update it online:\n"
                 "# [repository]\n# url = \"https://updates.example.com/\"\n")
    else:
        repository = config.repository.model_dump(exclude_none=True, exclude_defaults=True)
        repository["url"] = config.repository.url
        table = tomli_w.dumps({"repository": repository})
    return (_HEAD + "\n" + tomli_w.dumps(top) + _TOP_NOTES + "\n"
            + table + _REPOSITORY_NOTES + _TABLES)

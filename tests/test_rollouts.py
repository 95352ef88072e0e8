"""Planned rollouts: the channel's signers approve the steps, the online `rollout-<channel>`
role says which step a release is at (or that it is halted), machines never go past the plan,
and a real collector halts and advances by itself."""

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenlight.channels import (
    ChannelFile,
    HaltRule,
    RolloutPlan,
    RolloutState,
    effective_rollout,
    rollout_bucket,
    rollout_role,
)
from greenlight.release import publish
from greenlight.release.fleet import Guard, Store
from greenlight.release.repository._repository import FileRepository
from greenlight.release.repository._rollouts import current_state, write_state
from greenlight.updater.operations import check, open_repository
from greenlight.updater.product import init_root
from greenlight.updater.store import InstallRoot

from conftest import ADMIN, Collector, builtin_server, machine_id, post_report, wait_state

BIN = Path(sys.executable).parent
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _plan(steps: list[int], soak: float = 0, **halt: float) -> RolloutPlan:
    return RolloutPlan(steps=steps, soak=soak, started_at=T0, halt=HaltRule(**halt))


def _ids(channel: str, version: str, low: int, high: int, n: int = 1) -> list[str]:
    """Installation ids whose bucket for this release lies in [low, high)."""
    found = (f"{i:032x}" for i in range(100_000))
    return [c for c in found if low <= rollout_bucket(c, channel, version) < high][:n]


def _machine(tmp: Path, server, repo: FileRepository, name: str, ident: str) -> InstallRoot:
    root = init_root(tmp / name, server.url,
                              (repo.metadata_dir / "1.root.json").read_bytes(), "stable")
    (root.state / "installation-id").write_text(ident + "\n")
    return root


def _in(root: InstallRoot) -> tuple[bool, int | None, bool]:
    r = check(root, open_repository(root)).rollout
    assert r is not None
    return r.in_rollout, r.percent, r.halted


# --- the combination, as a property ----------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(sorted),
       soak=st.sampled_from([0.0, 1.0, 60.0, 3600.0]),
       claimed=st.integers(0, 10_000), halted=st.booleans(), signed_halt=st.booleans(),
       same_release=st.booleans(), same_channel=st.booleans(),
       elapsed=st.floats(0, 30 * 86400))
def test_the_online_state_never_takes_a_machine_past_the_plan(
        steps, soak, claimed, halted, signed_halt, same_release, same_channel, elapsed):
    cf = ChannelFile.model_validate({
        "channel": "beta", "release": "1.2", "published_at": T0,
        "components": {"core": {"version": "1.2", "target": "artifacts/core/1.2/core.tgz",
                                "sha256": "a" * 64, "length": 1}},
        "rollout": {"percent": steps[0], "halted": signed_halt, "plan": _plan(steps, soak)}})
    state = RolloutState(channel="beta" if same_channel else "stable",
                         release=cf.identity.key if same_release else "1.2@" + "0" * 12,
                         step=claimed, halted=halted, by="collector", at=T0)
    now = T0 + timedelta(seconds=elapsed)
    got = effective_rollout(cf, state, now)
    assert got is not None and got.percent in steps  # always one of the signed steps
    assert got.step is not None and got.step <= claimed
    if soak:
        assert got.step <= elapsed // soak  # never sooner than the soak allows
    if not (same_release and same_channel):
        assert got.step == 0 and got.halted == signed_halt  # a state about another release
    else:
        assert got.halted == (halted or signed_halt)
    assert effective_rollout(cf, None, now).percent == steps[0]  # no word yet: the first step


@pytest.mark.parametrize(("bad", "why"), [
    ([], "at least 1 item"), ([0, 50], "percents from 1 to 100"),
    ([50, 10], "must increase"), ([10, 10], "must increase"),
    ([10, 101], "percents from 1 to 100")])
def test_a_plan_must_increase_within_1_to_100(bad, why):
    with pytest.raises(ValueError, match=why):
        _plan(bad)


# --- a real repository, real clients ------------------------------------------------------

def test_a_planned_rollout_follows_its_signed_state(tmp_path, published, builds):
    publish(published, "stable", "1.2", builds("1.2"), rollout_plan=_plan([10, 50, 100]))
    assert rollout_role("stable") in published.targets_roles()
    low, mid, high = (_ids("stable", "1.2", a, b)[0] for a, b in ((0, 10), (10, 50), (50, 100)))
    store = Store(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    guard = Guard(published.path, None, store)
    with builtin_server(published.path) as server:
        m = {n: _machine(tmp_path, server, published, n, i)
             for n, i in (("low", low), ("mid", mid), ("high", high))}
        assert [_in(m[n])[0] for n in ("low", "mid", "high")] == [True, False, False]
        report = check(m["mid"], open_repository(m["mid"]))
        assert report.rollout.step == 0 and report.rollout.steps == [10, 50, 100]

        # No reports and a soak of 0: each look moves the release one signed step along.
        assert guard.judge("stable") == "advanced stable 1.2 to step 2 of 3 (50%)"
        assert [_in(m[n])[0] for n in ("low", "mid", "high")] == [True, True, False]
        assert guard.judge("stable") == "advanced stable 1.2 to step 3 of 3 (100%)"
        assert [_in(m[n])[0] for n in ("low", "mid", "high")] == [True, True, True]
        assert guard.judge("stable") is None  # the last step: nothing more to do
        state = current_state(published, "stable")
        assert state.step == 2 and state.by == "collector" and not state.halted


def test_a_stolen_rollout_key_can_halt_or_step_but_never_past_the_plan(tmp_path, published,
                                                                        builds):
    # An hour's soak a step: a state that claims the last step now is held to the first.
    cf = publish(published, "stable", "1.2", builds("1.2"),
                 rollout_plan=_plan([10, 50, 100], soak=3600))
    low, mid = _ids("stable", "1.2", 0, 10)[0], _ids("stable", "1.2", 10, 50)[0]
    with builtin_server(published.path) as server:
        lo, mi = (_machine(tmp_path, server, published, n, i)
                  for n, i in (("lo", low), ("mi", mid)))
        forged = RolloutState(channel="stable", release=cf.identity.key, step=2,
                              by="someone with the collector's key",
                              at=datetime.now(UTC))
        with published.all_or_nothing():
            write_state(published, forged)
        assert _in(mi) == (False, 10, False)

        # Signing a channel file with the rollout role moves nothing: that role is trusted
        # for rollouts/stable.json only, and the channel's own role answers first.
        fake = cf.model_copy(update={"release": "6.6.6", "rollout": None})
        info = published.add_target_bytes("channels/stable.json", fake.to_json())
        with published.edit_targets(rollout_role("stable")) as targets:
            targets.targets[info.path] = info
        published.commit()
        seen = check(mi, open_repository(mi))
        # Outside the rollout, a fresh machine is offered the release before it, not 1.2
        # and never the forged 6.6.6.
        assert seen.available == "1.0" and seen.rollout.in_rollout is False
        assert seen.note is not None and "1.2 (" in seen.note

        # A state about another release counts for nothing...
        with published.all_or_nothing():
            write_state(published, forged.model_copy(update={
                "release": "1.2@" + "0" * 12, "halted": True, "reason": "not this one"}))
        assert _in(lo) == (True, 10, False)
        # ...and a halt is all the key can do that machines feel at once.
        with published.all_or_nothing():
            write_state(published, forged.model_copy(update={
                "step": 0, "halted": True, "reason": "stolen key"}))
        assert _in(lo) == (False, 10, True)
        done = subprocess.run([str(BIN / "updater"), "check", "--root", str(lo.path)],
                              capture_output=True, text=True)
        # A fresh machine is offered the release before the halted one, and told why.
        assert done.returncode == 10, done.stdout + done.stderr
        assert "1.0 available (installed: nothing); 1.2 (" in done.stdout
        assert ("staged rollout is HALTED (halted by someone with the collector's key: stolen "
                "key); installing 1.0") in done.stdout


def _report(key: str, outcome: str = "rolled-back", check: str = "ui-session") -> dict:
    """A report about release `key`; post_report signs it as a named made-up machine."""
    return {"schema": "greenlight.report/1",
            "at": datetime.now(UTC).isoformat(), "channel": "stable", "outcome": outcome,
            "release": key.split("@")[0], "release_key": key,
            "failed_checks": [{"name": check, "summary": "HTTP 403: denying api access"}]}


def test_the_collector_halts_a_rollout_and_a_person_resumes_it(tmp_path, published, builds):
    from greenlight.release import current_channel_file

    prior = current_channel_file(published, "stable").identity.key
    db = f"sqlite:///{tmp_path / 'collector.sqlite3'}"
    collector = Collector(tmp_path, db, None, "--repo", str(published.path), "--tick", "0.2")
    try:
        post = lambda name, body: post_report(collector.url, name, body)  # noqa: E731
        bad = [f"{i:032x}" for i in range(1, 4)]
        for ident in [*bad, "f" * 32]:  # machines the collector knew before the rollout
            assert post(ident, _report(prior, "upgraded")).status_code == 202
        cf = publish(published, "stable", "1.2", builds("1.2"),
                     rollout_plan=_plan([10, 50, 100], soak=3600, rollbacks=3))
        key = cf.identity.key
        # Ids invented for the occasion by a holder of the fleet token count for nothing.
        for n in range(100, 106):
            assert post(f"{n:032x}", _report(key)).status_code == 202
        assert Guard(published.path, None, Store(db)).judge("stable") is None
        assert current_state(published, "stable") is None
        assert post(bad[0], _report(key)).status_code == 202
        assert post(bad[0], _report(key)).status_code == 202  # one machine twice: still one
        assert post(bad[1], _report(key)).status_code == 202
        assert post("f" * 32, _report(key, "upgraded")).status_code == 202
        assert current_state(published, "stable") is None  # two machines: not yet
        crossed = time.monotonic()
        assert post(bad[2], _report(key)).status_code == 202
        state = wait_state(published, lambda s: s.halted)
        print(f"halt published {time.monotonic() - crossed:.3f} s after the third rollback")
        assert state.by == "collector" and state.step == 0
        assert state.reason.startswith("3 of 4 machines reporting on 1.2 rolled back")
        assert "ui-session: HTTP 403: denying api access" in state.reason
        assert (state.evidence.failed, state.evidence.total, state.evidence.check) == (
            3, 4, "ui-session")  # and as data
        assert state.evidence.excerpt == "HTTP 403: denying api access"

        with builtin_server(published.path) as server:
            low = _machine(tmp_path, server, published, "low", _ids("stable", "1.2", 0, 10)[0])
            assert _in(low) == (False, 10, True)  # nobody takes it after the halt

            status = subprocess.run(
                [str(BIN / "release"), "rollout", "status", "--collector", collector.url,
                 "--admin-token-file", str(tmp_path / "tokens" / "admin")],
                capture_output=True, text=True)
            assert status.returncode == 0, status.stderr
            # Every report is shown; the halt counted the 4 machines known before the rollout.
            assert "stable 1.2: 10 machines reporting; 1 upgraded, 9 rolled back" in status.stdout
            assert "step 1 of 3 (10%), HALTED by collector: 3 of 4 machines" in status.stdout
            assert "10 x ui-session: HTTP 403: denying api access" in status.stdout

            resumed = subprocess.run(
                [str(BIN / "release"), "rollout", str(published.path), "--channel", "stable",
                 "--resume"], capture_output=True, text=True)
            assert resumed.returncode == 0, resumed.stderr
            state = current_state(FileRepository(published.path), "stable")
            assert not state.halted and "(release rollout --resume)" in state.by
            assert state.counted_since is not None
            assert _in(low) == (True, 10, False)
            # The reports judged before the resume are not counted again.
            guard = Guard(published.path, None, Store(db))
            assert guard.judge("stable") is None
            again = subprocess.run(
                [str(BIN / "release"), "rollout", str(published.path), "--channel", "stable",
                 "--resume"], capture_output=True, text=True)
            assert again.returncode == 1
            assert again.stderr.strip() == ("release: error: the rollout of 1.2 on 'stable' "
                                            "is not halted")
    finally:
        collector.stop()


def test_the_collector_moves_a_release_along_its_steps_once_each_has_soaked(tmp_path,
                                                                            published, builds):
    cf = publish(published, "stable", "1.2", builds("1.2"),
                 rollout_plan=_plan([10, 50, 100], soak=1))
    started = cf.rollout.plan.started_at
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(published.path), "--tick", "0.2")
    try:
        second = wait_state(published, lambda s: s.step == 1)
        last = wait_state(published, lambda s: s.step == 2)
        assert (second.at - started).total_seconds() >= 1
        assert (last.at - second.at).total_seconds() >= 1
        answer = httpx.get(collector.url + "v1/rollouts",
                           headers={"Authorization": f"Bearer {ADMIN}"}).json()
        # no report yet: the planned release is shown from its publish, with no machines
        assert [(r["release"], r["machines"], r["plan"]["step"])
                for r in answer["rollouts"]] == [("1.2", 0, 2)]
    finally:
        collector.stop()
    out = collector.proc.stdout.read()
    assert "advanced stable 1.2 to step 2 of 3 (50%)" in out
    assert "advanced stable 1.2 to step 3 of 3 (100%)" in out
    assert json.loads(current_state(published, "stable").to_json())["schema"] == (
        "greenlight.rollout-state/1")


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_dashboard_renders_in_a_real_headless_chromium(tmp_path, published, builds):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (tests/ensure_packages.sh installs it as root)")
    from greenlight.release import current_channel_file

    prior = current_channel_file(published, "stable").identity.key
    collector = Collector(tmp_path, f"sqlite:///{tmp_path / 'c.sqlite3'}", None,
                          "--repo", str(published.path), "--enrolment", "approved")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    try:
        for i in range(5):  # machines the collector knew, and an admin approved, before
            answer = post_report(collector.url, f"m{i + 1}", _report(prior, "upgraded"))
            assert answer.status_code == 202
        ids = [m["id"] for m in httpx.get(collector.url + "v1/machines?state=pending",
                                          headers=admin).json()["machines"]]
        assert httpx.post(collector.url + "v1/machines/approve", json={"ids": ids},
                          headers=admin).json() == {"changed": 5}
        cf = publish(published, "stable", "1.2", builds("1.2"),
                     rollout_plan=_plan([10, 50, 100], soak=3600, rollbacks=2))
        for i, outcome in enumerate(["upgraded"] * 3 + ["rolled-back"] * 2):
            answer = post_report(collector.url, f"m{i + 1}", _report(cf.identity.key, outcome))
            assert answer.status_code == 202
        wait_state(published, lambda s: s.halted)
        # A newcomer waits for approval; a planned beta has no report yet.
        assert post_report(collector.url, "newcomer", _report(prior)).json()["machine"] == \
            "pending"
        publish(published, "beta", "2.0", builds("2.0"), rollout_plan=_plan([5, 100], soak=60))
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-sync",
                 "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
                 "--virtual-time-budget=10000", "--window-size=1400,1000"]
        url = f"{collector.url}#token={ADMIN}"
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True,
                             text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert ADMIN not in html  # the token left the address bar and the page
        assert '<tr data-release="stable 1.2">' in html, html[-3000:]
        row = html.split('<tr data-release="stable 1.2">')[1].split("</tr>")[0]
        cells = [c.split(">", 1)[1] for c in row.split("</td>")[:7]]
        assert cells == ["stable", "1.2", "5", "3", "2", "0", "0"], cells
        assert "HALTED at 10% by collector: 2 of 5 machines" in row
        assert '<span class="now">10%</span><span>50%</span><span>100%</span>' in row
        assert "ui-session (2): HTTP 403: denying api access" in row
        assert "no cohort: 5 machines, 2 failed" in row
        assert ">Resume</button>" in row and ">Halt</button>" not in row
        planned = html.split('<tr data-release="beta 2.0">')[1].split("</tr>")[0]
        assert "<td>0</td>" in planned and "step 1 of 2 (5%)" in planned
        assert ">Halt</button>" in planned
        assert "1 pending" in html and f'data-machine="{machine_id("newcomer")}"' in html
        assert ">Approve</button>" in html
        assert 'class="chart" data-release="stable 1.2">' in html
        assert "machines per minute (UTC)" in html and 'class="x-label"' in html
        # One stacked bar a minute (the reports may straddle one): their titles add up.
        import re

        chart = html.split('class="chart" data-release="stable 1.2">')[1].split(
            'class="chart"')[0]
        bars = re.findall(r'fill="(#3a3|#c33)"><title>[^<]*: (\d+) (upgraded|failed)</title>',
                          chart)
        assert sum(int(n) for _, n, what in bars if what == "upgraded") == 3, bars
        assert sum(int(n) for _, n, what in bars if what == "failed") == 2, bars

        # The admin's hand: halt and resume, signed with the rollout key; safe from other
        # sites (a Bearer header and JSON only), from other names (DNS rebinding), from frames.
        page = httpx.get(collector.url)
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert httpx.get(collector.url, headers={"Host": "evil.example"}).status_code == 421
        assert httpx.post(collector.url + "v1/rollouts/halt", content="channel=beta",
                          headers={**admin, "Content-Type": "application/x-www-form-urlencoded"}
                          ).status_code == 415
        assert httpx.post(collector.url + "v1/rollouts/halt",
                          json={"channel": "beta", "release": "2.0"}).status_code == 401
        done = httpx.post(collector.url + "v1/rollouts/halt",
                          json={"channel": "beta", "release": "2.0"}, headers=admin)
        assert done.status_code == 200, done.text  # the beta key came after the collector
        state = wait_state(published, lambda s: s.halted, channel="beta")
        assert state.by == "an admin (dashboard)"
        done = httpx.post(collector.url + "v1/rollouts/resume",
                          json={"channel": "beta", "release": "2.0"}, headers=admin)
        assert done.status_code == 200, done.text
        assert not current_state(FileRepository(published.path), "beta").halted
        stale = httpx.post(collector.url + "v1/rollouts/halt",
                           json={"channel": "beta", "release": "1.9"}, headers=admin)
        assert stale.status_code == 409 and "no planned rollout of 1.9" in stale.text

        # Without the token, the page asks for it and shows nothing.
        bare = subprocess.run([browser, *flags, "--dump-dom", collector.url],
                              capture_output=True, text=True, timeout=120)
        assert '<p id="status">admin token needed</p>' in bare.stdout
        assert "<tr data-release" not in bare.stdout

        shots = Path(__file__).parents[1] / "build" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        shot = shots / "collector-dashboard.png"
        taken = subprocess.run([browser, *flags, f"--screenshot={shot}", url],
                               capture_output=True, text=True, timeout=120)
        assert taken.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        collector.stop()


def test_rollout_and_collector_refusals_are_one_line_with_their_exit_code(tmp_path, published,
                                                                          builds):
    """Every new way to get a rollout or the collector wrong: one line naming the mistake, its
    documented exit code, nothing changed."""
    from conftest import free_port

    archives = builds("1.2")
    components = [f"--component={n}={p}" for n, p in archives.items()]
    release = str(BIN / "release")
    before = (published.metadata_dir / "timestamp.json").read_bytes()
    tokens = tmp_path / "t"
    tokens.mkdir()
    (tokens / "a").write_text(ADMIN + "\n")
    cases = [
        ([release, "publish", str(published.path), "--channel", "stable", "--version", "1.2",
          *components, "--rollout-plan", "50,10"],
         "--rollout-plan '50,10': rollout steps must increase", 2),
        ([release, "publish", str(published.path), "--channel", "stable", "--version", "1.2",
          *components, "--rollout-plan", "10,100", "--soak", "soon"],
         "--soak 'soon': expected a duration such as 30s, 10m, 12h, 90d or 8w", 2),
        ([release, "publish", str(published.path), "--channel", "stable", "--version", "1.2",
          *components, "--rollout-plan", "10,100", "--rollout", "5"],
         "give either --rollout or --rollout-plan, not both", 2),
        ([release, "rollout", str(published.path), "--channel", "stable", "--resume"],
         "channel 'stable' has no staged rollout of 1.0 to resume", 1),
        ([release, "rollout", str(published.path), "--channel", "stable"],
         "give one of --percent N (0-100), --halt or --resume", 2),
        ([release, "collector", "--fleet-token-file", str(tokens / "a"), "--admin-token-file",
          str(tokens / "a"), "--repo", str(tmp_path / "nowhere")],
         f"--repo {tmp_path / 'nowhere'}: no repository here", 3),
        ([release, "collector", "--fleet-token-file", str(tokens / "a"), "--admin-token-file",
          str(tokens / "a"), "--repo", str(published.path), "--tick", "0"],
         "--tick 0: expected a number of seconds above 0", 2),
        ([release, "collector", "--fleet-token-file", str(tokens / "a"), "--admin-token-file",
          str(tokens / "a"), "--retention", "1h"],
         "--retention: at least 1d (a rollout's rule counts its reports)", 2),
        ([release, "collector", "--fleet-token-file", str(tokens / "a"), "--admin-token-file",
          str(tokens / "a"), "--enrol-rate", "0"],
         "--enrol-rate 0: expected new keys a minute, at least 1", 2),
        ([release, "machines", "approve", "--collector", f"http://127.0.0.1:{free_port()}/",
          "--admin-token-file", str(tokens / "a"), "0" * 32],
         "cannot reach the collector at http://127.0.0.1:", 8),
        ([release, "rollout", "status", "--collector", f"http://127.0.0.1:{free_port()}/",
          "--admin-token-file", str(tokens / "a")],
         "cannot reach the collector at http://127.0.0.1:", 8),
    ]
    for args, message, code in cases:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        assert message in done.stderr, (message, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("release: error: ") and message in done.stderr, (
            message, done.stderr)
    assert (published.metadata_dir / "timestamp.json").read_bytes() == before
    assert rollout_role("stable") not in published.targets_roles()

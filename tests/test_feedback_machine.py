"""User feedback, the machine's side: `updater feedback` with the evidence this root holds,
its queue and delivery (signed, backed off, refused, exported for an air-gapped machine), and
the product's inbox folder, hostile files and a flood included. Real `updater` processes on
real roots; the collector's side is a small real HTTP server on 127.0.0.1 that checks each
signature as the collector does (`channels.verified_sender`)."""

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from greenlight.channels import KEY_HEADER, SIGNATURE_HEADER, FeedbackReport, verified_sender
from greenlight.release import init_repository, publish
from greenlight.updater.store import InstallRoot, queue_feedback, queued_feedback

from conftest import FLEET, MARKER_PRODUCT, builtin_server, free_port
from examples.demo.config import configure

BIN = Path(sys.executable).parent
UPDATER = str(BIN / "updater")
NO_COLLECTOR = ("queued; no collector is configured ([report] url): export it with "
                "`updater feedback --export FILE`")


def updater(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UPDATER, *args, "--root", str(root)], capture_output=True,
                          text=True, timeout=180)


class Inbox:
    """A small collector on 127.0.0.1: it takes `POST /v1/feedback`, checks the fleet token
    and the machine's signature, keeps what it took and answers `codes` in turn (then 202)."""

    def __init__(self, port: int = 0) -> None:
        self.codes: list[int] = []
        self.took: list[dict] = []
        self.errors: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    assert self.path == "/v1/feedback", self.path
                    assert self.headers.get("Authorization") == f"Bearer {FLEET}"
                    sender, _ = verified_sender(self.headers.get(KEY_HEADER),
                                                self.headers.get(SIGNATURE_HEADER), body)
                    document = json.loads(body)
                    assert document["installation"] == sender and document["sent"]
                except Exception as e:  # the test says what went wrong
                    owner.errors.append(f"{type(e).__name__}: {e}")
                    self._answer(400)
                    return
                code = owner.codes.pop(0) if owner.codes else 202
                if code < 300 or code == 409:
                    owner.took.append(document)
                self._answer(code)

            def _answer(self, code: int) -> None:
                said = json.dumps({"error": f"answered {code}"}).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(said)))
                self.end_headers()
                self.wfile.write(said)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)  # listening now
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def trust(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = init_repository(tmp_path_factory.mktemp("feedback") / "repo")
    return repo.metadata_dir / "1.root.json"


def make_root(tmp: Path, trust: Path, report_url: str | None = None,
              name: str = "root") -> Path:
    path = tmp / name
    done = subprocess.run([UPDATER, "init", "--root", str(path), "--repo",
                           "http://127.0.0.1:9/", "--trust", str(trust)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (path / "data").mkdir()
    (path / "data" / "fleet-token").write_text(FLEET + "\n")
    with (path / "greenlight.toml").open("a") as f:
        f.write(MARKER_PRODUCT + (f'\n[report]\nurl = "{report_url}"\n' if report_url else ""))
    return path


def queued(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in queued_feedback(InstallRoot(root))]


def one_line_each(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


# --- the evidence, after a real rolled-back upgrade of the demo product ---------------------

@pytest.fixture
def rolled_back(tmp_path: Path, builds) -> Iterator[Path]:
    """The demo product on 1.6.10, then 1.6.11 (the seed's 403 "denying api access")
    tried and rolled back; a secret header on one of the machine's checks."""
    repo = init_repository(tmp_path / "repo")
    publish(repo, "stable", "1.6.10", builds("1.6.10"))
    publish(repo, "beta", "1.6.11", builds("1.6.11", "refuse-ui-token"), fallback="stable")
    with builtin_server(repo.path) as server:
        path = tmp_path / "root"
        done = subprocess.run([UPDATER, "init", "--root", str(path), "--repo", server.url,
                               "--trust", str(repo.metadata_dir / "1.root.json")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        port = free_port()
        configure(path, port, free_port(), grace=3.0, soak=0.5)
        with (path / "greenlight.toml").open("a") as f:
            f.write(f'\n[[check]]\nname = "keyed-ping"\ntype = "http"\nrequired = false\n'
                    f'url = "http://127.0.0.1:{port}/api/ping"\n'
                    f'headers = {{ "X-Api-Key" = "header-secret-4711" }}\n')
        try:
            assert updater(path, "upgrade").returncode == 0
            assert updater(path, "channel", "beta").returncode == 0
            broken = updater(path, "upgrade")
            assert broken.returncode == 20, broken.stdout + broken.stderr
            yield path
        finally:
            updater(path, "stop")


@pytest.mark.slow
def test_dry_run_shows_the_evidence_of_a_rollback_and_never_a_secret(rolled_back):
    path = rolled_back
    token = (path / "data" / "ui-token").read_text().strip()
    # A product that logs its own secrets: the tails are redacted like every result.
    with (path / "logs" / "core.log").open("a") as f:
        f.write(f"loaded token {token}\nAuthorization: Bearer {token}\n"
                "upstream X-Api-Key: header-secret-4711\npassword=hunter2-hunter2\n")

    assert updater(path, "health").returncode == 0  # its results are kept as evidence too
    done = updater(path, "feedback", "--dry-run", "the panel says it is denied")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["schema"] == "greenlight.feedback/1" and document["source"] == "cli"
    assert document["installation"] == json.loads(
        updater(path, "identity", "--json").stdout)["id"]
    assert document["release"] == "1.6.10" and document["release_key"].startswith("1.6.10@")
    assert document["channel"] == "stable" and document["cohort"] and document["greenlight"]
    assert document["sent"] is not None  # as it would go out now
    incident = document["incident"]
    assert incident["event"] == "rolled-back" and incident["check"] == "ui-session"
    assert incident["release"].startswith("1.6.11@") and incident["back_to"].startswith("1.6.10@")
    failing = {c["name"]: c for c in document["checks"] if not c["ok"]}
    assert "403" in failing["ui-session"]["evidence"]
    assert "denying api access" in failing["ui-session"]["evidence"]
    assert any(c["name"] == "keyed-ping" and c["ok"] for c in document["checks"])
    assert [e["event"] for e in document["history"]][-1] == "rolled-back"
    assert document["logs_consent"] is False and document["logs"] == []  # no consent: none
    assert token not in done.stdout and "header-secret-4711" not in done.stdout
    assert queued(path) == []  # a dry run queues nothing

    consented = updater(path, "feedback", "--dry-run", "--logs", "and here are my logs")
    assert consented.returncode == 0, consented.stderr
    logs = {log["name"]: log["tail"] for log in json.loads(consented.stdout)["logs"]}
    assert {"core.log", "ui.log"} <= set(logs)
    assert "loaded token [redacted]" in logs["core.log"]
    assert "Authorization: Bearer [redacted]" in logs["core.log"]
    for secret in (token, "header-secret-4711", "hunter2-hunter2"):
        assert secret not in consented.stdout
    assert len(consented.stdout.encode()) < 128 * 1024

    # The demo UI, refused by its core, left the panel's words in its inbox: taken, with the
    # same evidence, and without logs (the file did not ask for them).
    inbox = path / "feedback" / "inbox"
    assert [p for p in inbox.iterdir() if not p.name.startswith(".")], \
        "the demo UI left no feedback while its core refused it"
    collected = updater(path, "feedback", "--collect")
    assert collected.returncode == 0, collected.stderr
    assert NO_COLLECTOR in collected.stdout
    (item,) = queued(path)
    assert item["source"] == "inbox" and item["logs"] == [] and not item["logs_consent"]
    assert item["text"] == "the panel says: denying api access (HTTP 403) after the upgrade"
    assert item["incident"]["check"] == "ui-session"
    assert list(inbox.iterdir()) == []


# --- queue and delivery -----------------------------------------------------------------

def test_feedback_waits_for_a_collector_and_is_sent_signed_when_it_appears(tmp_path, trust):
    port = free_port()
    path = make_root(tmp_path, trust, f"http://127.0.0.1:{port}/")
    (path / "logs").mkdir(exist_ok=True)
    (path / "logs" / "agent.log").write_text("2026-01-01T00:00:00Z an agent line\n")
    first = updater(path, "feedback", "offline", "for", "weeks")  # nobody listens
    assert first.returncode == 0, first.stderr
    assert "queued; the collector did not answer" in first.stdout
    (waiting,) = queued(path)
    assert waiting["text"] == "offline for weeks" and waiting["sent"] is None
    assert waiting["logs"] == []  # no --logs: the agent's log was not read
    mode = stat.S_IMODE(queued_feedback(InstallRoot(path))[0].stat().st_mode)
    assert mode == 0o600
    backoff = path / "state" / "feedback" / ".backoff"
    assert json.loads(backoff.read_text())["delay"] >= 5

    collector = Inbox(port)
    try:
        held = updater(path, "feedback", "--collect")  # inside the back-off: not tried
        assert held.returncode == 0 and collector.took == [] and len(queued(path)) == 1
        backoff.write_text(json.dumps({"delay": 5, "next": 0}))  # the back-off has passed
        sent = updater(path, "feedback", "--logs", "--json", "and now with logs")
        assert sent.returncode == 0, sent.stderr
        result = json.loads(sent.stdout)
        assert result["schema"] == "greenlight.feedback-result/1"
        assert result["sent"] == 2 and result["queued"] == 0 and result["waiting"] is None
        assert collector.errors == []
        assert [d["text"] for d in collector.took] == ["offline for weeks", "and now with logs"]
        assert collector.took[0]["id"] == waiting["id"] and collector.took[0]["sent"]
        assert [log["name"] for log in collector.took[1]["logs"]] == ["agent.log"]
        assert not backoff.exists()
    finally:
        collector.stop()


def test_each_answer_of_the_collector_is_acted_on(tmp_path, trust):
    collector = Inbox()
    path = make_root(tmp_path, trust, collector.url)
    backoff = path / "state" / "feedback" / ".backoff"
    try:
        def send(text: str, *codes: int) -> subprocess.CompletedProcess[str]:
            backoff.unlink(missing_ok=True)
            collector.codes[:] = list(codes)
            return updater(path, "feedback", text)

        busy = send("first", 503)  # kept, and backed off
        assert len(queued(path)) == 1 and backoff.exists()
        assert "the collector did not answer" in busy.stdout
        token = send("second", 401)
        assert len(queued(path)) == 2
        assert "refused the fleet token (HTTP 401" not in token.stdout  # "answered 401"
        assert "refused this machine (HTTP 401: answered 401)" in token.stdout
        old = send("third", 404)
        assert len(queued(path)) == 3 and "takes no feedback (HTTP 404)" in old.stdout
        # already there, taken, refused for good, busy
        had = send("fourth", 409, 202, 422, 503)
        assert "refused a feedback for good (HTTP 422: answered 422); it was dropped" \
            in had.stdout
        assert [d["text"] for d in collector.took] == ["first", "second"]
        assert [d["text"] for d in queued(path)] == ["fourth"]  # 422 dropped the third
        last = send("fifth")
        assert "2 feedback sent to the collector" in last.stdout
        assert queued(path) == [] and collector.errors == []
    finally:
        collector.stop()


def test_without_a_collector_it_stays_queued_and_exports_signed(tmp_path, trust):
    path = make_root(tmp_path, trust)
    done = updater(path, "feedback", "the UI shows nothing")
    assert done.returncode == 0, done.stderr
    assert one_line_each(done.stdout)[-1] == NO_COLLECTOR
    assert updater(path, "feedback", "second thoughts").returncode == 0
    empty = updater(path, "feedback", "  \t ")
    assert empty.returncode == 2 and len(one_line_each(empty.stderr)) == 1
    assert "empty" in empty.stderr and len(queued(path)) == 2
    status = json.loads(updater(path, "status", "--json").stdout)
    assert status["feedback"] == ("2 queued: no collector is configured ([report] url): "
                                  "export it with `updater feedback --export FILE`")
    assert "feedback" in updater(path, "status").stdout

    out = tmp_path / "usb" / "feedback.jsonl"
    out.parent.mkdir()
    exported = updater(path, "feedback", "--export", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "2 feedback exported to" in exported.stdout
    assert json.loads(updater(path, "status", "--json").stdout)["feedback"] is None
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and queued(path) == []
    machine = json.loads(updater(path, "identity", "--json").stdout)["id"]
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    for line in lines:
        item = json.loads(line)
        assert item["schema"] == "greenlight.feedback-export/1"
        sender, _ = verified_sender(item["key"], item["signature"], item["body"].encode())
        body = json.loads(item["body"])
        assert sender == machine == body["installation"] and body["sent"]
    assert [json.loads(json.loads(x)["body"])["text"] for x in lines] == [
        "the UI shows nothing", "second thoughts"]

    again = updater(path, "feedback", "--export", str(out))  # never over an unimported file
    assert again.returncode == 2 and "exists already" in again.stderr
    nothing = updater(path, "feedback", "--export", str(tmp_path / "usb" / "other.jsonl"))
    assert nothing.returncode == 0 and "nothing to export" in nothing.stdout
    assert not (tmp_path / "usb" / "other.jsonl").exists()


def test_the_queue_is_bounded_and_keeps_the_newest(tmp_path, trust):
    path = make_root(tmp_path, trust)
    root = InstallRoot(path)
    dropped = [queue_feedback(root, f"{i:032x}", "cli", b"{}") for i in range(105)]
    assert sum(dropped) == 5 and dropped[-1] == 1
    kept = queued_feedback(root)
    assert len(kept) == 100 and kept[0].name.endswith(f"{5:032x}.json")


# --- the product's inbox ------------------------------------------------------------------

def write(inbox: Path, name: str, data: bytes | dict) -> Path:
    path = inbox / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def test_the_inbox_takes_good_files_and_refuses_hostile_ones_in_one_line_each(tmp_path, trust):
    path = make_root(tmp_path, trust)
    inbox = path / "feedback" / "inbox"
    assert stat.S_IMODE(inbox.stat().st_mode) == 0o700  # made by `updater init`
    (path / "logs").mkdir(exist_ok=True)
    (path / "logs" / "agent.log").write_text("an agent line\n")
    target = tmp_path / "secret.txt"
    target.write_text('{"text": "never read"}')

    write(inbox, "good.json", {"text": "the panel froze", "logs": False})
    write(inbox, "with-logs.json", {"text": "please look at the logs", "logs": True})
    write(inbox, "escapes.json", {"text": "red \x1b[31m alert\r\x07", "logs": False})
    write(inbox, "windows.json", {"text": "C:\\Users\\me\\panel.log", "logs": False})
    (inbox / "link.json").symlink_to(target)
    write(inbox, "big.json", json.dumps({"text": "x" * 70000}).encode())
    write(inbox, "latin1.json", b'{"text": "caf\xe9"}')
    write(inbox, "not-json.json", b"hello")
    write(inbox, "wrong-shape.json", {"words": "hi"})
    write(inbox, "blank.json", {"text": "   "})
    os.chown(write(inbox, "stranger.json", {"text": "from someone else"}), 65534, 65534)
    os.mkfifo(inbox / "pipe.json")
    os.link(write(inbox, "linked.json", {"text": "twice"}), tmp_path / "elsewhere.json")
    (inbox / "\x1b[2Jname.json").symlink_to(target)
    write(inbox, ".being-written.tmp", {"text": "not yet"})

    done = updater(path, "feedback", "--collect")
    assert done.returncode == 0, done.stderr
    refused = [line for line in done.stdout.splitlines() if "refused" in line]
    expected = {"link.json": "a symbolic link", "big.json": "over the 65536",
                "latin1.json": "not valid UTF-8", "not-json.json": "not JSON",
                "wrong-shape.json": 'not {"text"', "blank.json": "its text is empty",
                "stranger.json": "owned by uid 65534", "pipe.json": "not a regular file",
                "linked.json": "2 hard links", "\\x1b[2Jname.json": "a symbolic link"}
    assert len(refused) == len(expected)
    for name, why in expected.items():
        assert any(line.startswith(f"inbox file {name} refused: ") and why in line
                   and line.endswith("; removed") for line in refused), name
    assert "\x1b" not in done.stdout  # a name's control characters are escaped
    assert target.read_text() == '{"text": "never read"}'  # a link is never followed
    assert sorted(p.name for p in inbox.iterdir()) == [".being-written.tmp"]

    taken = {d["text"]: d for d in queued(path)}
    assert set(taken) == {"the panel froze", "please look at the logs",
                          "red \\x1b[31m alert\\r\\x07",  # escaped by the wire format
                          "C:\\Users\\me\\panel.log"}  # a backslash left as it is
    for document in taken.values():  # sanitised once: the collector's validation keeps it
        assert FeedbackReport.model_validate(document).text == document["text"]
    assert all(d["source"] == "inbox" for d in taken.values())
    assert taken["the panel froze"]["logs"] == [] and not taken["the panel froze"]["logs_consent"]
    assert [log["name"] for log in taken["please look at the logs"]["logs"]] == ["agent.log"]


def test_a_flood_is_bounded_and_the_honest_feedback_stays(tmp_path, trust):
    path = make_root(tmp_path, trust)
    inbox = path / "feedback" / "inbox"
    assert updater(path, "feedback", "an honest report, written first").returncode == 0
    for i in range(200):
        write(inbox, f"flood-{i:03}.json", {"text": f"loop {i}", "logs": True})

    first = updater(path, "feedback", "--collect")
    assert first.returncode == 0, first.stderr
    assert len(queued(path)) == 1 + 20  # at most 20 files read in one collection
    assert "180 more inbox files wait for the next collection" in first.stdout
    for _ in range(2):
        assert updater(path, "feedback", "--collect").returncode == 0
    texts = [d["text"] for d in queued(path)]
    assert len(texts) == 1 + 50 and texts[0] == "an honest report, written first"
    assert list(inbox.iterdir()) == []  # the rest removed unread, in one line
    last = updater(path, "feedback", "--collect")
    assert last.returncode == 0 and "refused unread" not in last.stdout

    for i in range(5):  # the day's 50 are taken: more is refused, the queue untouched
        write(inbox, f"late-{i}.json", {"text": "more"})
    late = updater(path, "feedback", "--collect")
    flood_lines = [line for line in late.stdout.splitlines() if "refused unread" in line]
    assert len(flood_lines) == 1 and flood_lines[0].startswith("5 inbox files refused unread")
    assert len(queued(path)) == 51 and queued(path)[0]["text"].startswith("an honest")
    person = updater(path, "feedback", "a person still gets through")
    assert person.returncode == 0 and len(queued(path)) == 52


def test_the_agent_collects_the_inbox_each_cycle_even_when_the_repository_is_down(
        tmp_path, trust):
    path = make_root(tmp_path, trust)
    inbox = path / "feedback" / "inbox"
    write(inbox, "ui.json", {"text": "the panel says: denying api access", "logs": False})
    (inbox / "bad.json").symlink_to("/etc/passwd")
    done = updater(path, "agent", "--once")
    assert done.returncode == 0, done.stderr
    log = (path / "logs" / "agent.log").read_text()
    assert "feedback inbox: inbox file bad.json refused: a symbolic link" in log
    assert "feedback inbox: queued feedback" in log and "denying api access" in log
    assert "feedback: no collector is configured ([report] url)" in log
    assert [d["source"] for d in queued(path)] == ["inbox"] and list(inbox.iterdir()) == []
    assert updater(path, "agent", "--once").returncode == 0
    again = (path / "logs" / "agent.log").read_text()
    assert again.count("no collector is configured") == 1  # said once, not every cycle


def test_no_file_of_the_ui_or_the_product_stops_feedback_or_leaks_through_it(tmp_path, trust):
    """What the hostile review found: an inbox file whose text is not Unicode (a lone
    surrogate, valid JSON) is refused alone and never blocks the person's own feedback; text
    on the command line that was not UTF-8 is kept, escaped; a log planted as a link to a
    file elsewhere is never read, nor is a pipe waited on; and once the queue holds the
    inbox's bound, the inbox's files wait there instead of being removed."""
    path = make_root(tmp_path, trust)
    inbox = path / "feedback" / "inbox"
    write(inbox, "a-poison.json", b'{"text": "\\ud800 poison", "logs": false}')
    write(inbox, "b-honest.json", {"text": "the panel is blank", "logs": False})
    mine = updater(path, "feedback", "my own words")
    assert mine.returncode == 0, mine.stdout + mine.stderr
    texts = sorted(d["text"] for d in queued(path))
    assert texts == ["\\ud800 poison", "my own words", "the panel is blank"], texts
    assert list(inbox.iterdir()) == []

    odd = subprocess.run([UPDATER.encode(), b"feedback", b"\xff\xfe bad bytes", b"--root",
                          str(path).encode()], capture_output=True)
    assert odd.returncode == 0, odd.stderr
    assert any(d["text"].endswith(" bad bytes") for d in queued(path))

    secret = tmp_path / "elsewhere.txt"
    secret.write_text("root:$6$not-for-the-vendor\n")
    logs = path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "agent.log").unlink(missing_ok=True)
    (logs / "agent.log").symlink_to(secret)
    os.mkfifo(logs / "marker.log")
    done = updater(path, "feedback", "--dry-run", "--logs", "with consent")
    assert done.returncode == 0, done.stderr
    assert "not-for-the-vendor" not in done.stdout
    assert json.loads(done.stdout)["logs_consent"] is True

    # The collector is away for weeks: the queue holds the inbox's bound of earlier days.
    earlier = queued(path)[0]
    for i in range(50 - len([d for d in queued(path) if d["source"] == "inbox"])):
        ident = f"{i:032x}"
        queue_feedback(InstallRoot(path), ident, "inbox",
                       json.dumps({**earlier, "id": ident, "source": "inbox"}).encode())
    for i in range(3):
        write(inbox, f"wait-{i}.json", {"text": f"waiting {i}", "logs": False})
    later = updater(path, "feedback", "--collect")
    assert later.returncode == 0, later.stderr
    assert "3 more inbox files wait for the next collection" in later.stdout, later.stdout
    assert sorted(p.name for p in inbox.iterdir()) == [f"wait-{i}.json" for i in range(3)]

"""Demo UI: the client of the core's local API, with the UI's own credentials.

  ui.py --core URL --token-file F --probe
      calls ping, version, the session (with the token) and a WebSocket round trip, as the
      real UI would at start-up; exits 0, or 1 with one line saying which call failed and how.
  ui.py --core URL --token-file F --stats FILE [--feedback-inbox DIR]
      runs as a service: a steady stream of work requests to the core; counts successes and
      failures into FILE (JSON). Beside it, a reader always blocked on the core's event
      channel (a long poll, as the real UI's IPC reader). On SIGTERM it finishes the request
      in flight, then exits. When the core refuses it (HTTP 403, the seed's "denying api
      access"), the panel's user reports it, once a run, through Greenlight's feedback
      inbox (DIR, `<root>/feedback/inbox/`): no shell, no log tails.
"""

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from pathlib import Path

import httpx
from websockets.sync.client import connect

BUILD = json.loads((Path(__file__).with_name("build.json")).read_text())


def probe(core: str, token: str) -> str | None:
    """The UI's start-up calls; None when all pass, else what failed."""
    auth = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=core, timeout=5) as client:
            for path, headers in (("/api/ping", {}), ("/api/version", {}),
                                  ("/api/v1/session", auth)):
                r = client.get(path, headers=headers)
                if r.status_code != 200:
                    return f"{path} answered HTTP {r.status_code}: {r.text.strip()[:120]}"
        ws_url = core.replace("http://", "ws://", 1) + "/ws"
        with connect(ws_url, open_timeout=5, close_timeout=2) as ws:
            ws.send(json.dumps({"auth": token}))
            hello = json.loads(ws.recv(timeout=5))
            ws.send("ping")
            if not hello.get("ok") or ws.recv(timeout=5) != "ping":
                return "/ws round trip failed"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def send_feedback(inbox: Path, text: str, logs: bool = False) -> None:
    """Greenlight's feedback inbox, as docs/updater.md shows it: a file written under a name
    starting with "." (Greenlight leaves those alone), then renamed into place."""
    name = uuid.uuid4().hex
    tmp = inbox / f".{name}.tmp"
    with open(tmp, "x", encoding="utf-8") as f:
        json.dump({"text": text, "logs": logs}, f)
    os.replace(tmp, inbox / f"{name}.json")


def feedback_once(inbox: Path | None, answer: httpx.Response, sent: list[bool]) -> None:
    """The panel's user says what the panel says when the core refuses it: once a run."""
    if inbox is None or sent or answer.status_code != 403:
        return
    sent.append(True)
    try:
        said = str(answer.json().get("error", answer.text))
    except ValueError:
        said = answer.text
    try:
        send_feedback(inbox, f"the panel says: {said.strip()[:200]} (HTTP 403) after the "
                             "upgrade")
        print(f"ui {BUILD['version']}: feedback left in {inbox}", flush=True)
    except OSError as e:
        print(f"ui {BUILD['version']}: no feedback inbox at {inbox}: {e.strerror}", flush=True)


def read_events(core: str, token: str, stopping: threading.Event) -> None:
    """Keep a reader blocked on the core's event channel, polling again as each poll ends;
    after a refusal or an error, again a second later. Not counted: the stream is."""
    timeout = httpx.Timeout(10, read=60)
    with httpx.Client(base_url=core, timeout=timeout,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        while not stopping.is_set():
            try:
                ok = client.get("/api/v1/events").status_code == 200
            except httpx.HTTPError:
                ok = False
            if not ok:
                stopping.wait(1.0)


def run_stream(core: str, token: str, stats_path: Path, work_ms: int,
               inbox: Path | None = None) -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    threading.Thread(target=read_events, args=(core, token, stopping), daemon=True).start()
    stats = {"ok": 0, "failed": 0, "errors": []}
    stats_path.parent.mkdir(parents=True, exist_ok=True)
    told: list[bool] = []

    def save() -> None:
        tmp = stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(stats_path)

    with httpx.Client(base_url=core, timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as client:
        while not stopping.is_set():
            try:
                r = client.get("/api/v1/work", params={"ms": work_ms})
                ok = r.status_code == 200
                error = None if ok else f"HTTP {r.status_code}"
                feedback_once(inbox, r, told)
            except httpx.HTTPError as e:
                ok, error = False, f"{type(e).__name__}: {e}"
            stats["ok" if ok else "failed"] += 1
            if error and len(stats["errors"]) < 20:
                stats["errors"].append(error)
            save()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Demo UI.")
    parser.add_argument("--core", required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--stats", type=Path)
    parser.add_argument("--work-ms", type=int, default=100)
    parser.add_argument("--feedback-inbox", type=Path,
                        help="Greenlight's feedback inbox (<root>/feedback/inbox)")
    args = parser.parse_args()
    if "ui-default-core-port" in BUILD.get("faults", []):  # the core's port, hard-coded
        args.core = "http://127.0.0.1:8080"
    token = args.token_file.read_text().strip()
    if args.probe:
        failure = probe(args.core, token)
        if failure:
            print(f"ui {BUILD['version']} probe failed: {failure}", file=sys.stderr)
            return 1
        print(f"ui {BUILD['version']} probe ok")
        return 0
    if args.stats is None:
        parser.error("--stats is required unless --probe")
    print(f"ui {BUILD['version']} streaming to {args.core}", flush=True)
    return run_stream(args.core, token, args.stats, args.work_ms, args.feedback_inbox)


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: one table from one run, every figure beside its anchor measured in the same run.

    python -m bench.run [--runs 3] [--skip-bsdiff-app]

Sections: download+verify (200 MiB), memory at 20 and 200 MiB, a warm check, deltas on both
pairs against bsdiff4, rollback at 10 MB and 1 GB, the whole-process warm check against a bare
python-tuf script (bench/startup.py), the per-service overhead (bench/overhead.py), and what
an upgrade costs the UI's calls (bench/hitless.py), and a rehearsal's paths side by side
against one at a time (bench/rehearsal.py). The
targets are those of the project's performance issues; each row says whether it is met.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

from bench import (
    agent_idle,
    collector_load,
    deltas,
    download_verify,
    hitless,
    overhead,
    rehearsal,
    rollout_halt,
    sideload,
    startup,
)
from bench.rollback import rollback_seconds

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-bsdiff-app", action="store_true",
                        help="bsdiff4 on the 55 MB pair takes about a minute and 1 GB")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, str, str]] = []

    def row(what: str, ours: str, anchor: str, ratio: str, target: str) -> None:
        rows.append((what, ours, anchor, ratio, target))

    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        m = download_verify.measure(work, 200, 20, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r, size = m["results"], m["size"]
    ours = r["greenlight (stream, hash, store)"]
    def mbps(s):
        return f"{size / s / 1e6:.0f} MB/s"
    tuf, openssl = r["python-tuf download_target (urllib3)"], r["curl | openssl dgst -sha256"]
    row("download+verify 200 MiB", mbps(ours), f"python-tuf download_target {mbps(tuf)}",
        f"{tuf / ours:.2f}x", "≥ 1.5x " + ("met" if tuf / ours >= 1.5 else "MISSED"))
    row("", "", f"curl | openssl dgst -sha256 {mbps(openssl)}", f"{openssl / ours:.2f}x",
        "≥ 0.9x " + ("met" if openssl / ours >= 0.9 else "MISSED"))
    row("", "", f"curl > file {mbps(r['curl > file'])}", f"{r['curl > file'] / ours:.2f}x", "-")
    row("peak RSS, download+verify", f"{m['rss_small']:.0f} / {m['rss_big']:.0f} MiB",
        "at 20 / 200 MiB", f"{m['rss_big'] / m['rss_small']:.2f}x",
        # flat: what grows is only the hashing queue filling up (8 batches of 1 MiB, one
        # batch being built, one 1 MiB socket read), a bound no artifact size changes
        "flat (≤ +12 MiB) " + ("met" if m["rss_big"] <= m["rss_small"] + 12 else "MISSED"))
    w = m["warm"]
    row("warm check, nothing new", f"{len(w['paths'])} requests, {w['connections']} conn.",
        "TUF minimum: 2 requests", "-",
        "2 on 1 " + ("met" if (len(w["paths"]), w["connections"]) == (2, 1) else "MISSED"))
    row("", f"{w['seconds'] * 1000:.1f} ms",
        f"python-tuf refresh() {w['bare_seconds'] * 1000:.1f} ms",
        f"{w['seconds'] / w['bare_seconds']:.2f}x",
        "≤ 1x " + ("met" if w["seconds"] <= w["bare_seconds"] else "MISSED"))

    # before the deltas: bsdiff4 on the 55 MB pair leaves the page cache full of its memory
    sl = sideload.measure(200, args.runs)
    for pair in ("app", "crypto"):
        g = deltas.measure(pair, "greenlight")
        b = None if (pair == "app" and args.skip_bsdiff_app) else deltas.measure(pair, "bsdiff4")
        label = {"app": "delta: 55 MB app, few files", "crypto": "delta: cryptography 50.0.1→.2"}
        anchor = (f"bsdiff4 {b['size']:,} B" if b else "bsdiff4 skipped")
        row(label[pair], f"{g['size']:,} B ({g['method'].split('(')[1][:-1]})",
            anchor, f"{g['size'] / b['size']:.2f}x" if b else "-",
            ("≤ 1x " + ("met" if g["size"] <= b["size"] else "MISSED")) if b else "-")
        row("  build time", f"{g['build_s']:.2f} s",
            f"bsdiff4 {b['build_s']:.2f} s" if b else "-",
            f"{b['build_s'] / g['build_s']:.1f}x faster" if b else "-",
            ("≥ 10x " + ("met" if b["build_s"] / g["build_s"] >= 10 else "MISSED")) if b else "-")
        row("  build peak memory (with inputs)", f"{g['build_peak_mb']:.0f} MB",
            f"bsdiff4 {b['build_peak_mb']:.0f} MB" if b else "-", "-",
            "< 300 MB " + ("met" if g["build_peak_mb"] < 300 else "MISSED"))
        row("  apply time", f"{g['apply_s']:.3f} s",
            f"bsdiff4 {b['apply_s']:.3f} s" if b else "-", "-",
            ("< 0.5 s " + ("met" if g["apply_s"] < 0.5 else "MISSED")) if pair == "app" else "-")

    row("sideload 200 MiB bundle", f"{sl['sideload']:.2f} s",
        f"openssl dgst -sha256 {sl['openssl']:.2f} s", f"{sl['sideload'] / sl['openssl']:.2f}x",
        "≤ 1.3x " + ("met" if sl["sideload"] <= 1.3 * sl["openssl"] else "MISSED"))

    small, big = rollback_seconds(10 * MiB, args.runs), rollback_seconds(1024 * MiB, args.runs)
    row("rollback (no restart)", f"{small * 1000:.1f} ms at 10 MB", f"{big * 1000:.1f} ms at 1 GB",
        f"{big / small:.2f}x", "same " + ("met" if big / small < 1.5 else "MISSED"))

    environments = (("test env.", startup.BIN), ("production-like", startup.production_bin()))
    for where, env_bin in environments:
        work = Path(tempfile.mkdtemp(prefix="greenlight-bench-startup-"))
        try:
            s = startup.measure(work, max(11, args.runs * 4), env_bin)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row(f"warm `updater check`, whole process ({where})", f"{s['check'] * 1000:.0f} ms",
            f"bare python-tuf script {s['bare'] * 1000:.0f} ms",
            f"{s['check'] / s['bare']:.2f}x",
            "≤ 1.3x " + ("met" if s["check"] <= 1.3 * s["bare"] else "MISSED"))
        row(f"`updater --help` ({where})", f"{s['help'] * 1000:.0f} ms",
            f"`python -c pass` {s['python'] * 1000:.0f} ms", f"{s['help'] / s['python']:.2f}x",
            "-")
    o = overhead.measure()
    row("per-service overhead (launcher RSS)", f"{o['launcher_rss']:.1f} MiB",
        f"`python -I -S` idle {o['bare_isolated']:.1f} MiB",
        f"{o['launcher_rss'] / o['bare_isolated']:.2f}x",
        "≤ 15 MB " + ("met" if o["launcher_rss"] * 1.048576 <= 15 else "MISSED"))

    a = agent_idle.measure()
    row(f"agent asleep between cycles ({a['seconds']:.0f} s)",
        f"{a['rss']:.1f} MiB, CPU {a['cpu'] * 1000:.0f} ms",
        f"bare python sleeping {a['bare_rss']:.1f} MiB", f"{a['rss'] / a['bare_rss']:.2f}x",
        "≤ 40 MB, no CPU " + ("met" if a["rss"] * 1.048576 <= 40 and a["cpu"] == 0
                              else "MISSED"))

    for db, label in ((None, "SQLite"), ("postgres", "PostgreSQL")):
        if db == "postgres":
            from bench.postgres import Unavailable, temporary_postgres

            try:
                with temporary_postgres(collector_load._port()) as url:
                    c = collector_load.measure(10_000, 16, url)
            except Unavailable as e:
                row("collector, PostgreSQL", "not measured", str(e)[:40], "-", "-")
                continue
        else:
            c = collector_load.measure(10_000, 16, None)
        ours, bare = c["collector"], c["bare starlette"]
        target = ("≥ 1000/s, p99 ≤ 50 ms " + ("met" if ours["rate"] >= 1000 and ours["p99"] <= 50
                                              else "MISSED")) if db is None else "-"
        row(f"collector, 10,000 reports ({label})",
            f"{ours['rate']:.0f}/s, p99 {ours['p99']:.0f} ms",
            f"bare Starlette {bare['rate']:.0f}/s, p99 {bare['p99']:.0f} ms",
            f"{ours['rate'] / bare['rate']:.2f}x", target)
    h = rollout_halt.measure()
    row("rollout halt, published after the rule", f"{h['median'] * 1000:.0f} ms "
        f"(worst {h['max'] * 1000:.0f})", f"`release rollout --halt` {h['by_hand'] * 1000:.0f} ms",
        f"{h['median'] / h['by_hand']:.2f}x", "≤ 1 s " + ("met" if h["max"] <= 1 else "MISSED"))

    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    try:
        u = hitless.measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _, met = hitless.report(u)
    for step in hitless.STEPS:
        held, today = u["held"][step], u["today"][step]  # type: ignore[index]
        row(f"UI calls through a {step} {'upgrade' if step != 'rollback' else ''}".rstrip(),
            f"{held.count('refused')} refused, {held.count('failed')} failed, p99 "
            f"{held.percentile(99) * 1000:.0f} ms",
            f"stop-start {today.count('refused')} refused, {today.count('failed')} failed",
            "-", ("0 refused, 0 failed; added p99 ≤ start-up " + ("met" if met else "MISSED"))
            if step != "rollback" else "-")

    rh = rehearsal.measure()
    ratio = rh["sequential"] / rh["parallel"]
    row(f"rehearsal, {rh['paths']:.0f} paths (--jobs {rh['jobs']:.0f})",
        f"{rh['parallel']:.1f} s", f"one path at a time {rh['sequential']:.1f} s",
        f"{ratio:.2f}x", "≥ 1.6x " + ("met" if ratio >= 1.6 else "MISSED"))

    widths = [max(len(r[i]) for r in [("what", "greenlight", "anchor (same run)", "ratio",
                                       "target"), *rows]) for i in range(5)]
    header = ("what", "greenlight", "anchor (same run)", "ratio", "target")
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()

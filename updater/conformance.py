"""`greenlight-conformance-client`: the client protocol of the tuf-conformance suite.

    greenlight-conformance-client --metadata-dir D init TRUSTED_ROOT
    greenlight-conformance-client --metadata-dir D --metadata-url U refresh
    greenlight-conformance-client --metadata-dir D --metadata-url U --target-name P
        [--target-name P2 ...] --target-base-url T --target-dir TD download

It runs what ships: `TrustedRepository` over `HttpxFetcher`, with metadata kept by ngclient
under unversioned names. Targets are downloaded in order with one updater and stop at the first
failure; each is stored as TD/<url-quoted target path> and not fetched again when it matches.
Exit 0 on success, 1 on any failure (with one line on stderr).
"""

import argparse
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

from greenlight.updater._errors import GreenlightError
from greenlight.updater.trust import TrustedRepository

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="greenlight-conformance-client")
    parser.add_argument("--metadata-dir", type=Path, required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("command", choices=["init", "refresh", "download"])
    parser.add_argument("trusted_root", nargs="?", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            if args.trusted_root is None:
                parser.error("init needs TRUSTED_ROOT")
            args.metadata_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.trusted_root, args.metadata_dir / "root.json")
            return 0
        if not args.metadata_url:
            parser.error(f"{args.command} needs --metadata-url")
        repo = TrustedRepository(
            args.metadata_dir, args.metadata_url, args.target_base_url or args.metadata_url
        )
        repo.refresh()
        if args.command == "download":
            if not (args.target_name and args.target_base_url and args.target_dir):
                parser.error("download needs --target-name, --target-base-url and --target-dir")
            args.target_dir.mkdir(parents=True, exist_ok=True)
            for name in args.target_name:
                info = repo.target_info(name)
                if info is None:
                    raise GreenlightError(f"target {name}: not found in signed metadata")
                repo.download_to(info, args.target_dir / quote(name, safe=""))
        return 0
    except (GreenlightError, OSError) as e:
        print(f"greenlight-conformance-client: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""tally's UI probe: what the UI does first, list the items with its key. Exit 0 when it can."""

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--core", required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    args = parser.parse_args()
    key = args.key_file.read_text().strip()
    request = urllib.request.Request(f"{args.core}/api/items",
                                     headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            answer.read()
    except urllib.error.HTTPError as e:
        print(f"the core refused the UI: HTTP {e.code} {e.read().decode().strip()}",
              file=sys.stderr)
        return 1
    except OSError as e:
        print(f"the core is unreachable: {e}", file=sys.stderr)
        return 1
    print("items listed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

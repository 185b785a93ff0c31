"""`python -m imgclass_client` (or the `imgclass` console script): upload a folder, or classify a few files.

Exit status: 0 when every image ended `done`; 1 when any was rejected, failed or timed out (the CSV says
which and why); 2 for usage errors or when the service cannot be used at all (bad key, unreachable).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from imgclass_client.client import (
    IMAGE_EXTENSIONS,
    ApiClient,
    ClientError,
    FileResult,
    classify_files,
    image_files,
    upload_folder,
    write_csv,
)

DEFAULT_API = "http://127.0.0.1:7071/api"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m imgclass_client", description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api", default=os.environ.get("IMGCLASS_API", DEFAULT_API),
                        help=f"base URL of the API, with /api (default $IMGCLASS_API or {DEFAULT_API})")
    common.add_argument("--key", default=os.environ.get("IMGCLASS_API_KEY"),
                        help="API key from POST /api/keys, exchanged for a token (default $IMGCLASS_API_KEY)")
    common.add_argument("--token", default=os.environ.get("IMGCLASS_TOKEN"),
                        help="a bearer token to use as is (default $IMGCLASS_TOKEN)")
    common.add_argument("--out", type=Path, default=Path("results.csv"), help="CSV to write (default results.csv)")
    common.add_argument("--concurrency", type=int, default=4, help="parallel requests (default 4)")
    bars = common.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="always show progress bars (default: only when stderr is a terminal)")
    bars.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    commands = parser.add_subparsers(dest="command", required=True)
    upload = commands.add_parser("upload", parents=[common], help="upload every image under a folder")
    upload.add_argument("folder", type=Path)
    upload.add_argument("--timeout", type=float, default=300.0,
                        help="give up when no result has become final for this many seconds (default 300)")
    upload.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls (default 1)")
    classify = commands.add_parser("classify", parents=[common], help="classify a few files in HTTP requests")
    classify.add_argument("files", type=Path, nargs="+")
    classify.add_argument("--batch-size", type=int, default=4, help="images per request (default 4)")
    classify.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def summary(results: list[FileResult]) -> str:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "no images"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress: bool | None = args.progress
    try:
        if args.command == "upload":
            files = image_files(args.folder)
            if not files:
                raise ClientError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {args.folder}")
        else:
            files = list(args.files)
        with ApiClient(args.api, api_key=args.key, token=args.token, max_connections=2 * args.concurrency) as client:
            if args.command == "upload":
                results = upload_folder(client, files, concurrency=args.concurrency, timeout=args.timeout,
                                        poll_interval=args.poll_interval, progress=progress)
            else:
                results = classify_files(client, files, batch_size=args.batch_size, top_k=args.top_k,
                                         concurrency=args.concurrency, progress=progress)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_csv(args.out, results)
    print(f"{summary(results)}; wrote {args.out}", file=sys.stderr)
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())

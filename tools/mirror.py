"""Serve a local folder over HTTP as a COCO mirror, for --base-url (GET/HEAD with byte ranges).

    coco-unified mirror DIR [--layout coco|plain] [--host 127.0.0.1] [--port 8000]

The loopback server of the tests and benchmarks (tools/fakes/http_mirror.py): with --layout coco
it answers the official URL paths (/zips/train2017.zip, /zips/val2017.zip,
/annotations/annotations_trainval2017.zip) from the three zips lying flat in DIR, as
images.cocodataset.org would; so `--base-url http://127.0.0.1:PORT` reads a local copy through
the same code as the official host. It runs until Ctrl-C; --verbose logs every request.
Clients that honour HTTP_PROXY need NO_PROXY=127.0.0.1,localhost to reach it.
"""

import argparse
import os
import sys

if not __package__:  # run by path: `python tools/mirror.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli
from tools.fakes.http_mirror import LAYOUTS, serve_until_interrupted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "root",
        metavar="DIR",
        help="folder to serve; for --layout coco it holds train2017.zip, val2017.zip and "
        "annotations_trainval2017.zip side by side",
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=LAYOUTS[0],
        help="coco: answer only the official paths from the flat zips in DIR, and 404 to any other; "
        "plain: serve every file under DIR at its relative path (default: %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="TCP port to listen on; 0 picks a free one, shown in the log (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> None:
    serve_until_interrupted(args.root, args.layout, args.host, args.port)


if __name__ == "__main__":
    cli.main_for(__file__)

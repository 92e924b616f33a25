"""The `coco-unified` command: one subcommand per command module of `tools/`.

A command module is argument parsing only. It has a docstring (its `--help` text) and two
functions, `add_arguments(parser)` and `run(args) -> int | None`; `run` turns the parsed flags into
the typed options of a library in `tools/lib/` and calls it. It ends with

    if __name__ == "__main__":
        cli.main_for(__file__)

so that `python -m tools.NAME` (and `python tools/NAME.py`) behaves exactly like `coco-unified NAME`.
Run by path, a command module first puts the checkout on `sys.path`, right after its standard
library imports:

    if not __package__:  # run by path: `python tools/NAME.py`
        sys.path[0] = os.path.dirname(sys.path[0])

Every entry point shares the same conventions, kept here once: one logging format (`--verbose`
adds debug messages and tracebacks), and a user's mistake (a `CocoError`, a missing file) ends with
one line naming the problem and the fix in this command's flag names, exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

PROG = "coco-unified"

# Subcommand -> the module under tools/ that implements it, in the order `--help` lists them.
COMMANDS = {
    "sample": "tools.sample",
    "doc2vec": "tools.doc2vec",
    "evaluate": "tools.evaluate",
    "protocol": "tools.protocol",
    "export": "tools.export",
    "push": "tools.push",
    "convert-jhlau": "tools.convert_jhlau",
    "mirror": "tools.mirror",
    "bow": "tools.bow",
    "dataset-infos": "tools.dataset_infos",
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"

# The loader's errors name its keyword arguments; on the command line the same fix is a flag.
_KWARG_FLAGS = {
    "doc2vec=False": "--no-doc2vec",
    "data_dir": "--data-dir",
    "base_url": "--base-url",
    "doc2vec_path": "--doc2vec-path",
    "cache_dir": "--cache-dir",
    "num_query": "--num-query",
    "num_train": "--train-sizes",
    "protocol_seed": "--seed",
}
_KWARG_PATTERN = re.compile("|".join(rf"\b{re.escape(kwarg)}(?![\w=])" for kwarg in _KWARG_FLAGS))


def in_flag_words(message: str) -> str:
    """A loader message with its keyword arguments named as this CLI's flags."""
    return _KWARG_PATTERN.sub(lambda match: _KWARG_FLAGS[match.group(0)], message)


def configure_logging(verbose: bool) -> None:
    """One format for the tools, `datasets` and the loader alike."""
    import datasets

    datasets.logging.disable_default_handler()
    datasets.logging.enable_propagation()
    datasets.logging.set_verbosity(logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)
    if not verbose:
        # These log every request, epoch and lifecycle event at INFO; the progress bars say enough.
        for chatty in ("gensim", "httpx", "urllib3", "fsspec", "huggingface_hub"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages, and show the traceback of an error"
    )


def _command_parser(module, prog: str, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog)
    parser.description = module.__doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    module.add_arguments(parser)
    _add_common_flags(parser)
    parser.set_defaults(command_module=module, command_prog=prog)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MS COCO 2017 train+val as one pool for cross-modal retrieval and hashing: "
        "make a sample, text features, exports, protocols and evaluations.",
        epilog=f"Run `{PROG} COMMAND --help` for the flags of a command.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0]
        _command_parser(module, f"{PROG} {name}", commands.add_parser(name, help=summary))
    return parser


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.verbose)
    from coco_unified import CocoError

    try:
        return args.command_module.run(args) or 0
    except (CocoError, OSError) as error:
        if args.verbose:
            traceback.print_exc()
        message = str(error) if isinstance(error, CocoError) else f"{type(error).__name__}: {error}"
        print(f"{args.command_prog}: error: {in_flag_words(message)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.command_prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """`coco-unified COMMAND ...`."""
    return _run(build_parser().parse_args(argv))


def main_for(module_file: str, argv: Sequence[str] | None = None) -> None:
    """`python -m tools.NAME ...`: the same command, with its module path as the program name."""
    module_name = f"tools.{Path(module_file).stem}"
    module = importlib.import_module(module_name)
    parser = _command_parser(module, f"python -m {module_name}")
    sys.exit(_run(parser.parse_args(argv)))

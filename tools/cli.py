"""The `coco-unified` command: one subcommand per command module of `tools/`.

A command module is argument parsing only. It has a docstring (its `--help` text; the first line
is its summary in `coco-unified --help`) and two functions, `add_arguments(parser)` and
`run(args) -> int | None`; `run` turns the parsed flags into the typed options of a library in
`tools/lib/` and calls it. It ends with

    if __name__ == "__main__":
        cli.main_for(__file__)

so that `python -m tools.NAME` (and `python tools/NAME.py`) behaves exactly like `coco-unified NAME`.
Run by path, a command module first puts the checkout on `sys.path`, right after its standard
library imports (from `__file__`, not `sys.path[0]`: a worker process started by
multiprocessing runs this line again with the checkout already there):

    if not __package__:  # run by path: `python tools/NAME.py`
        sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Every entry point shares the same conventions, kept here once: one logging format (`--verbose`
adds debug messages and tracebacks), and a user's mistake (a `CocoError`, a missing file) ends with
one line naming the problem and the fix in this command's flag names, exit status 1. Libraries
name their keyword arguments in their messages (`num_query=50`, `data_dir`); `in_flag_words`
turns each into the command's flag (`--num-query 50`, `--data-dir`): a flag's destination is its
keyword, and a module may add `KWARG_FLAGS` for keywords spelt otherwise on its command line.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import importlib.util
import logging
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
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
    "image-features": "tools.image_features",
    "dataset-infos": "tools.dataset_infos",
}

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"

# A keyword's value in a message is a [list] or ends at a space, a comma, a semicolon, a question
# mark, a bracket or a backtick.
_VALUE = r"\[[^\]]*\]|[^\s,;?)\]`]*"


def in_flag_words(message: str, flags: Mapping[str, str]) -> str:
    """`message` with the keyword arguments it names written as the flags of `flags`.

    `flags` maps a keyword (`data_dir`) or a keyword with its value (`doc2vec=False`) to a flag
    (`--data-dir`, `--no-doc2vec`). `name=value` becomes `--flag value` (`name=[1, 2]` becomes
    `--flag 1 2`), or `--flag=value` unchanged when the flag ends with `=`, as
    `--config-kwarg num_query=` does; a bare name is translated only when it has an underscore,
    so that plain words (`model`, `seed`) and paths stay as they are.
    """
    names = tuple(sorted({key.split("=", 1)[0] for key in flags}, key=len, reverse=True))
    if not names:
        return message

    def flag_for(match: re.Match) -> str:
        name, value = match.group("name"), match.group("value")
        if value is not None and f"{name}={value}" in flags:
            return flags[f"{name}={value}"]
        flag = flags.get(name)
        if flag is None or (value is None and "_" not in name):
            return match.group(0)
        if not value:
            return flag.rstrip("=")
        if flag.endswith("="):
            return f"{flag}{value}"
        if value.startswith("["):
            value = " ".join(item.strip().strip("'\"") for item in value[1:-1].split(","))
        return f"{flag} {value}"

    return _keyword_pattern(names).sub(flag_for, message)


@functools.lru_cache(maxsize=8)
def _keyword_pattern(names: tuple[str, ...]) -> re.Pattern:
    """`name` or `name=value` for any of `names`, not inside a path or a longer word (every log line uses it)."""
    return re.compile(rf"(?<![\w/.\-])(?P<name>{'|'.join(map(re.escape, names))})(?:=(?P<value>{_VALUE}))?(?![\w/])")


def flags_of(parser: argparse.ArgumentParser, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Keyword -> flag for `parser`'s options (`--no-X` also answers `X=False`), then `extra`."""
    flags = {}
    # argparse has no public list of a parser's actions; `_actions` is what its own help reads.
    for action in parser._actions:
        long_options = [option for option in action.option_strings if option.startswith("--")]
        if not long_options or action.dest == argparse.SUPPRESS:
            continue
        flag = long_options[0]
        flags[action.dest] = flag
        if action.nargs == 0 and action.const is True:  # a store_true flag
            negated = action.dest.removeprefix("no_")
            flags[f"{negated}=False" if negated != action.dest else f"{action.dest}=True"] = flag
    flags.update(extra or {})
    return flags


class _FlagWordsFormatter(logging.Formatter):
    """The one log format, with the keyword arguments that messages name written as flags."""

    def __init__(self, flags: Mapping[str, str]):
        super().__init__(LOG_FORMAT, LOG_DATE_FORMAT)
        self.flags = flags

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = in_flag_words(record.message, self.flags)
        return super().formatMessage(record)


def configure_logging(verbose: bool, flags: Mapping[str, str] | None = None) -> None:
    """One format for the tools, `datasets`, the loader and Python's warnings alike.

    `flags`: the command's keyword -> flag table, to name flags where messages name keywords.
    """
    import datasets

    import coco_unified

    # datasets gives its logger a handler of its own (bare messages) on import: with propagation
    # every message would show twice. It has no function to remove it, so it is removed here.
    datasets_logger = logging.getLogger("datasets")
    for handler in list(datasets_logger.handlers):
        datasets_logger.removeHandler(handler)
    datasets.logging.enable_propagation()
    # datasets' own INFO messages (configuration hashes, where infos are read from) are noise to
    # a user; the loader's, under datasets' logger, are not.
    datasets.logging.set_verbosity(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger(coco_unified.logger.name).setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(_FlagWordsFormatter(flags or {}))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.captureWarnings(True)
    if not verbose:
        # These log every request, epoch and lifecycle event at INFO; the progress bars say enough.
        for chatty in ("gensim", "httpx", "urllib3", "fsspec", "huggingface_hub"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


def command_summary(module_name: str) -> str:
    """The first line of a command module's docstring, read without importing the module.

    So `coco-unified --help` is instant: importing every command would import gensim, datasets
    and scipy first.
    """
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return f"(not installed: {module_name.replace('.', '/')}.py is missing)"
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


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
    parser.set_defaults(
        command_module=module, command_prog=prog, command_flags=flags_of(parser, getattr(module, "KWARG_FLAGS", None))
    )
    return parser


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `coco-unified` parser; only `command`'s module is imported, to parse its flags."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="MS COCO 2017 train+val as one pool for cross-modal retrieval and hashing: "
        "make a sample, text features, exports, protocols and evaluations.",
        epilog=f"Run `{PROG} COMMAND --help` for the flags of a command.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        subparser = commands.add_parser(name, help=command_summary(module_name))
        if name == command:
            _command_parser(importlib.import_module(module_name), f"{PROG} {name}", subparser)
    return parser


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _run(args: argparse.Namespace) -> int:
    configure_logging(args.verbose, args.command_flags)
    from coco_unified import CocoError

    try:
        return args.command_module.run(args) or 0
    except (CocoError, OSError) as error:
        if args.verbose:
            traceback.print_exc()
        message = str(error) if isinstance(error, CocoError) else f"{type(error).__name__}: {error}"
        print(f"{args.command_prog}: error: {_one_line(in_flag_words(message, args.command_flags))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.command_prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """`coco-unified COMMAND ...`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((word for word in argv if not word.startswith("-")), None)
    return _run(build_parser(command).parse_args(argv))


def main_for(module_file: str, argv: Sequence[str] | None = None) -> None:
    """`python -m tools.NAME ...` or `python tools/NAME.py ...`: the same command under its own name."""
    module_name = f"tools.{Path(module_file).stem}"
    # Imported under its package name (the running copy is `__main__`), so that its logger is named for it.
    module = importlib.import_module(module_name)
    run_as_module = getattr(sys.modules["__main__"], "__spec__", None) is not None
    prog = f"python -m {module_name}" if run_as_module else f"python {sys.argv[0]}"
    sys.exit(_run(_command_parser(module, prog).parse_args(argv)))

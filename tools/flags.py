"""The flags several commands share, each defined here once, and the argparse types of their values.

A flag's destination is the keyword argument of the library it feeds (`--data-dir` -> `data_dir`),
so that `cli.in_flag_words` can name the flag when the library's message names the keyword.
"""

import argparse

from coco_unified import DEFAULT_NUM_QUERY, DEFAULT_NUM_TRAIN, DEFAULT_TRAIN_SIZES, PROTOCOLS
from tools.lib.doc2vec_inference import default_workers
from tools.lib.pool import DEFAULT_SIDECAR

# ----------------------------------------------------------------------------- value types


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count: it must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be above 0")
    return value


def feature_sidecar(text: str) -> tuple[str, str]:
    """COLUMN=PATH: a column of a sidecar written by `coco-unified image-features`, and the sidecar."""
    column, equals, path = text.partition("=")
    if not equals or not column or not path:
        raise argparse.ArgumentTypeError(f"{text!r} is not COLUMN=PATH, e.g. vgg19_fc7=vgg19.parquet")
    return column, path


class _FeatureSidecars(argparse.Action):
    """Collects repeated --feature COLUMN=PATH into {column: path}; a column given twice is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        column, path = values
        sidecars = dict(getattr(namespace, self.dest) or {})
        if column in sidecars:
            parser.error(f"argument {option_string}: column {column!r} given twice ({sidecars[column]} and {path})")
        sidecars[column] = path
        setattr(namespace, self.dest, sidecars)


# ----------------------------------------------------------------------------- shared flags


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-dir / --base-url: the loader's data_dir / base_url."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        help="a local COCO 2017 copy: the official zips, or the folders extracted from them, side by side "
        "(only the parts this command needs are read)",
    )
    source.add_argument(
        "--base-url",
        metavar="URL",
        help="a mirror with the official layout ({URL}/annotations/annotations_trainval2017.zip). "
        "Without --data-dir and --base-url the official host is used",
    )


def add_sidecar_arguments(parser: argparse.ArgumentParser) -> None:
    """--doc2vec-path / --no-doc2vec: the loader's doc2vec_path / doc2vec=False."""
    sidecar = parser.add_mutually_exclusive_group()
    sidecar.add_argument(
        "--doc2vec-path",
        default=DEFAULT_SIDECAR,
        metavar="PATH",
        help="the Doc2Vec sidecar written by `coco-unified doc2vec` (default: %(default)s, where the loader looks)",
    )
    sidecar.add_argument(
        "--no-doc2vec",
        action="store_true",
        help="leave out the doc2vec column: no sidecar is read (nor needed)",
    )


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """--feature COLUMN=PATH (repeatable): the loader's feature_sidecars={COLUMN: PATH}."""
    parser.add_argument(
        "--feature",
        dest="feature_sidecars",
        type=feature_sidecar,
        action=_FeatureSidecars,
        default={},
        metavar="COLUMN=PATH",
        help="join column COLUMN of the feature sidecar PATH (written by `coco-unified image-features`), "
        "e.g. vgg19_fc7=vgg19.parquet; repeat for more columns",
    )


def add_workers_argument(parser, used_for: str) -> None:
    """--workers: how many processes (or threads) `used_for` runs in; `parser` may be an argument group."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        help=f"{used_for} (default: all cores, here %(default)s)",
    )


def add_cache_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir", metavar="DIR", help="the datasets cache the pool is prepared in (default: datasets' own)"
    )


def add_protocol_arguments(parser: argparse.ArgumentParser, choose: bool = False) -> None:
    """--seed / --num-query / --train-sizes: the seeded query / database / training split.

    With `choose`, also --protocol NAME (one of coco_unified.PROTOCOLS), and a value left out is
    that protocol's own (DSPH's seed is 1814; Karpathy's splits have no seed nor sizes).
    """
    seeds, sizes = "%(default)s", f"{list(DEFAULT_TRAIN_SIZES)}"
    if choose:
        parser.add_argument(
            "--protocol",
            choices=list(PROTOCOLS),
            default="hashing",
            help="; ".join(f"{name}: {protocol.summary}" for name, protocol in PROTOCOLS.items())
            + " (default: %(default)s)",
        )
        seeds = ", ".join(f"{name} {p.default_seed}" for name, p in PROTOCOLS.items() if p.default_seed is not None)
        one_size = " and ".join(name for name, p in PROTOCOLS.items() if p.uses_num_train and name != "hashing")
        sizes += f" for hashing; one size for {one_size}, {DEFAULT_NUM_TRAIN}"
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=None if choose else 0,
        help=f"seed of the sampling (default: {seeds})",
    )
    parser.add_argument(
        "--num-query",
        type=positive_int,
        default=None if choose else DEFAULT_NUM_QUERY,
        metavar="N",
        help=f"query images drawn from the labeled pool; the rest is the database (default: {DEFAULT_NUM_QUERY})",
    )
    parser.add_argument(
        "--train-sizes",
        type=positive_int,
        nargs="*",
        default=None if choose else list(DEFAULT_TRAIN_SIZES),
        metavar="K",
        help=f"training set sizes drawn from the database, each smaller set inside the larger ones (default: {sizes})",
    )

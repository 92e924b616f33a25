"""Convert one of jhlau's pretrained DBOW Doc2Vec models into a gensim 4 model.

    coco-unified convert-jhlau MODEL_DIR OUTPUT_PATH

jhlau's enwiki_dbow and apnews_dbow (https://github.com/jhlau/doc2vec) were saved under Python 2 by
his fork of gensim 0.12: doc2vec.bin (a pickle) plus two .npy files, which gensim 4 cannot load.
The pickle is read without running any of its code, the vocabulary and both weight matrices are
carried into a gensim 4 Doc2Vec, and a summary of what was converted is printed.
`coco-unified doc2vec --jhlau-model MODEL_DIR` converts on the fly; this command keeps the result.
"""

import argparse
import os
import sys
from pathlib import Path

if not __package__:  # run by path: `python tools/convert_jhlau.py`
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import cli
from tools.lib.jhlau import MODEL_FILES, convert_and_save, format_summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        type=Path,
        help=f"directory extracted from enwiki_dbow.tgz or apnews_dbow.tgz, holding {', '.join(MODEL_FILES)}",
    )
    parser.add_argument(
        "output_path",
        metavar="OUTPUT_PATH",
        type=Path,
        help="where to save the gensim 4 model with Doc2Vec.save; its big arrays go to "
        "OUTPUT_PATH.*.npy beside it. Load it with gensim.models.Doc2Vec.load(OUTPUT_PATH)",
    )


def run(args: argparse.Namespace) -> None:
    model = convert_and_save(args.model_dir, args.output_path)
    print(format_summary(model, args.output_path))


if __name__ == "__main__":
    cli.main_for(__file__)

"""The text recipe of the published unified-pool features (captions joined per image), in one place.

Per caption: strip it, add a final "." when it has none, split it into PTB-style tokens
(punctuation becomes its own token, as Stanford CoreNLP does), lowercase the tokens. An image's
document is the concatenation of its captions' tokens, in annotation-file order.
"""

import contextlib
import functools
import hashlib
import importlib.metadata
import multiprocessing
from collections.abc import Sequence

from tools.lib.progress import Progress

TOKENIZER = f"nltk {importlib.metadata.version('nltk')} TreebankWordTokenizer; per caption: strip, final '.', lowercase"


@functools.cache
def _treebank():
    """The tokenizer, nltk imported on first use: importing nltk took 2.6 s here (it loads
    scipy.stats), which `evaluate` spares its main process by tokenising in its inference one."""
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer()


# Images per task sent to a tokenising process: large enough that pickling is not the cost.
_IMAGES_PER_TASK = 2_000


def caption_tokens(caption: str) -> list[str]:
    text = caption.strip()
    if not text.endswith("."):
        text += "."
    # Captions are tokenised one by one: Treebank splits a period off only at the end of its
    # input, so tokenising the joined captions would leave "street." glued inside the document.
    return [token.lower() for token in _treebank().tokenize(text)]


def join_captions(tokenized_captions: Sequence[Sequence[str]]) -> list[str]:
    """The document of an image (or of some of its captions) from its tokenised captions."""
    return [token for tokens in tokenized_captions for token in tokens]


def _tokenize_images(captions_per_image: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    return [[caption_tokens(caption) for caption in captions] for captions in captions_per_image]


def tokenize_captions(captions_per_image: Sequence[Sequence[str]], workers: int = 1) -> list[list[list[str]]]:
    """Per image, the tokens of each of its captions; `workers` processes share the work.

    The Treebank tokenizer costs ~0.8 ms per 5-caption image (a minute and a half for the pool
    on one core), so the pool is split across processes.
    """
    tasks = [
        captions_per_image[start : start + _IMAGES_PER_TASK]
        for start in range(0, len(captions_per_image), _IMAGES_PER_TASK)
    ]
    tokenized: list[list[list[str]]] = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))))
            results = pool.imap(_tokenize_images, tasks)
        else:
            results = map(_tokenize_images, tasks)
        progress = stack.enter_context(Progress(total=len(captions_per_image), desc="tokenizing", unit="image"))
        for images in results:
            tokenized.extend(images)
            progress.update(len(images))
    return tokenized


def documents_sha256(documents: Sequence[Sequence[str]]) -> str:
    """A digest of tokenised documents: equal exactly when every token of every document is."""
    digest = hashlib.sha256()
    for words in documents:
        # Python's str.split treats the unit and record separators as whitespace, so the
        # tokenizer never leaves them inside a token.
        digest.update(("\x1f".join(words) + "\x1e").encode("utf-8"))
    return digest.hexdigest()

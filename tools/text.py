"""The text recipe of the reference preprocessing (REFERENCE.md section 2), in one place.

Per caption: strip it, add a final "." when it has none, split it into PTB-style tokens
(punctuation becomes its own token, as Stanford CoreNLP does), lowercase the tokens. An image's
document is the concatenation of its captions' tokens, in annotation-file order.
"""

import multiprocessing
from typing import List, Sequence

import nltk
from nltk.tokenize import TreebankWordTokenizer

TOKENIZER = f"nltk {nltk.__version__} TreebankWordTokenizer; per caption: strip, final '.', lowercase"

# Captions are tokenised one by one: Treebank splits a period off only at the end of its input,
# so tokenising the joined captions would leave "street." glued inside the document.
_TOKENIZER = TreebankWordTokenizer()

# Images per task sent to a tokenising process: large enough that pickling is not the cost.
_IMAGES_PER_TASK = 2_000


def caption_tokens(caption: str) -> List[str]:
    text = caption.strip()
    if not text.endswith("."):
        text += "."
    return [token.lower() for token in _TOKENIZER.tokenize(text)]


def document_tokens(captions: Sequence[str]) -> List[str]:
    return [token for caption in captions for token in caption_tokens(caption)]


def _documents_of(captions_per_image: Sequence[Sequence[str]]) -> List[List[str]]:
    return [document_tokens(captions) for captions in captions_per_image]


def tokenize_documents(captions_per_image: Sequence[Sequence[str]], workers: int = 1) -> List[List[str]]:
    """One document per entry of `captions_per_image`, tokenised by `workers` processes.

    The Treebank tokenizer costs ~0.8 ms per 5-caption image (a minute and a half for the pool
    on one core), so the pool is split across processes.
    """
    tasks = [captions_per_image[start : start + _IMAGES_PER_TASK] for start in range(0, len(captions_per_image), _IMAGES_PER_TASK)]
    if workers <= 1 or len(tasks) <= 1:
        return _documents_of(captions_per_image)
    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        return [document for documents in pool.imap(_documents_of, tasks) for document in documents]

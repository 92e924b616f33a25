"""tools.lib.text: the caption recipe behind the text features."""

import pytest

from tools.lib.text import caption_tokens, documents_sha256, join_captions, tokenize_captions


@pytest.mark.parametrize(
    "caption, tokens",
    [
        ("  A man riding a horse ", ["a", "man", "riding", "a", "horse", "."]),
        ("Two dogs, playing in the snow.", ["two", "dogs", ",", "playing", "in", "the", "snow", "."]),
        ("A girl's kite", ["a", "girl", "'s", "kite", "."]),
        ("Is it raining?", ["is", "it", "raining", "?", "."]),
        ('A "STOP" sign', ["a", "``", "stop", "''", "sign", "."]),
    ],
)
def test_caption_recipe(caption, tokens):
    assert caption_tokens(caption) == tokens


def test_a_document_joins_its_captions_in_order():
    captions = ["A dog.", "Grass"]
    assert join_captions([caption_tokens(caption) for caption in captions]) == ["a", "dog", ".", "grass", "."]


def test_tokenising_in_processes_gives_what_one_process_gives():
    # More images than one task holds, so that two processes share them.
    images = [[f"Picture {i} of a cat.", "A cat"] for i in range(4_100)]
    assert tokenize_captions(images, workers=2) == tokenize_captions(images, workers=1)


def test_document_digest_sees_token_boundaries():
    digests = {documents_sha256(documents) for documents in ([["a", "b"]], [["a"], ["b"]], [["ab"]], [["a b"]])}
    assert len(digests) == 4

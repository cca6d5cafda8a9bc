"""Keras functional models: a CNN image classifier, a BiLSTM sentiment classifier, a decoder-only Transformer.

Input and output layer names are the tensor names the server sees (`image`, `token_ids`, `attention_mask`,
`probabilities`, `logits`). Every op used here converts with tf2onnx and keeps ONNX Runtime within 1e-4.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers, ops


@dataclass(frozen=True)
class CnnSpec:
    height: int
    width: int
    channels: int
    classes: int
    filters: tuple[int, ...] = (32, 64, 128)
    dense: int = 256
    dropout: float = 0.3


def build_cnn(spec: CnnSpec) -> keras.Model:
    """Conv blocks (conv-BN-ReLU x2, max-pool, dropout), then a dense layer and a softmax head."""
    image = keras.Input((spec.height, spec.width, spec.channels), name="image")
    x = image
    for filters in spec.filters:
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(spec.dropout / 2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(spec.dense, activation="relu")(x)
    x = layers.Dropout(spec.dropout)(x)
    probabilities = layers.Dense(spec.classes, activation="softmax", name="probabilities")(x)
    return keras.Model(image, probabilities, name="digits_cnn")


@dataclass(frozen=True)
class RnnSpec:
    vocab_size: int
    classes: int
    embedding: int = 64
    units: int = 64
    dropout: float = 0.4
    cell: str = "lstm"
    """"lstm" or "gru"."""
    bigram_buckets: int = 0
    """Size of the hashed token-bigram table of the linear ("wide") path; 0 for the RNN alone."""
    lexicon_features: int = 0
    """Columns of a fixed (not trained) per-token table of lexicon scores, fed to the RNN beside the learned
    embedding and, averaged over the text, to the logits; 0 for none. `build_rnn` takes the table."""


@keras.saving.register_keras_serializable("deepserve")
class MaskedMaxPooling1D(layers.Layer):
    """Max over the unmasked time steps (0 for a sequence that is all padding)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, x, mask=None):
        if mask is None:
            return ops.max(x, axis=1)
        keep = ops.expand_dims(mask, -1)
        pooled = ops.max(ops.where(keep, x, ops.full_like(x, -1e9)), axis=1)
        return ops.where(ops.any(keep, axis=1), pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs, mask=None):
        return None


@keras.saving.register_keras_serializable("deepserve")
class HashedBigrams(layers.Layer):
    """token_ids (batch, length) → id of the bigram (previous token, token) hashed into 1..buckets-1, or 0
    where either token is padding (id 0) or there is no previous token."""

    def __init__(self, vocab_size: int, buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.buckets = vocab_size, buckets

    def call(self, token_ids):
        previous = ops.pad(token_ids[:, :-1], [[0, 0], [1, 0]])
        hashed = ops.mod(previous * self.vocab_size + token_ids, self.buckets - 1) + 1
        valid = ops.logical_and(ops.not_equal(previous, 0), ops.not_equal(token_ids, 0))
        return ops.where(valid, hashed, ops.zeros_like(hashed))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "buckets": self.buckets}


@keras.saving.register_keras_serializable("deepserve")
class MaskedMean(layers.Layer):
    """Mean over the time steps whose id is not 0 (0 when there are none); `ids` says which, so an incoming
    Keras mask is not needed and not passed on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, x, ids):
        keep = ops.cast(ops.expand_dims(ops.not_equal(ids, 0), -1), x.dtype)
        return ops.sum(x * keep, axis=1) / ops.maximum(ops.sum(keep, axis=1), 1.0)


def build_rnn(spec: RnnSpec, name: str = "sentiment_rnn", lexicon: np.ndarray | None = None) -> keras.Model:
    """Embedding (id 0 is padding and masked) → bidirectional LSTM (or GRU) over the sequence → masked mean
    and max pooling → class logits. With `bigram_buckets`, a linear path adds to those logits the mean of
    per-class weights of the text's tokens and of its hashed token bigrams (a "wide & deep" classifier);
    then softmax.

    With `lexicon` (vocab_size x spec.lexicon_features, fixed), each token's row of lexicon scores is
    concatenated to its embedding, and their mean over the text feeds the logits through a dense layer.

    The mask makes the probabilities independent of right padding, which the server's batcher adds.
    """
    token_ids = keras.Input((None,), dtype="int64", name="token_ids")
    x = layers.Embedding(spec.vocab_size, spec.embedding, mask_zero=True)(token_ids)
    scores = None
    if spec.lexicon_features:
        if lexicon is None or lexicon.shape != (spec.vocab_size, spec.lexicon_features):
            raise ValueError(f"build_rnn needs a ({spec.vocab_size}, {spec.lexicon_features}) lexicon table")
        table = layers.Embedding(
            spec.vocab_size,
            spec.lexicon_features,
            mask_zero=True,  # carries the mask through the concatenation: padding must not change the output
            trainable=False,
            embeddings_initializer=keras.initializers.Constant(lexicon),
            name="lexicon",
        )
        scores = table(token_ids)
        x = layers.Concatenate()([x, scores])
    x = layers.SpatialDropout1D(spec.dropout / 2)(x)
    cell = {"lstm": layers.LSTM, "gru": layers.GRU}[spec.cell]
    x = layers.Bidirectional(cell(spec.units, return_sequences=True))(x)
    pooled = [layers.GlobalAveragePooling1D()(x), MaskedMaxPooling1D()(x)]
    x = layers.Dropout(spec.dropout)(layers.Concatenate()(pooled))
    logits = [layers.Dense(spec.classes)(x)]
    if scores is not None:
        logits.append(layers.Dense(spec.classes)(MaskedMean()(scores, token_ids)))
    if spec.bigram_buckets:
        bigram_ids = HashedBigrams(spec.vocab_size, spec.bigram_buckets)(token_ids)
        for ids, size in ((token_ids, spec.vocab_size), (bigram_ids, spec.bigram_buckets)):
            table = layers.Embedding(size, spec.classes, embeddings_initializer="zeros")
            logits.append(MaskedMean()(table(ids), ids))
    total = logits[0] if len(logits) == 1 else layers.Add()(logits)
    probabilities = layers.Activation("softmax", name="probabilities")(total)
    return keras.Model(token_ids, probabilities, name=name)


def average_ensemble(members: list[keras.Model], name: str) -> keras.Model:
    """One model whose `probabilities` are the mean of its members' (all take the same `token_ids`)."""
    token_ids = keras.Input((None,), dtype="int64", name="token_ids")
    outputs = [member(token_ids) for member in members]
    if len(outputs) == 1:
        probabilities = layers.Identity(name="probabilities")(outputs[0])
    else:
        probabilities = layers.Average(name="probabilities")(outputs)
    return keras.Model(token_ids, probabilities, name=name)


@dataclass(frozen=True)
class TransformerSpec:
    vocab_size: int
    context_length: int = 128
    d_model: int = 160
    heads: int = 4
    layers: int = 3
    mlp_ratio: int = 4
    dropout: float = 0.1


@keras.saving.register_keras_serializable("deepserve")
def gelu_tanh(x):
    """GELU, tanh approximation: tf2onnx has no conversion for the Erfc op that exact GELU lowers to."""
    return keras.activations.gelu(x, approximate=True)


@keras.saving.register_keras_serializable("deepserve")
class TokenAndPositionEmbedding(layers.Layer):
    """Token embedding plus a learned embedding of the position (0 .. context_length-1)."""

    def __init__(self, vocab_size: int, context_length: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.context_length, self.d_model = vocab_size, context_length, d_model
        self.tokens = layers.Embedding(vocab_size, d_model)
        self.positions = layers.Embedding(context_length, d_model)

    def call(self, token_ids):
        positions = ops.arange(ops.shape(token_ids)[1])
        return self.tokens(token_ids) + ops.expand_dims(self.positions(positions), 0)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "context_length": self.context_length,
            "d_model": self.d_model,
        }


@keras.saving.register_keras_serializable("deepserve")
class CausalSelfAttention(layers.Layer):
    """Multi-head self-attention where position i sees positions ≤ i whose attention_mask is 1."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.heads, self.dropout_rate = d_model, heads, dropout
        self.head_dim = d_model // heads
        self.qkv = layers.Dense(3 * d_model)
        self.out = layers.Dense(d_model)
        self.dropout = layers.Dropout(dropout)

    def call(self, x, attention_mask, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.heads, self.head_dim))
        qkv = ops.transpose(qkv, (2, 0, 3, 1, 4))  # (3, batch, heads, length, head_dim)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) * (1.0 / self.head_dim**0.5)
        rows = ops.expand_dims(ops.arange(length), 1)
        cols = ops.expand_dims(ops.arange(length), 0)
        causal = ops.expand_dims(ops.greater_equal(rows, cols), 0)  # (1, length, length)
        keys = ops.expand_dims(ops.not_equal(attention_mask, 0), 1)  # (batch, 1, length)
        allowed = ops.expand_dims(ops.logical_and(causal, keys), 1)  # (batch, 1, length, length)
        scores = ops.where(allowed, scores, ops.full_like(scores, -1e9))
        weights = self.dropout(ops.softmax(scores, axis=-1), training=training)
        context = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))
        return self.out(ops.reshape(context, (batch, length, self.d_model)))

    def get_config(self):
        return {**super().get_config(), "d_model": self.d_model, "heads": self.heads, "dropout": self.dropout_rate}


def _decoder_block(x, attention_mask, spec: TransformerSpec, index: int):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + MLP(LN(x))."""
    h = layers.LayerNormalization(epsilon=1e-5, name=f"block{index}_ln1")(x)
    h = CausalSelfAttention(spec.d_model, spec.heads, spec.dropout, name=f"block{index}_attention")(h, attention_mask)
    x = layers.Add()([x, layers.Dropout(spec.dropout)(h)])
    h = layers.LayerNormalization(epsilon=1e-5, name=f"block{index}_ln2")(x)
    h = layers.Dense(spec.mlp_ratio * spec.d_model, activation=gelu_tanh)(h)
    h = layers.Dense(spec.d_model)(h)
    return layers.Add()([x, layers.Dropout(spec.dropout)(h)])


def build_transformer(spec: TransformerSpec) -> keras.Model:
    """Decoder-only Transformer returning next-token logits at every position.

    `attention_mask` is 1 for real tokens and 0 for right padding; padded keys are masked out of attention
    as well as future ones, so the logits at real positions do not depend on the padding.
    """
    token_ids = keras.Input((None,), dtype="int64", name="token_ids")
    attention_mask = keras.Input((None,), dtype="int64", name="attention_mask")
    x = TokenAndPositionEmbedding(spec.vocab_size, spec.context_length, spec.d_model)(token_ids)
    x = layers.Dropout(spec.dropout)(x)
    for index in range(spec.layers):
        x = _decoder_block(x, attention_mask, spec, index)
    x = layers.LayerNormalization(epsilon=1e-5, name="final_ln")(x)
    logits = layers.Dense(spec.vocab_size, name="logits")(x)
    return keras.Model([token_ids, attention_mask], logits, name="textgen_transformer")

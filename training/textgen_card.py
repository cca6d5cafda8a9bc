"""textgen_transformer's model_card.json: its parity section and the card itself (data, preprocessing,
architecture, training, metrics against the trigram baseline, quality bar)."""

from __future__ import annotations

import math

from training import recipe
from training.textgen_quality import quality_bar
from training.textgen_step import KV_CACHE
from training.textgen_warm_start import warm_start
from training.tokenization import BPE_BOS, BPE_EOS, BPE_PAD


def parity_card(exported, ctx: int, invariance: float) -> dict:
    return {
        "against": f"Keras on {exported.parity_examples} held-out rows of 1..{ctx} real tokens, "
        f"right-padded to {ctx} with attention_mask (all positions compared)",
        "padding_invariance_max_abs_diff": invariance,
        "padding_invariance_tolerance": 1e-4,
    }


def card(settings, config, source, split, streams, fitted, metrics, baseline, exported, parity, extra, read) -> dict:
    """model_card.json; `fitted` is (the training windows, the spec, the Keras model, the fit's result)."""
    train, spec, model, result = fitted
    ctx, vocab = settings.context_length, spec.vocab_size
    evaluation = metrics["eval_prompts"]
    return recipe.model_card(
        settings,
        "text_generation",
        data={
            "source": source,
            "split": {
                **split,
                "tokens": {p: len(s) for p, s in streams.items()},
                "train_windows": len(train.token_ids),
            },
        },
        preprocessing={
            **config.text.model_dump(mode="json"),
            "vocab_size": vocab,
            "tokenizer_model": "byte-level BPE trained on the training split; "
            f"{BPE_PAD}={config.text.pad_id}, {BPE_BOS}={config.generation.bos_id}, "
            f"{BPE_EOS}={config.generation.eos_id}",
            "sequences": "each source file is <|bos|> text <|endoftext|>; prompts start with <|bos|>",
            "padding": "right, with pad_id, attention_mask 0 on padding",
        },
        model=model,
        architecture="decoder-only Transformer: token + learned position embeddings, pre-LayerNorm "
        "blocks (causal multi-head self-attention with key padding mask, GELU MLP), "
        f"final LayerNorm, logits at every position; {KV_CACHE}",
        spec=spec,
        training=recipe.training_card(
            settings,
            f"AdamW (weight decay {settings.weight_decay}, clipnorm 1.0)",
            result.seconds,
            learning_rate=f"{settings.learning_rate} after {settings.warmup_steps} warm-up steps, cosine "
            "decay to a tenth of it",
            windows=f"{ctx + 1} tokens every {settings.train_stride}",
            max_epochs=settings.epochs if settings.init_from is None else settings.continue_epochs,
            **recipe.fitted(result),
            validation_perplexity_per_epoch=[round(math.exp(v), 2) for v in result.history.get("val_loss", [])],
            machine="2 shared CPU cores (nice -n 19), TensorFlow CPU",
            **warm_start(settings, result),
        ),
        metrics=metrics,
        baseline={
            "model": "interpolated Kneser-Ney token trigram (discount 0.75) on the same tokenizer, trained on the "
            "training split's token stream, scored on the same targets (training/baselines.py)",
            **baseline,
        },
        quality_bar=quality_bar(metrics["test"]["perplexity"], baseline["test"]["perplexity"], evaluation, read),
        exported=exported,
        parity=parity,
        extra=extra,
    )

"""sentiment_rnn's model-card text: the architecture it describes, and where the composed review and
statement sentences added to its training split came from."""

from __future__ import annotations

from training import reviews as composed
from training.sentiment_settings import SentimentSettings


def architecture(settings: SentimentSettings) -> str:
    wide = (
        ", plus a linear 'wide' path (per-class weights of each token and of each hashed token "
        f"bigram, {settings.bigram_buckets} buckets, averaged over the text) added to the logits"
        if settings.bigram_buckets
        else ""
    )
    lexicon = (
        f"; a fixed table of {len(composed.LEXICON_COLUMNS)} lexicon scores per token "
        f"({', '.join(composed.LEXICON_COLUMNS)}; whole-word tokens only) is concatenated to the "
        "embedding, and its mean over the text feeds the logits through a Dense layer"
        if settings.lexicon
        else ""
    )
    return (
        f"mean of {settings.members} bidirectional RNN classifiers (seeds differ; cells in "
        f"turn {'/'.join(settings.cells)}), each: Embedding(mask_zero) → SpatialDropout → "
        "Bidirectional(cell, sequences) → masked mean + max pooling → Dropout → Dense logits"
        + wide
        + lexicon
        + " → softmax"
    )


def composed_card(settings: SentimentSettings, count: int) -> dict:
    return {
        "examples": count,
        "added_to": "training split only (validation and test are tweets)",
        "how": "training/reviews.py: review templates (1-3 sentences; negation, contrast, a fact beside an "
        "opinion) filled with adjectives on whose sign the two lexicons agree, and nouns of five domains "
        "(products, restaurants, hotels, services, places); neutral: factual templates (dates, places, "
        "sizes, prices, materials) and pydoc_data.topics sentences without VADER lexicon words",
        "sources": {
            "vaderSentiment": "vader_lexicon.txt (package vaderSentiment, MIT licence, C.J. Hutto)",
            "textblob": "en/en-sentiment.xml (package textblob, MIT; the lexicon itself is pattern's, by "
            "Tom De Smedt and Walter Daelemans, PDDL, built from reviews)",
            "textblob_tags": "en/en-lexicon.txt (Brill's tagger lexicon shipped in textblob, MIT): which VADER "
            "words are adjectives or past participles",
            "pydoc_data": "pydoc_data.topics (Python standard library, PSF licence)",
            "templates": "training/review_words.py (written for this project)",
        },
        "word_vectors": "none used: the packages checked (gensim, spaCy, fastText) fetch pretrained vectors at run "
        "time instead of shipping them",
        "per_class": settings.reviews_per_class,
    }

"""Build a trainer task (model + data + loss) from a config: the registry behind ``config.trainer``."""
from __future__ import annotations

from typing import Any

import numpy as np

from gecko_jax.train.config import ConfigError, TrainConfig


def load_encoder(config: TrainConfig):
    """``(encoder_config, pretrained_params | None, tokenizer | None, Encoder module)`` from ``config.model``."""
    return encoder_from_model_config(config.model, config.data.max_length)


def encoder_from_model_config(m, max_length: int):
    """:func:`load_encoder` from a ``ModelConfig`` and the token cap (also used by the classifier grid)."""
    from gecko_jax.data.tokenize import Tokenizer
    from gecko_jax.embedder import resolve_model_path
    from gecko_jax.models import Encoder, EncoderConfig, load_pretrained

    overrides = {} if m.dropout is None else {"hidden_dropout": m.dropout, "attention_dropout": m.dropout}
    if m.dtype is not None:
        overrides["dtype"] = m.dtype
    if m.attention_impl is not None:
        overrides["attention_impl"] = m.attention_impl
    params = None
    if m.pretrained is not None:
        folder = resolve_model_path(m.pretrained)
        enc_cfg, params = load_pretrained(folder, **overrides)
    elif m.tiny is not None:
        enc_cfg = EncoderConfig.tiny(**{**m.tiny, **overrides})
    else:
        raise ConfigError("config field 'model': set 'pretrained' (folder or known name) or 'tiny' (random init)")
    tok_source = m.tokenizer or m.pretrained
    tokenizer = None
    if tok_source is not None:
        tokenizer = Tokenizer.from_pretrained(resolve_model_path(tok_source), max_length=max_length)
    return enc_cfg, params, tokenizer, Encoder(enc_cfg)


def _classifier_data(config: TrainConfig, tokenize):
    """(train source, eval source | None, num_classes) for the classifier trainer."""
    from gecko_jax.data.batching import ArraySource, TextClassificationSource

    d = config.data
    if d.source == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        images = (x.reshape(-1, 8, 8, 1) / 16.0).astype(np.float32)
        order = np.random.Generator(np.random.PCG64(1797)).permutation(len(y))  # fixed split, independent of seeds
        tr, te = order[:1500], order[1500:]
        labels = _noisy(y[tr].astype(np.int32), 10, d)
        return (ArraySource({"image": images[tr], "label": labels}),
                ArraySource({"image": images[te], "label": y[te].astype(np.int32)}), 10)
    if d.source.startswith("tfds_local:"):
        from gecko_jax.data import tfds_local

        name = d.source.split(":", 1)[1]
        k = tfds_local.NUM_CLASSES[name]
        if d.noise_type != "none":
            train = tfds_local.load_noisy_split(name, "train", noise_type=d.noise_type, noise_rate=d.noise_rate,
                                                seed=d.seed, subset=d.subset)
        else:
            train = tfds_local.load_split(name, "train")
        test_split = "validation" if name == "sst2" else "test"
        test = tfds_local.load_split(name, test_split)
        if "text" in train:
            from gecko_jax.data.jsonl import LabelledText

            def as_source(split):
                recs = [LabelledText(str(i), t, int(lbl))
                        for i, (t, lbl) in enumerate(zip(split["text"], split["label"]))]
                return TextClassificationSource(recs, tokenize)

            return as_source(train), as_source(test), k
        return (ArraySource({"image": train["image"], "label": train["label"]}),
                ArraySource({"image": test["image"], "label": test["label"]}), k)
    from gecko_jax.data.jsonl import read_labelled

    records = [r for s in d.datasets for r in read_labelled(s.path, num_classes=d.num_classes)]
    k = d.num_classes or 1 + max(r.label for r in records)
    eval_src = None
    if d.eval_path:
        eval_src = TextClassificationSource(read_labelled(d.eval_path, num_classes=k), tokenize)
    return TextClassificationSource(records, tokenize), eval_src, k


def _noisy(labels: np.ndarray, k: int, d) -> np.ndarray:
    if d.noise_type == "none" or d.noise_rate == 0:
        return labels
    from gecko_jax.data import noise

    t = (noise.symmetric_transition if d.noise_type == "symmetric" else noise.pairflip_transition)(k, d.noise_rate)
    return noise.corrupt_labels(labels, t, seed=d.seed)[0].astype(np.int32)


def make_classifier_module(config: TrainConfig, outputs: int, encoder=None):
    """The classifier named by ``model.classifier`` with ``outputs`` logits (``m + 1`` for the gambler's loss)."""
    from gecko_jax.train.classifier import LinearHead, MLPClassifier, TextClassifier

    m = config.model
    if m.classifier == "linear":
        return LinearHead(outputs)
    if m.classifier == "text_head":
        if encoder is None:
            raise ConfigError("config field 'model.classifier': 'text_head' needs a text data source and an encoder")
        return TextClassifier(encoder, outputs)
    if m.classifier == "mlp":
        return MLPClassifier(outputs, m.hidden)
    from gecko_jax.models import cnn

    name = m.classifier.split(":", 1)[1]
    if name not in cnn.__all__ or not isinstance(getattr(cnn, name), type):
        raise ConfigError(f"config field 'model.classifier': no CNN {name!r} in gecko_jax.models.cnn "
                          f"(available: {[n for n in cnn.__all__ if n.endswith('CNN')]})")
    return getattr(cnn, name)(num_outputs=outputs)


def build_classifier(config: TrainConfig, *, module=None, tokenize=None):
    from gecko_jax.data.batching import BatchStream, bucket_tokenizer
    from gecko_jax.train.classifier import ClassifierTask, FieldAdapter, num_outputs, takes_batch_dict

    encoder = None
    pretrained = None
    needs_text = config.data.source == "jsonl" or config.data.source in ("tfds_local:sst2", "tfds_local:mr")
    if needs_text and tokenize is None:
        enc_cfg, enc_params, tokenizer, encoder = load_encoder(config)
        tokenize = bucket_tokenizer(tokenizer, config.data.max_length, config.data.buckets)
        if enc_params is not None:
            pretrained = ("encoder", enc_params)
    train_src, eval_src, k = _classifier_data(config, tokenize)
    outputs = num_outputs(config.loss.name, k)
    if module is None:
        module = make_classifier_module(config, outputs, encoder)
    if not takes_batch_dict(module):
        module = FieldAdapter(module)
    stream = BatchStream([train_src], config.data.batch_size, seed=config.data.seed)
    sample = {k_: v for k_, v in stream.batch(0).items()}
    steps_per_epoch = max(len(train_src) // config.data.batch_size, 1)
    return ClassifierTask(config, module, stream, k, steps_per_epoch, sample, eval_src,
                          pretrained_encoder=None if pretrained is None else pretrained[1])


def build_task(config: TrainConfig, **kwargs) -> Any:
    """The task for ``config.trainer``: ``"contrastive"`` or ``"classifier"``."""
    if config.trainer == "contrastive":
        from gecko_jax.train.contrastive import build_contrastive

        return build_contrastive(config, **kwargs)
    if config.trainer == "classifier":
        return build_classifier(config, **kwargs)
    raise ConfigError(f"config field 'trainer': unknown trainer {config.trainer!r}")

"""Flax text encoders and torch-free Hugging Face / sentence-transformers checkpoint I/O.

    from gecko_jax.models import EncoderConfig, Encoder, load_pretrained, save_pretrained, truncate_embeddings
    config, params = load_pretrained(folder)
    emb = Encoder(config).apply({"params": params}, input_ids, attention_mask)   # float32[B, D], unit rows

Families are registered by Hugging Face ``model_type`` in ``gecko_jax.models.registry`` (``bert`` today).
"""
from gecko_jax.models.config import EncoderConfig
from gecko_jax.models.encoder import Encoder, cls_pool, l2_normalize, mean_pool, truncate_embeddings
from gecko_jax.models.hf_io import load_pretrained, read_st_layout, save_pretrained
from gecko_jax.models.registry import ARCHITECTURES, Architecture, get_architecture, register
from gecko_jax.models.cnn import CifarSmallCNN, MnistCNN

__all__ = [
    "EncoderConfig", "Encoder", "load_pretrained", "save_pretrained", "read_st_layout", "truncate_embeddings",
    "mean_pool", "cls_pool", "l2_normalize", "ARCHITECTURES", "Architecture", "get_architecture", "register",
    "MnistCNN", "CifarSmallCNN",
]

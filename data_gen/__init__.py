"""data_gen: PyTorch-free LLM pipelines (FRet, fairness augmentation). Never imports jax/torch/tensorflow at import time."""

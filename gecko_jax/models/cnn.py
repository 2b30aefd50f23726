"""The small CNNs of the noisy-label papers (label smoothing; gambler's loss), in Flax linen.

* :class:`MnistCNN`: conv 20@5x5 (valid) -> ReLU -> max-pool 2 -> conv 50@5x5 (valid) -> ReLU -> max-pool 2 ->
  fc 500 -> ReLU -> fc ``num_outputs`` (the authors' ``CNN_basic``; ``m`` outputs for NLL / label smoothing,
  ``m + 1`` for the gambler's loss, whose last output is the abstention score). 431,080 parameters for 10 outputs.
* :class:`CifarSmallCNN`: LeNet-style ``CNN_small``: conv 6@5x5 -> ReLU -> pool -> conv 16@5x5 -> ReLU -> pool ->
  fc 120 -> ReLU -> fc 84 -> ReLU -> fc ``num_outputs``. 62,006 parameters for 10 outputs.

Inputs are NHWC images, either ``uint8`` in [0, 255] or floats already in [0, 1]; :func:`to_float_images` does the
scaling (uint8 inputs are scaled inside the modules too, so raw loader output can be fed directly).

Example::

    import jax, jax.numpy as jnp
    from gecko_jax.models.cnn import MnistCNN
    model = MnistCNN(num_outputs=11)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    logits = model.apply({"params": params}, images, train=False)   # [B, 11]
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

__all__ = ["MnistCNN", "CifarSmallCNN", "to_float_images", "max_pool_2x2", "PatchConv", "count_params"]


def to_float_images(images, dtype=jnp.float32):
    """Scales ``uint8`` images to [0, 1] floats; float inputs are returned cast to ``dtype`` unchanged in value.

    Args:
      images: ``[..., H, W, C]`` uint8 in [0, 255] or floats in [0, 1].
      dtype: output float dtype.

    Returns:
      ``[..., H, W, C]`` floats in [0, 1].
    """
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return images.astype(dtype) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images: expected uint8 or float, got {images.dtype}")
    return images.astype(dtype)


def _check_images(images, shape, name):
    if images.ndim != 4 or tuple(images.shape[1:]) != shape:
        raise ValueError(f"{name}: expected images [B, {', '.join(map(str, shape))}] (NHWC), got {images.shape}")


def max_pool_2x2(x):
    """2x2 max-pool with stride 2 over NHWC (H, W even), as a reshape + max.

    Same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))``; the gradient is a cheap elementwise mask instead of
    XLA's select-and-scatter, which made the backward pass of these CNNs ~10x slower than the forward on CPU.
    """
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class PatchConv(nn.Module):
    """VALID, stride-1 2-D convolution computed as shifted slices + one matmul (drop-in for ``nn.Conv``).

    Same parameters (``kernel [kh, kw, C, F]``, ``bias [F]``, same initialisers) and outputs as
    ``nn.Conv(F, (kh, kw), padding="VALID")``. Why: XLA:CPU's convolution weight-gradient was the slowest part of a
    training step of these small CNNs; with the patches spelled out, both gradients are plain matmuls and slices.

    Attributes:
      features: output channels F.
      kernel_size: ``(kh, kw)``.
    """

    features: int
    kernel_size: tuple[int, int] = (5, 5)

    @nn.compact
    def __call__(self, x):
        kh, kw = self.kernel_size
        b, h, w, c = x.shape
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (kh, kw, c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        ho, wo = h - kh + 1, w - kw + 1
        patches = jnp.stack([x[:, i:i + ho, j:j + wo, :] for i in range(kh) for j in range(kw)], axis=3)
        patches = patches.reshape(b, ho, wo, kh * kw * c)
        return patches @ kernel.reshape(kh * kw * c, self.features) + bias


def count_params(params) -> int:
    """Total number of scalars in a parameter tree."""
    import jax

    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


class MnistCNN(nn.Module):
    """2-conv CNN for 28x28x1 images (``CNN_basic`` of the label-smoothing / gambler's-loss code).

    Attributes:
      num_outputs: logits per example (10 for NLL/smoothing on MNIST, 11 for the gambler's loss).
      hidden: width of the fully connected layer (500 in the papers).
    """

    num_outputs: int = 10
    hidden: int = 500

    @nn.compact
    def __call__(self, images, train: bool = False):
        """Args: images ``[B, 28, 28, 1]`` (uint8 or [0, 1] floats). Returns: logits ``[B, num_outputs]``."""
        del train  # no dropout / batch norm: the flag keeps one interface across models
        _check_images(images, (28, 28, 1), "MnistCNN")
        x = to_float_images(images)
        x = nn.relu(PatchConv(20, name="conv1")(x))  # 24x24x20
        x = max_pool_2x2(x)                          # 12x12x20
        x = nn.relu(PatchConv(50, name="conv2")(x))  # 8x8x50
        x = max_pool_2x2(x)                          # 4x4x50
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(x))
        return nn.Dense(self.num_outputs, name="fc2")(x)


class CifarSmallCNN(nn.Module):
    """LeNet-style CNN for 32x32x3 images (``CNN_small`` of the gambler's-loss code).

    Attributes:
      num_outputs: logits per example (10, or 11 for the gambler's loss).
    """

    num_outputs: int = 10

    @nn.compact
    def __call__(self, images, train: bool = False):
        """Args: images ``[B, 32, 32, 3]`` (uint8 or [0, 1] floats). Returns: logits ``[B, num_outputs]``."""
        del train
        _check_images(images, (32, 32, 3), "CifarSmallCNN")
        x = to_float_images(images)
        x = max_pool_2x2(nn.relu(PatchConv(6, name="conv1")(x)))             # 14x14x6
        x = max_pool_2x2(nn.relu(PatchConv(16, name="conv2")(x)))            # 5x5x16
        x = x.reshape(x.shape[0], -1)                                        # 5*5*16 = 400
        x = nn.relu(nn.Dense(120, name="fc1")(x))
        x = nn.relu(nn.Dense(84, name="fc2")(x))
        return nn.Dense(self.num_outputs, name="fc3")(x)

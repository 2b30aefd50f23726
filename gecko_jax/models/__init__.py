"""gecko_jax.models."""

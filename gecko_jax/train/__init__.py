"""gecko_jax.train."""

"""gecko_jax.eval."""

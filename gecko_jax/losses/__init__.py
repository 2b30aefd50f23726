"""gecko_jax.losses."""

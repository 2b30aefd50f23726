"""``python -m gecko_jax.cli``: the ``gecko-jax`` command."""
import sys

from gecko_jax.cli import main

sys.exit(main())

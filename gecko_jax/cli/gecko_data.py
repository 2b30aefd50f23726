"""``gecko-data``: data_gen's command line with ``gecko_jax``'s embedder injected as ``--embedder gecko``.

data_gen imports no ``gecko_jax`` (nor JAX): its retrieval takes an embed function from the caller. This is that
caller. The factory travels as a ``module:function`` string, so Beam workers build their own embedder, and JAX is
imported only in the process that embeds, only when ``--embedder gecko`` is chosen.
"""
from __future__ import annotations

import sys

from data_gen import cli
from data_gen.specs import EmbedderSpec

EMBEDDERS = {"gecko": EmbedderSpec("gecko", factory="gecko_jax.embedder:fret_embed_fns", label="gecko_jax")}


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, embedders=EMBEDDERS)


if __name__ == "__main__":
    sys.exit(main())

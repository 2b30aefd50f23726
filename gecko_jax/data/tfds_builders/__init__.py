"""Small tfds builders over raw dataset files (the mirror layout of :mod:`gecko_jax.datasets`), written as array_record.

These let the offline path go through the same tensorflow-datasets machinery (``download_and_prepare`` then
``builder.as_data_source()``) as the upstream datasets, without TensorFlow: images are handed to
``tfds.features.Image`` as PIL images or already-encoded bytes (an ``np.ndarray`` would be PNG-encoded with
``tf.image``), and reading decodes with PIL. Examples keep the source order (``disable_shuffling``) so a prepared
split can be checked row by row against the raw files.

Builder names carry a ``gecko_`` prefix so they never shadow the upstream ``mnist`` / ``cifar10`` / ``glue`` builders
in a shared tfds data directory; the feature dicts match the upstream ones (``image``/``label``;
``sentence``/``label``/``idx``).
"""
from __future__ import annotations

import gzip
import inspect
import os
import pathlib
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = ["GeckoMnist", "GeckoCifar10", "GeckoCifar10Binary", "GeckoSst2", "GeckoMr", "BUILDERS", "read_idx",
           "read_cifar10_binary", "CIFAR10_CLASSES", "CIFAR10_BINARY", "MR_TEST_FRACTION", "MR_SPLIT_SEED"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_BINARY = "cifar-10-binary.tar.gz"  # the original release (what `gecko-jax datasets fetch cifar10` downloads)
# MR ships without a split; a fixed seeded 90/10 split keeps results comparable between runs and machines.
MR_TEST_FRACTION = 0.1
MR_SPLIT_SEED = 0


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an (optionally gzipped) IDX file (the MNIST format) into a uint8 array.

    Args:
      path: an ``*-idx{1,3}-ubyte[.gz]`` file.

    Returns:
      ``uint8[d0, d1, ...]`` with the dimensions stored in the header.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic bytes {raw[:4]!r}, expected 00 00 08 <ndim>)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(f"{path}: header says {dims} = {expected} bytes of data, file holds {len(raw) - offset}")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; expected {what} (see `gecko-jax datasets list`)")
    return path


class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base: remembers the folder with the raw local files (``source_dir``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Prepared from raw files found by gecko_jax.datasets."}

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        # None is enough to read an already prepared copy (e.g. ``tfds.data_source("gecko_mnist", data_dir=...)``).
        self._source_dir = None if source_dir is None else pathlib.Path(source_dir)
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # tfds 4.9.10's default probes `importlib_resources.abc.Traversable`, a backport that is not installed on
        # Python >= 3.9 (tfds only requires it below 3.9): this module's own file is the right answer anyway.
        return epath.Path(inspect.getfile(cls))

    @property
    def source_dir(self) -> pathlib.Path:
        if self._source_dir is None:
            raise ValueError(f"{self.name}: preparing needs source_dir= (the local raw files), none was given")
        return self._source_dir

    def _make_info(self, features, *, supervised_keys, description):
        # DatasetInfo directly: dataset_info_from_configs() looks for metadata files next to the builder module.
        return tfds.core.DatasetInfo(builder=self, description=description, features=features,
                                     supervised_keys=supervised_keys, disable_shuffling=True)


class GeckoMnist(_LocalBuilder):
    """MNIST from the four gzipped IDX files (train 60,000 / test 10,000)."""

    name = "gecko_mnist"

    def _info(self):
        return self._make_info(
            tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                        "label": tfds.features.ClassLabel(num_classes=10)}),
            supervised_keys=("image", "label"), description="MNIST (local IDX copy).")

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples("train"), "test": self._generate_examples("t10k")}

    def _generate_examples(self, prefix):
        from PIL import Image

        images = read_idx(_require(self.source_dir / f"{prefix}-images-idx3-ubyte.gz", "MNIST IDX images"))
        labels = read_idx(_require(self.source_dir / f"{prefix}-labels-idx1-ubyte.gz", "MNIST IDX labels"))
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError(f"{self.source_dir}/{prefix}-*: images {images.shape} and labels {labels.shape} "
                             "do not match (expected [N, 28, 28] and [N])")
        for i in range(images.shape[0]):
            # A PIL image is PNG-encoded by PIL; an ndarray would need tf.image.encode_png.
            yield i, {"image": Image.fromarray(images[i], mode="L"), "label": int(labels[i])}


class GeckoCifar10(_LocalBuilder):
    """CIFAR-10 from ``cifar10_{train,test}_jpg.tar.gz`` (``<split>/<class>/*.jpg``, a lossy JPEG re-encode)."""

    name = "gecko_cifar10"

    def _info(self):
        return self._make_info(
            tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                        "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="jpeg"),
                                        "label": tfds.features.ClassLabel(names=list(CIFAR10_CLASSES))}),
            supervised_keys=("image", "label"), description="CIFAR-10 (local JPEG copy).")

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(s) for s in ("train", "test")}

    def _generate_examples(self, split):
        path = _require(self.source_dir / f"cifar10_{split}_jpg.tar.gz", "a tar.gz of <split>/<class>/*.jpg")
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".jpg"):
                    continue
                parts = member.name.split("/")
                if len(parts) != 3 or parts[1] not in CIFAR10_CLASSES:
                    raise ValueError(f"{path}: member {member.name!r} is not <split>/<class>/<file>.jpg "
                                     f"with class in {CIFAR10_CLASSES}")
                # The JPEG bytes are stored as they are: no decode/re-encode at preparation time.
                data = tar.extractfile(member).read()
                yield member.name, {"id": member.name, "image": data, "label": parts[1]}


def read_cifar10_binary(path: str | os.PathLike, split: str):
    """Yields ``(member/index, uint8[32, 32, 3], label)`` from the original ``cifar-10-binary.tar.gz``
    (``data_batch_1..5.bin`` for train, ``test_batch.bin`` for test; records of 1 label byte + 3,072 CHW bytes)."""
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    with tarfile.open(path, "r:gz") as tar:
        members = {pathlib.PurePosixPath(m.name).name: m for m in tar if m.isfile()}
        for name in names:
            if name not in members:
                raise ValueError(f"{path}: member {name} missing; expected cifar-10-batches-bin/{name}")
            raw = np.frombuffer(tar.extractfile(members[name]).read(), np.uint8)
            if raw.size % 3073:
                raise ValueError(f"{path}:{name}: {raw.size} bytes is not a whole number of 3,073-byte records")
            rec = raw.reshape(-1, 3073)
            images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            for i in range(rec.shape[0]):
                yield f"{name}/{i}", images[i], int(rec[i, 0])


class GeckoCifar10Binary(_LocalBuilder):
    """CIFAR-10 from the original ``cifar-10-binary.tar.gz`` (lossless; images stored as PNG)."""

    name = "gecko_cifar10_binary"

    def _info(self):
        return self._make_info(
            tfds.features.FeaturesDict({"id": tfds.features.Text(),
                                        "image": tfds.features.Image(shape=(32, 32, 3)),
                                        "label": tfds.features.ClassLabel(names=list(CIFAR10_CLASSES))}),
            supervised_keys=("image", "label"), description="CIFAR-10 (original binary batches).")

    def _split_generators(self, dl_manager):
        return {s: self._generate_examples(s) for s in ("train", "test")}

    def _generate_examples(self, split):
        from PIL import Image

        path = _require(self.source_dir / CIFAR10_BINARY, "the original CIFAR-10 binary tar.gz")
        for key, image, label in read_cifar10_binary(path, split):
            yield key, {"id": key, "image": Image.fromarray(image, mode="RGB"), "label": label}


def _text_features():
    return tfds.features.FeaturesDict({"idx": np.int32, "sentence": tfds.features.Text(),
                                       "label": tfds.features.ClassLabel(names=["negative", "positive"])})


class GeckoSst2(_LocalBuilder):
    """SST-2 from the SentEval files ``sentiment-{train,dev,test}`` (``sentence<TAB>label``); dev -> validation."""

    name = "gecko_sst2"

    def _info(self):
        return self._make_info(_text_features(), supervised_keys=("sentence", "label"),
                               description="SST-2 (SentEval copy; unlike glue/sst2 the test split is labelled).")

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples("train"), "validation": self._generate_examples("dev"),
                "test": self._generate_examples("test")}

    def _generate_examples(self, part):
        path = _require(self.source_dir / f"sentiment-{part}", "lines 'sentence<TAB>label'")
        from gecko_jax.fileio import iter_lines

        for lineno, line in iter_lines(path):  # a non-UTF-8 byte: InputError naming file:line
            if not line:
                continue
            sentence, sep, label = line.rpartition("\t")
            if not sep or label.strip() not in ("0", "1"):
                raise ValueError(f"{path}:{lineno}: expected 'sentence<TAB>0|1', got {line[-40:]!r}")
            yield lineno, {"idx": lineno - 1, "sentence": sentence.strip(), "label": int(label)}


def mr_split_indices(n: int) -> dict[str, np.ndarray]:
    """The fixed seeded 90/10 train/test split of MR's ``n`` sentences (negatives first, then positives)."""
    perm = np.random.default_rng(MR_SPLIT_SEED).permutation(n)
    n_test = int(round(n * MR_TEST_FRACTION))
    return {"test": np.sort(perm[:n_test]), "train": np.sort(perm[n_test:])}


class GeckoMr(_LocalBuilder):
    """MR (Pang & Lee sentence polarity) from ``rt-polarity.{neg,pos}`` (latin-1), fixed seeded 90/10 split."""

    name = "gecko_mr"

    def _info(self):
        return self._make_info(_text_features(), supervised_keys=("sentence", "label"),
                               description=f"MR polarity, seeded split (seed {MR_SPLIT_SEED}, "
                                           f"test fraction {MR_TEST_FRACTION}).")

    def _read_all(self):
        rows = []
        for label, fname in ((0, "rt-polarity.neg"), (1, "rt-polarity.pos")):
            path = _require(self.source_dir / fname, "one latin-1 sentence per line")
            with open(path, encoding="latin-1") as f:
                rows.extend((line.strip(), label) for line in f if line.strip())
        return rows

    def _split_generators(self, dl_manager):
        rows = self._read_all()
        idx = mr_split_indices(len(rows))
        return {s: self._generate_examples(rows, idx[s]) for s in ("train", "test")}

    def _generate_examples(self, rows, indices):
        for i in indices:
            sentence, label = rows[int(i)]
            yield int(i), {"idx": int(i), "sentence": sentence, "label": label}


BUILDERS = {"mnist": GeckoMnist, "cifar10": GeckoCifar10, "sst2": GeckoSst2, "mr": GeckoMr}

"""tfds loaders without TensorFlow: local builders over ../shared/data, the upstream tfds path, label noise."""
from __future__ import annotations

import io
import json
import pathlib
import shutil
import sys
import tarfile

import numpy as np
import pytest

from gecko_jax.data import tfds_local
from gecko_jax.data.tfds_builders import CIFAR10_CLASSES, read_idx


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data):
    # One preparation per test module (a few seconds per dataset); tests read through it.
    return tmp_path_factory.mktemp("tfds")


def _load(name, split, data_dir, shared_data, **kw):
    return tfds_local.load_split(name, split, data_dir=data_dir, source_root=shared_data, **kw)


def test_mnist_local_matches_idx_files_row_by_row(data_dir, shared_data):
    test = _load("mnist", "test", data_dir, shared_data)
    assert set(test) == {"image", "label"}
    assert test["image"].shape == (10000, 28, 28, 1) and test["image"].dtype == np.uint8
    assert test["label"].shape == (10000,) and test["label"].dtype == np.int32
    raw_x = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    raw_y = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(test["image"][..., 0], raw_x)
    np.testing.assert_array_equal(test["label"], raw_y)
    builder = tfds_local.prepare("mnist", data_dir=data_dir, source_root=shared_data)
    assert builder.info.splits["train"].num_examples == 60000
    assert builder.info.file_format.value == "array_record"
    # The whole path, preparation included, must not need TensorFlow.
    assert "tensorflow" not in sys.modules


def test_array_cache_equals_data_source_read(data_dir, shared_data):
    direct = _load("mnist", "test[:300]", data_dir, shared_data, cache_arrays=False)
    cached1 = _load("mnist", "test[:300]", data_dir, shared_data)       # writes the .npz
    cached2 = _load("mnist", "test[:300]", data_dir, shared_data)       # reads it back
    assert direct["image"].shape == (300, 28, 28, 1)
    for out in (cached1, cached2):
        np.testing.assert_array_equal(out["image"], direct["image"])
        np.testing.assert_array_equal(out["label"], direct["label"])
        assert out["label"].dtype == np.int32
    assert list((data_dir / "gecko_arrays").rglob("test_300_.npz"))


def test_cifar10_local_decodes_the_jpegs(data_dir, shared_data):
    test = _load("cifar10", "test", data_dir, shared_data)
    assert test["image"].shape == (10000, 32, 32, 3) and test["image"].dtype == np.uint8
    assert test["label"].dtype == np.int32
    np.testing.assert_array_equal(np.bincount(test["label"], minlength=10), np.full(10, 1000))
    from PIL import Image

    with tarfile.open(shared_data / "cifar10_jpg" / "cifar10_test_jpg.tar.gz", "r:gz") as tar:
        members = [m for m in tar if m.isfile() and m.name.endswith(".jpg")]
        for row in (0, len(members) - 1):
            m = members[row]
            expected = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
            np.testing.assert_array_equal(test["image"][row], expected)
            assert CIFAR10_CLASSES[test["label"][row]] == m.name.split("/")[1]
    builder = tfds_local.prepare("cifar10", data_dir=data_dir, source_root=shared_data)
    assert builder.info.splits["train"].num_examples == 50000


def test_sst2_local_splits_and_text(data_dir, shared_data):
    sizes = {"train": 67349, "validation": 872, "test": 1821}
    for split, n in sizes.items():
        d = _load("sst2", split, data_dir, shared_data)
        assert set(d) == {"text", "label"}
        assert isinstance(d["text"], list) and len(d["text"]) == n and all(isinstance(t, str) for t in d["text"])
        assert d["label"].dtype == np.int32 and set(np.unique(d["label"])) == {0, 1}
    first = (shared_data / "sst2_senteval" / "sentiment-test").read_text(encoding="utf-8").splitlines()[0]
    sentence, label = first.rsplit("\t", 1)
    d = _load("sst2", "test", data_dir, shared_data)
    assert d["text"][0] == sentence.strip() and d["label"][0] == int(label)


def test_mr_fixed_seeded_split(data_dir, shared_data):
    train = _load("mr", "train", data_dir, shared_data)
    test = _load("mr", "test", data_dir, shared_data)
    assert len(train["text"]) + len(test["text"]) == 10662
    assert len(test["text"]) == 1066
    pos = {line.strip() for line in (shared_data / "mr" / "rt-polarity.pos").read_text("latin-1").splitlines()}
    for text, label in zip(test["text"][:50], test["label"][:50]):
        assert (text in pos) == (label == 1)
    # Fixed split: a fresh preparation elsewhere gives the same test rows.
    other = tfds_local.load_split("mr", "test", data_dir=data_dir / "again", source_root=shared_data)
    assert other["text"] == test["text"]
    assert abs(train["label"].mean() - 0.5) < 0.02


def test_tfds_source_reads_an_upstream_array_record_dir(data_dir, shared_data, tmp_path):
    """source="tfds" goes through upstream tfds code (tfds.data_source('mnist')): fed an array_record copy in the
    upstream layout (the MNIST copy is lossless), it returns exactly what the local path returns."""
    import tensorflow_datasets as tfds

    builder = tfds_local.prepare("mnist", data_dir=data_dir, source_root=shared_data)
    version = str(tfds.builder("mnist").version)
    dst = tmp_path / "mnist" / version
    dst.mkdir(parents=True)
    for f in pathlib.Path(builder.data_dir).iterdir():
        shutil.copy(f, dst / f.name.replace("gecko_mnist", "mnist"))
    info = json.loads((dst / "dataset_info.json").read_text())
    info.update(name="mnist", version=version)
    (dst / "dataset_info.json").write_text(json.dumps(info))
    upstream = tfds_local.load_split("mnist", "test", source="tfds", data_dir=tmp_path, cache_arrays=False)
    local = _load("mnist", "test", data_dir, shared_data)
    assert set(upstream) == set(local)
    for k in local:
        assert upstream[k].dtype == local[k].dtype and upstream[k].shape == local[k].shape
        np.testing.assert_array_equal(upstream[k], local[k])


def test_bad_arguments_name_what_was_expected(data_dir, shared_data, tmp_path):
    with pytest.raises(ValueError, match="name='svhn'"):
        tfds_local.load_split("svhn", "train", data_dir=data_dir)
    with pytest.raises(ValueError, match="split='dev'.*validation"):
        tfds_local.load_split("sst2", "dev", data_dir=data_dir)
    with pytest.raises(ValueError, match="source='hub'"):
        tfds_local.load_split("mnist", "test", data_dir=data_dir, source="hub")
    with pytest.raises(ValueError, match="no upstream tfds dataset"):
        tfds_local.load_split("mr", "test", source="tfds")
    with pytest.raises(FileNotFoundError, match="rt-polarity.neg"):
        tfds_local.load_split("mr", "test", data_dir=tmp_path / "d", source_root=tmp_path / "nowhere")


def test_noisy_split_mask_is_consistent_and_seeded(data_dir, shared_data):
    kw = dict(data_dir=data_dir, source_root=shared_data, subset=4000)
    clean = _load("mnist", "test", data_dir, shared_data)
    a = tfds_local.load_noisy_split("mnist", "test", noise_type="symmetric", noise_rate=0.4, seed=3, **kw)
    assert a["image"].shape == (4000, 28, 28, 1) and a["label"].dtype == np.int32
    np.testing.assert_array_equal(a["clean_label"], clean["label"][a["index"]])
    np.testing.assert_array_equal(a["image"], clean["image"][a["index"]])
    np.testing.assert_array_equal(a["corrupted"], a["label"] != a["clean_label"])
    assert abs(a["corrupted"].mean() - 0.4) < 0.03           # binomial sd at n=4000 is 0.008
    assert a["label"].min() >= 0 and a["label"].max() < 10
    b = tfds_local.load_noisy_split("mnist", "test", noise_type="symmetric", noise_rate=0.4, seed=3, **kw)
    c = tfds_local.load_noisy_split("mnist", "test", noise_type="symmetric", noise_rate=0.4, seed=4, **kw)
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["index"], c["index"])     # the subset does not depend on the noise seed
    assert (a["label"] != c["label"]).any()
    pf = tfds_local.load_noisy_split("mnist", "test", noise_type="pairflip", noise_rate=0.3, seed=0, **kw)
    m = pf["corrupted"]
    np.testing.assert_array_equal(pf["label"][m], (pf["clean_label"][m] + 1) % 10)
    none = tfds_local.load_noisy_split("mnist", "test", noise_type="none", noise_rate=0.0, seed=0, **kw)
    assert not none["corrupted"].any()
    text = tfds_local.load_noisy_split("mr", "train", noise_type="symmetric", noise_rate=0.2, seed=0,
                                       data_dir=data_dir, source_root=shared_data)
    assert len(text["text"]) == len(text["label"]) == 9596
    np.testing.assert_array_equal(text["corrupted"], text["label"] != text["clean_label"])
    with pytest.raises(ValueError, match="noise_type='uniform'"):
        tfds_local.load_noisy_split("mnist", "test", noise_type="uniform", noise_rate=0.2, seed=0, **kw)


def test_concurrent_preparation_of_one_dataset(shared_data, tmp_path):
    """Two processes preparing the same dataset at once (two experiments started together) both succeed."""
    import subprocess

    code = ("import sys; from gecko_jax.data import tfds_local as t; "
            "d = t.load_split('mr', 'test', data_dir=sys.argv[1], source_root=sys.argv[2], cache_arrays=False); "
            "print(len(d['text']))")
    root = pathlib.Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(shared_data)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "1066"


def test_cifar10_original_binary_batches_decode_losslessly(tmp_path):
    """A download of CIFAR-10 is the original binary tarball (records: 1 label byte + 3,072 CHW bytes); the binary
    builder reads it and the images come back bit-exact (PNG, not JPEG)."""
    rng = np.random.default_rng(0)
    batches, expected = {}, {"train": [], "test": []}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, size=2, dtype=np.uint8)
        chw = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
        batches[name] = np.concatenate([labels[:, None], chw.reshape(2, -1)], axis=1).tobytes()
        split = "test" if name == "test_batch.bin" else "train"
        expected[split] += [(chw[i].transpose(1, 2, 0), int(labels[i])) for i in range(2)]
    folder = tmp_path / "raw" / "cifar10_jpg"        # an explicit root in the mirror layout
    folder.mkdir(parents=True)
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for name, data in batches.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for split in ("train", "test"):
        got = tfds_local.load_split("cifar10", split, data_dir=tmp_path / "tfds", source_root=tmp_path / "raw",
                                    cache_arrays=False)
        assert got["image"].shape == (len(expected[split]), 32, 32, 3)
        for i, (img, lab) in enumerate(expected[split]):
            np.testing.assert_array_equal(got["image"][i], img)
            assert got["label"][i] == lab
    assert (tmp_path / "tfds" / "gecko_cifar10_binary").is_dir()   # never mixed with the JPEG mirror's copy

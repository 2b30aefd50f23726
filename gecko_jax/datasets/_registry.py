"""The datasets gecko_jax uses, each with its canonical public source, checksums, licence and local layout.

Checksums: ``sha256`` pins an exact download. Pins come from a published value (BEIR's table for the SciFact zip,
tensorflow-datasets' ``url_checksums`` for MNIST and CIFAR-10); a file without one is checked against the digest
recorded in the cache manifest at its first download ("recorded", trust on first use), and ``gecko-jax datasets
list`` says which is which. Every prepared folder is also checked for its expected files before it is used.
"""
from __future__ import annotations

import dataclasses

_BEIR = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets"
_GITHUB = "https://raw.githubusercontent.com"
_CVDF = "https://storage.googleapis.com/cvdf-datasets/mnist"


@dataclasses.dataclass(frozen=True)
class Remote:
    """One file of a source.

    Attributes:
      url: for ``kind="url"`` sources, the HTTP(S) address; for ``kind="hub"``, the path inside the repository.
      dest: where the file goes in the dataset folder (plain files) or ``None`` for an archive (see ``members``).
      members: archive member -> destination path in the dataset folder (zip or tar.gz).
      sha256: pinned digest of the downloaded bytes, or ``None`` (recorded at first download).
      md5: a published MD5 checked as well, when there is one.
      size: expected size in bytes (progress bar total and a first check), when known.
    """

    url: str
    dest: str | None = None
    members: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a dataset comes from.

    Attributes:
      id: short name used by ``fetch(name, source=id)`` (``"upstream"``, ``"hub"``).
      kind: ``"url"`` (plain HTTP(S) downloads) or ``"hub"`` (a Hugging Face Hub dataset repository through
        ``huggingface_hub``, honouring ``HF_ENDPOINT`` and the Hub cache).
      files: the files to get.
      repo_id / revision: Hub repository and pinned revision (``kind="hub"``).
      convert: name of a conversion step run after download (``"snli_senteval"``), or ``None``.
      layout: files the prepared folder must hold (defaults to the dataset's ``files``).
      note: what this source is, for ``datasets list`` and error messages.
    """

    id: str
    kind: str
    files: tuple[Remote, ...]
    repo_id: str | None = None
    revision: str | None = None
    convert: str | None = None
    layout: tuple[str, ...] | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset by name.

    Attributes:
      name: the name used everywhere (``load("scifact")``, ``gecko-jax datasets fetch scifact``).
      folder: its folder in the mirror layout (``$GECKO_JAX_DATA/<folder>``, the layout of ``../shared/data``).
      files: files a folder of this dataset must hold (mirror layout); readers need them.
      licence: the dataset's own licence.
      size_mb: approximate download size.
      description: one line.
      sources: where to download it from, preferred first.
    """

    name: str
    folder: str
    files: tuple[str, ...]
    licence: str
    size_mb: float
    description: str
    sources: tuple[Source, ...]

    def source(self, source_id: str | None = None) -> Source:
        if source_id is None:
            return self.sources[0]
        for s in self.sources:
            if s.id == source_id:
                return s
        raise ValueError(f"{self.name}: unknown source {source_id!r}; expected one of {[s.id for s in self.sources]}")


_SEAT_TESTS = (
    "angry_black_woman_stereotype", "angry_black_woman_stereotype_b", "heilman_double_bind_competent_1+3-",
    "heilman_double_bind_competent_1-", "heilman_double_bind_competent_1", "heilman_double_bind_competent_one_sentence",
    "heilman_double_bind_competent_one_word", "heilman_double_bind_likable_1+3-", "heilman_double_bind_likable_1-",
    "heilman_double_bind_likable_1", "heilman_double_bind_likable_one_sentence", "heilman_double_bind_likable_one_word",
    "sent-angry_black_woman_stereotype", "sent-angry_black_woman_stereotype_b",
    "sent-heilman_double_bind_competent_one_word", "sent-heilman_double_bind_likable_one_word", "sent-religion1",
    "sent-religion1b", "sent-religion2", "sent-religion2b", "sent-weat1", "sent-weat10", "sent-weat2", "sent-weat3",
    "sent-weat3b", "sent-weat4", "sent-weat5", "sent-weat5b", "sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b",
    "sent-weat8", "sent-weat8b", "sent-weat9", "weat1", "weat10", "weat2", "weat3", "weat3b", "weat4", "weat5",
    "weat5b", "weat6", "weat6b", "weat7", "weat7b", "weat8", "weat8b", "weat9")

_SCIFACT_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv")
_MNIST_FILES = (("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                 9912422),
                ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                 28881),
                ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                 1648877),
                ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542))

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "scifact", "scifact", _SCIFACT_FILES, "CC BY-NC 2.0 (non-commercial)", 2.8,
        "SciFact in BEIR layout: 5,183 abstracts, 1,109 claims, qrels train/test",
        (Source("upstream", "url", (Remote(
            f"{_BEIR}/scifact.zip", members=tuple((f"scifact/{f}", f) for f in _SCIFACT_FILES),
            sha256="536e14446a0ba56ed1398ab1055f39fe852686ecad24a6306c80c490fa8e0165",
            md5="5f7d1de60b170fc8027bb7898e2efca1", size=2816079),), note="the BEIR zip"),
         Source("hub", "hub", tuple(Remote(f, dest=f) for f in _SCIFACT_FILES), repo_id="mteb/scifact",
                revision="0228b52cf27578f30900b9e5271d331663a030d7",
                note="the Hub dataset repository mteb/scifact at the revision mteb 1.x pinned"))),
    Dataset(
        "stsb", "stsb", ("sts-train.csv", "sts-dev.csv", "sts-test.csv"),
        "scores CC BY-SA 4.0; sentences per the benchmark's LICENSE.txt", 0.4,
        "STS Benchmark 2017: train 5,749 / dev 1,500 / test 1,379 pairs, similarity 0-5",
        (Source("upstream", "url", (Remote(
            "http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
            members=tuple((f"stsbenchmark/{f}", f) for f in ("sts-train.csv", "sts-dev.csv", "sts-test.csv",
                                                              "readme.txt", "LICENSE.txt"))),),
                note="the benchmark's own tarball"),)),
    Dataset(
        "banking77", "banking77", ("train.csv", "test.csv"), "CC BY 4.0", 1.1,
        "Banking77 intents: train 10,003 / test 3,080, 77 classes",
        (Source("upstream", "url", tuple(
            Remote(f"{_GITHUB}/PolyAI-LDN/task-specific-datasets/master/banking_data/{f}", dest=f)
            for f in ("train.csv", "test.csv", "categories.json")), note="PolyAI's repository"),)),
    Dataset(
        "ag_news", "ag_news", ("test.csv", "classes.txt"), "academic use (non-commercial)", 11.8,
        "AG News test split (7,600 rows, 4 classes); the train split is not kept",
        (Source("upstream", "url", (Remote(
            "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz",
            members=tuple((f"ag_news_csv/{f}", f) for f in ("test.csv", "classes.txt", "readme.txt"))),),
                note="the ag_news_csv archive (fast.ai's copy of Zhang et al.'s release)"),)),
    Dataset(
        "sst2", "sst2_senteval", ("sentiment-train", "sentiment-dev", "sentiment-test"), "research use", 4.0,
        "SST-2 as SentEval ships it: train 67,349 / dev 872 / test 1,821",
        (Source("upstream", "url", tuple(
            Remote(f"{_GITHUB}/PrincetonML/SIF/master/data/sentiment-{s}", dest=f"sentiment-{s}")
            for s in ("train", "dev", "test")), note="the files SentEval downloads"),)),
    Dataset(
        "mr", "mr", ("rt-polarity.neg", "rt-polarity.pos"), "research use", 0.5,
        "MR movie-review polarity: 5,331 + 5,331 sentences",
        (Source("upstream", "url", (Remote(
            "https://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
            members=tuple((f"rt-polaritydata/{f}", f) for f in ("rt-polarity.neg", "rt-polarity.pos"))),),
                note="Pang & Lee's sentence polarity dataset v1.0"),)),
    Dataset(
        "mnist", "mnist", tuple(f for f, _, _ in _MNIST_FILES), "CC BY-SA 3.0", 11.1,
        "MNIST 60,000 / 10,000 (IDX files)",
        (Source("upstream", "url", tuple(Remote(f"{_CVDF}/{f}", dest=f, sha256=h, size=n) for f, h, n in _MNIST_FILES),
                note="the mirror tensorflow-datasets downloads, with its checksums"),)),
    Dataset(
        "cifar10", "cifar10_jpg", ("cifar10_train_jpg.tar.gz", "cifar10_test_jpg.tar.gz"),
        "no licence stated; cite Krizhevsky 2009", 170.1,
        "CIFAR-10 50,000 / 10,000 (mirror: a JPEG re-encode; download: the original binary batches)",
        (Source("upstream", "url", (Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", dest="cifar-10-binary.tar.gz",
            sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", size=170052171),),
                layout=("cifar-10-binary.tar.gz",),
                note="the original binary version, with tensorflow-datasets' checksum"),)),
    Dataset(
        "seat", "seat", tuple(f"{t}.jsonl" for t in _SEAT_TESTS) + ("bias_attribute_words.json",),
        "CC BY-NC 4.0 (non-commercial)", 0.5,
        "SEAT / WEAT bias tests and bias-bench's gendered word pairs",
        (Source("upstream", "url", tuple(
            Remote(f"{_GITHUB}/W4ngatang/sent-bias/master/tests/{t}.jsonl", dest=f"{t}.jsonl") for t in _SEAT_TESTS)
            + (Remote(f"{_GITHUB}/McGill-NLP/bias-bench/main/data/bias_attribute_words.json",
                      dest="bias_attribute_words.json"),),
                note="the sent-bias tests and bias-bench's word list"),)),
    Dataset(
        "crows_pairs", "crows_pairs", ("crows_pairs_anonymized.csv",), "CC BY-SA 4.0", 0.4,
        "CrowS-Pairs: 1,508 sentence pairs (262 gender)",
        (Source("upstream", "url", (Remote(f"{_GITHUB}/nyu-mll/crows-pairs/master/data/crows_pairs_anonymized.csv",
                                           dest="crows_pairs_anonymized.csv"),), note="the authors' repository"),)),
    Dataset(
        "snli", "snli_senteval", ("s1.dev", "s2.dev", "labels.dev", "s1.test", "s2.test", "labels.test"),
        "CC BY-SA 4.0", 94.6,
        "SNLI 1.0 dev + test pairs in SentEval's layout (s1/s2/labels, tokenised)",
        (Source("upstream", "url", (Remote(
            "https://nlp.stanford.edu/projects/snli/snli_1.0.zip",
            members=(("snli_1.0/snli_1.0_dev.txt", "snli_1.0_dev.txt"),
                     ("snli_1.0/snli_1.0_test.txt", "snli_1.0_test.txt"))),),
                convert="snli_senteval",
                note="the SNLI 1.0 zip; tokens from its binary parses, pairs without a gold label dropped"),)),
)}

FOLDERS: dict[str, str] = {d.folder: d.name for d in DATASETS.values()}

"""The MNIST-format data sets `lenet` knows by name (DATASETS: mnist (LeCun, Cortes,
Burges), fashion-mnist (Xiao, Rasul, Vollgraf 2017), kmnist (Clanuwat et al. 2018),
emnist-digits (Cohen et al. 2017), qmnist (Yadav, Bottou 2019)) with their official
files: each file's published name, size and SHA-256 (TensorFlow Datasets'
url_checksums/<name>.txt) and, where known, the SHA-256 of its decompressed content
(computed here from published files that match those checksums, never taken on trust;
None where unknown: such a file is checked by its structure and counts only).
lenet/data.py reads, checks and downloads them.
"""

from dataclasses import dataclass

DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class File:
    name: str                      # as published, e.g. "train-images-idx3-ubyte.gz"
    size: int | None               # bytes of the published file (None: inside an archive)
    sha256: str | None             # of the published file
    raw_sha256: str | None = None  # of its decompressed content, where known


@dataclass(frozen=True)
class Archive:
    """One published archive (zip) whose members are the data set's files."""
    name: str
    size: int
    sha256: str
    urls: tuple[str, ...]
    members: dict[str, str]        # our file name -> its path inside the archive


@dataclass(frozen=True)
class Dataset:
    name: str                      # the --dataset value
    title: str                     # for messages and pictures
    noun: str                      # what one image shows: "digit", "image", "character"
    classes: tuple[str, ...]       # class names, label order
    counts: dict[str, int]         # split -> number of images
    files: dict[tuple[str, str], File]  # (split, "images" | "labels") -> file
    mirrors: tuple[str, ...] = ()  # base URLs serving each file under its name
    archive: Archive | None = None  # or: the files come inside this archive
    transposed: bool = False       # images stored column by column (EMNIST)
    system_dirs: tuple[str, ...] = ()  # where OS packages install it


def _files(names_sizes_sums):
    keys = [("train", "images"), ("train", "labels"), ("test", "images"), ("test", "labels")]
    return {key: File(*row) for key, row in zip(keys, names_sizes_sums, strict=True)}


# Published sizes and SHA-256: TFDS url_checksums/mnist.txt. Decompressed SHA-256: of
# t10k-images, t10k-labels and train-labels, computed from published .gz files that
# match TFDS's checksums (MD5s as torchvision lists them); of train-images, the value
# every MNIST copy we have decompresses to (../shared/data/mnist, recompressed), which
# we could not check against a published .gz here.
MNIST = Dataset(
    "mnist", "MNIST", "digit", DIGITS, {"train": 60000, "test": 10000},
    _files([
        ("train-images-idx3-ubyte.gz", 9912422,
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
         "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        ("train-labels-idx1-ubyte.gz", 28881,
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        ("t10k-images-idx3-ubyte.gz", 1648877,
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        ("t10k-labels-idx1-ubyte.gz", 4542,
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ]),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
)

# Published sizes and SHA-256: TFDS url_checksums/fashion_mnist.txt. Decompressed
# SHA-256: of Debian's dataset-fashion-mnist files, which are the published .gz files
# with the gzip header's file name left out and another time stamp: put back, they
# match TFDS's checksums (tests/test_data.py checks this where the package is installed).
# Class names: the Fashion-MNIST README.
FASHION_MNIST = Dataset(
    "fashion-mnist", "Fashion-MNIST", "image",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
     "Bag", "Ankle boot"),
    {"train": 60000, "test": 10000},
    _files([
        ("train-images-idx3-ubyte.gz", 26421880,
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
         "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        ("train-labels-idx1-ubyte.gz", 29515,
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
         "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        ("t10k-images-idx3-ubyte.gz", 4422102,
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
         "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        ("t10k-labels-idx1-ubyte.gz", 5148,
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
         "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ]),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
             "data/fashion/"),
    system_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist
)

# Published sizes and SHA-256: TFDS url_checksums/kmnist.txt. No SHA-256 of the
# decompressed files is published, and the files could not be obtained here: a
# decompressed or recompressed copy is checked by structure and counts only.
# Class names: torchvision's KMNIST (romanised; the README gives the hiragana).
KMNIST = Dataset(
    "kmnist", "Kuzushiji-MNIST", "character",
    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    {"train": 60000, "test": 10000},
    _files([
        ("train-images-idx3-ubyte.gz", 18165135,
         "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4"),
        ("train-labels-idx1-ubyte.gz", 29497,
         "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17"),
        ("t10k-images-idx3-ubyte.gz", 3041136,
         "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5"),
        ("t10k-labels-idx1-ubyte.gz", 5120,
         "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"),
    ]),
    mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
)

# EMNIST is published as one archive of every EMNIST split: its size and SHA-256 are
# TFDS url_checksums/emnist.txt (torchvision's MD5 58c8d27c78d21e728a6bc7b3cc06412e,
# from biometrics.nist.gov). No checksum of the files inside is published and the
# archive could not be obtained here: the four Digits files are checked by structure
# and counts only. Images are stored transposed (TFDS: "inverted horizontally and
# rotated 90 anti-clockwise"); loading transposes them back.
_EMNIST_DIGITS_FILES = ("emnist-digits-train-images-idx3-ubyte.gz",
                        "emnist-digits-train-labels-idx1-ubyte.gz",
                        "emnist-digits-test-images-idx3-ubyte.gz",
                        "emnist-digits-test-labels-idx1-ubyte.gz")
EMNIST_DIGITS = Dataset(
    "emnist-digits", "EMNIST Digits", "digit", DIGITS, {"train": 240000, "test": 40000},
    _files([(name, None, None) for name in _EMNIST_DIGITS_FILES]),
    archive=Archive(
        "gzip.zip", 561753746,
        "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
        ("https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip",
         "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"),
        {name: "gzip/" + name for name in _EMNIST_DIGITS_FILES}),
    transposed=True,
)

# Published sizes and SHA-256: TFDS url_checksums/qmnist.txt. Decompressed SHA-256 of
# the two label files: computed from the published files (github.com/facebookresearch/
# qmnist), which match TFDS's checksums. The image files could not be obtained here and
# no decompressed checksum is published: a decompressed or recompressed copy is checked
# by structure and counts only. The test split is QMNIST's full 60,000 (its first
# 10,000 are MNIST's test set).
QMNIST = Dataset(
    "qmnist", "QMNIST", "digit", DIGITS, {"train": 60000, "test": 60000},
    _files([
        ("qmnist-train-images-idx3-ubyte.gz", 9704059,
         "9e26a7bf1683614e065d7b76460ccd52807165b3f22561fb782bd9f38c52b51d"),
        ("qmnist-train-labels-idx2-int.gz", 463024,
         "2c05dc77f6b916b38e455e97ab129a42a444f3dbef09b278a366f82904e0dd9f",
         "bb1b6e1ec7b04fd5696f1ed50b5f58f8ef195118edd5c93c81783df9740b8ac5"),
        ("qmnist-test-images-idx3-ubyte.gz", 9742279,
         "43fc22bf7498b8fc98de98369d72f752d0deabc280a43a7bcc364ab19e57b375"),
        ("qmnist-test-labels-idx2-int.gz", 526800,
         "9fbcbe594c3766fdf4f0b15c5165dc0d1e57ac604e01422608bb72c906030d06",
         "92d0ccb8c25f9c6534270fb4be7e1d24a1c6d315edfc8a638bfbd31c70f362dd"),
    ]),
    mirrors=("https://raw.githubusercontent.com/facebookresearch/qmnist/master/",),
)

DATASETS = {d.name: d for d in (MNIST, FASHION_MNIST, KMNIST, EMNIST_DIGITS, QMNIST)}

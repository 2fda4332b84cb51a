"""`from_tfds`: a TensorFlow Datasets data set the machine already holds (offline by default) as a TaskData."""

import numpy as np
import tensorflow as tf

from kerasft.data.assemble import assemble
from kerasft.data.errors import DataError
from kerasft.data.readers import check_image_size, decode_text
from kerasft.data.splits import SPLITS, check_fractions
from kerasft.data.task_data import CleaningReport, content_digest


def from_tfds(name, data_dir=None, split=None, download=False, image_size=None,
              validation_split=0.15, test_split=0.15, seed=0, deduplicate=True,
              input_key=None, label_key=None):
    """Makes a TaskData from a TensorFlow Datasets data set, offline by default.

    Uses `tfds.builder(name, data_dir=data_dir)`. A data set that is not
    prepared there raises unless `download=True`. The data set's own train /
    validation / test splits are used where it has them; missing ones are
    carved (stratified) from train. Fixed-shape images (MNIST) are held in
    memory; variable-size images (tf_flowers) are held encoded and decoded in
    `tf.data`.

    Args:
        name: str. The TFDS name, e.g. "tf_flowers" or "imdb_reviews".
        data_dir: str or None. Where TFDS keeps data (None: its default).
        split: None, str or dict. None uses the data set's splits; a TFDS split
            string (e.g. "train[:10%]") is split here; a dict maps "train",
            "validation", "test" to TFDS split strings.
        download: bool. Download and prepare the data set if missing.
        image_size: tuple of int or None. (height, width) to resize images to.
        validation_split: float. Fraction carved for validation when needed.
        test_split: float. Fraction carved for test when needed.
        seed: int. Seed of the split.
        deduplicate: bool. Drop exact duplicates (train copies of eval examples).
        input_key: str or None. Feature holding the input; default from the
            data set's supervised keys.
        label_key: str or None. Feature holding the label; likewise.

    Example:

    ```python
    data = kerasft.data.from_tfds("tf_flowers", data_dir="~/tensorflow_datasets",
                                  image_size=(224, 224))
    ```
    """
    import tensorflow_datasets as tfds  # Imported on use: 0.5 s that most users never need.

    check_fractions(validation_split, test_split)
    image_size = check_image_size(image_size)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise DataError(
                f"TFDS data set {name!r} is not prepared in {str(builder.data_dir)!r}. "
                "Pass data_dir= where it is, or download=True to fetch it (needs internet)."
            )
        builder.download_and_prepare()
    info = builder.info
    input_key, label_key = _tfds_keys(info, input_key, label_key)
    input_feature, label_feature = info.features[input_key], info.features[label_key]
    if isinstance(input_feature, tfds.features.Image):
        modality = "image"
        input_kind = "pixels" if None not in input_feature.shape else "encoded"
    elif isinstance(input_feature, tfds.features.Text):
        modality, input_kind = "text", "text"
    else:
        raise DataError(f"Feature {input_key!r} of {name!r} is a {type(input_feature).__name__}. "
                        "Expected an Image or Text feature.")
    if isinstance(label_feature, tfds.features.ClassLabel):
        class_names, task = list(label_feature.names), None
    elif label_feature.shape == () and tf.as_dtype(label_feature.dtype).is_floating:
        class_names, task = None, "regression"
    else:
        raise DataError(f"Label feature {label_key!r} of {name!r} is {label_feature}. "
                        "Expected a ClassLabel or a float scalar.")
    roles = _tfds_roles(split, list(info.splits), name)
    decoders = {input_key: tfds.decode.SkipDecoding()} if input_kind == "encoded" else None
    report = CleaningReport()
    inputs, labels, split_of, origins = [], [], [], []
    for role, tfds_split in roles.items():
        ds = builder.as_dataset(split=tfds_split, decoders=decoders)
        ds = ds.map(lambda ex: (ex[input_key], ex[label_key])).batch(1024)
        count = 0
        for x, y in ds.as_numpy_iterator():
            inputs += list(x)
            labels.append(y)
            count += len(y)
        split_of += [role] * count
        origins += [f"{tfds_split}[{i}]" for i in range(count)]
    if input_kind == "text":
        decoded = [decode_text(raw, None) for raw in inputs]
        report.skipped = [(origins[i], why) for i, (_, why) in enumerate(decoded) if why]
        keep = [i for i, (text, _) in enumerate(decoded) if text is not None]
        inputs = np.array([decoded[i][0] for i in keep], dtype=object)
        digests = np.array([content_digest(t.encode("utf-8")) for t in inputs])
    else:
        keep = range(len(inputs))
        inputs = np.stack(inputs) if input_kind == "pixels" else np.array(inputs, dtype=object)
        digests = np.array([content_digest(x if input_kind == "encoded" else x.tobytes())
                            for x in inputs])
    labels = np.concatenate(labels)[list(keep)] if labels else np.array([], int)
    split_of = np.array(split_of)[list(keep)]
    return assemble(
        name=name, modality=modality, input_kind=input_kind, inputs=inputs, digests=digests,
        raw_labels=labels.astype(np.float32 if task == "regression" else np.int64),
        split_of=None if list(roles) == ["all"] else split_of,
        where=lambda i: origins[keep[i]], class_names=class_names, task=task,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=True, image_size=image_size, report=report)


def _tfds_keys(info, input_key, label_key):
    if input_key and label_key:
        keys = (input_key, label_key)
    elif info.supervised_keys and len(info.supervised_keys) == 2:
        keys = (input_key or info.supervised_keys[0], label_key or info.supervised_keys[1])
    else:
        raise DataError(f"{info.name!r} has no supervised keys. Pass input_key= and label_key= "
                        f"from its features: {list(info.features)}")
    missing = [k for k in keys if k not in info.features]
    if missing:
        raise DataError(f"Features {missing} are not in {info.name!r}. "
                        f"Received features: {list(info.features)}")
    return keys


def _tfds_roles(split, available, name):
    """Maps our split roles to TFDS split strings."""
    if isinstance(split, str):
        return {"all": split}
    if isinstance(split, dict):
        unknown = set(split) - set(SPLITS)
        if unknown or "train" not in split:
            raise DataError(f"split= as a dict maps 'train' (required), 'validation', 'test' "
                            f"to TFDS splits. Received keys: {sorted(split)}")
        return dict(split)
    if split is not None:
        raise DataError(f"split must be None, a str or a dict. Received: {split!r}")
    if "train" not in available:
        raise DataError(f"{name!r} has no 'train' split. Pass split= (e.g. a dict of "
                        f"'train'/'validation'/'test'). Received splits: {available}")
    roles = {"train": "train"}
    for candidate in ("validation", "val", "dev"):
        if candidate in available:
            roles["validation"] = candidate
            break
    if "test" in available:
        roles["test"] = "test"
    return roles

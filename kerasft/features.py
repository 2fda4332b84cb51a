"""Input pipelines and feature caches: preprocessing mapped over tf.data once, frozen bottoms computed once.

Preprocessing (tokenizing, resizing) runs in parallel inside `tf.data`,
batched, then the result is cached so later epochs reuse it instead of
recomputing it serially inside every train step. Long texts are tokenized
from their head only, with the ids of the full text (`kerasft.tokenizing`).

A classifier's network splits at a **cut** into a bottom that never changes
and a top that trains (`split_network`):

```
cut       bottom (frozen, computed once)          top (trained)
"frozen"  backbone + pooling -> {"features"}      "head"
"top:N"   backbone below its top N blocks ->      "backbone" (the top N blocks) + "pooling" + "head"
          {"activations", and "padding_mask" for text}
```
`FeatureCache` runs the bottoms of several cuts in one pass over a TaskData's
train and validation splits and keeps what they output, in memory or on disk,
keyed by (model, backbone architecture and weights, cut, data fingerprint,
preprocessing); a disk cache whose key differs is rebuilt, never reused.
Augmentation changes the bottom's input on every pass, so it cannot use a
cache: it belongs to the recomputed path (`Bottom.map`).
"""

import hashlib
import json
import logging
import os
import time
import warnings
import weakref
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasft import backbones, caching, keras_internals, models, paths, tokenizing

# Bumped when the on-disk layout of a feature cache changes.
_CACHE_FORMAT = 2
# Examples per preprocessing call inside tf.data.
_PREPROCESS_BATCH = 64
# The most examples a shuffle buffer of raw (decoded) examples holds.
_SHUFFLE_BUFFER = 10_000

logger = logging.getLogger("kerasft.features")


def prefetched(dataset):
    """`dataset` prefetched, with tf.data's autotuning model off: the end of every pipeline kerasft iterates.

    With autotuning on, an iterator starts a thread that re-tunes the pipeline
    every optimization period (growing to 60 s), and the iterator's destructor
    waits for that thread to wake: the end of a Keras `fit` then sat idle for
    25 s and 59 s (caught with gdb: the main thread in
    `RootDataset::Iterator::~Iterator` waiting on `Model::OptimizeLoop`). Without
    it, `num_parallel_calls=tf.data.AUTOTUNE` maps run on every core and
    `prefetch(tf.data.AUTOTUNE)` buffers size themselves as before. Options pass
    downstream, so a pipeline built on this one keeps the setting.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def preprocess(model, dataset, batch_size=32, shuffle=False, seed=None, num_examples=None, cache=True,
               memory_budget=None):
    """Maps a classifier's preprocessor over an unbatched `(raw, label)` dataset, keeping it within a memory budget.

    With `cache=True` the examples are kept for later passes at the first of
    these that fits:

    1. in memory, preprocessed (token ids; pixels at the backbone's size),
       when they fit the memory budget;
    2. in memory, decoded (e.g. uint8 images at the data's size), preprocessed
       again on every pass, when those fit;
    3. on disk in a private folder of kerasft's user cache
       (`kerasft.paths.user_cache_dir("features")`, under its cap), in the
       smaller of the two forms: written in one pass now, read back a batch
       at a time, removed when the dataset is released;
    4. nowhere: read and preprocessed from the source on every pass (when the
       disk has no room either; a warning says so).

    The process then holds at most the budget, plus a few batches and a
    shuffle buffer of raw examples that fits the budget, whatever the number
    of examples.

    Args:
        model: keras.Model. A kerasft classifier.
        dataset: tf.data.Dataset. Unbatched `(raw input, label)` elements.
        batch_size: int. Batch size of the returned dataset.
        shuffle: bool. Reshuffle every epoch (training).
        seed: int or None. Shuffle seed.
        num_examples: int or None. Size of the dataset (default: its cardinality), to choose what to cache.
        cache: bool. Keep the examples for later passes; False for a single pass (nothing is kept).
        memory_budget: float or None. Gigabytes this cache may hold in memory (default
            `$KERASFT_MEMORY_BUDGET_GB`, else a quarter of the machine's memory; see
            `kerasft.caching.memory_budget_bytes`).

    Returns:
        A batched, prefetched `tf.data.Dataset` of `(preprocessed, label)`
        that `model.get_layer("network")` takes.
    """
    preprocessor = model.get_layer("preprocessor")
    transform = tokenizing.head_preprocessor(preprocessor) if _is_text(model) else _image_transform(preprocessor)
    known = int(dataset.cardinality())
    num_examples = num_examples or known

    def apply(x, y):
        return transform(x), y

    preprocessed = dataset.batch(_PREPROCESS_BATCH).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    budget = caching.memory_budget_bytes(memory_budget)
    sizes = {"preprocessed": example_bytes(preprocessed.element_spec, batched=True),
             "decoded": example_bytes(dataset.element_spec, batched=False)}
    fits = {form: size is not None and size * num_examples <= budget for form, size in sizes.items()}
    buffer = shuffle_buffer(sizes["decoded"], num_examples, budget)
    if cache and num_examples > 0 and fits["preprocessed"]:
        ds = preprocessed.unbatch()
        if known >= 0:  # unbatch() forgets the size; Keras' progress bar needs it
            ds = ds.apply(tf.data.experimental.assert_cardinality(known))
        ds = filled_cache(ds)
        if shuffle:
            ds = ds.shuffle(max(num_examples, 1), seed=seed, reshuffle_each_iteration=True)
        return prefetched(ds.batch(batch_size))
    spilled = _spill(dataset, preprocessed, sizes, num_examples) if cache and num_examples > 0 and not fits[
        "decoded"] else None
    if spilled is not None:
        store, form = spilled
        # Not through AutoGraph: a plain repacking, whose conversion fails after some other conversions in a process.
        ds = caching.row_dataset(store.arrays, batch_size, shuffle=shuffle, seed=seed).map(
            tf.autograph.experimental.do_not_convert(store.element))
        if form == "decoded":
            ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
        ds = prefetched(ds)
        store.release_with(ds)
        return ds
    ds = filled_cache(dataset) if cache and fits["decoded"] else dataset
    if shuffle:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    return prefetched(ds.batch(batch_size).map(apply, num_parallel_calls=tf.data.AUTOTUNE))


def filled_cache(dataset):
    """`dataset.cache()` after one pass to its end, which is when tf.data keeps a cache.

    Keras ends each epoch after its known number of steps, just before the end
    of the data: a cache left to training is never kept, and every epoch (and
    the teardown of each fit's last iterator, which blocks) would preprocess
    the whole split again.
    """
    cached = dataset.cache()
    for _ in cached.batch(_PREPROCESS_BATCH):
        pass
    return cached


def shuffle_buffer(example_bytes, num_examples, memory_budget=None):
    """Examples a shuffle buffer may hold: the whole split when it fits the memory budget, else what does
    (at most `_SHUFFLE_BUFFER`, at least 1).

    Args:
        example_bytes: int or None. Bytes per example (None: unknown, counted as 1).
        num_examples: int. Examples to shuffle.
        memory_budget: int or None. Bytes (default `kerasft.caching.memory_budget_bytes()`).
    """
    budget = caching.memory_budget_bytes() if memory_budget is None else memory_budget
    return max(1, min(num_examples, _SHUFFLE_BUFFER, budget // (example_bytes or 1)))


def example_bytes(element_spec, batched):
    """Bytes one example of a dataset takes, or None when its size is not fixed (strings, unknown shapes)."""
    total = 0
    for spec in tf.nest.flatten(element_spec):
        shape = spec.shape[1:] if batched else spec.shape
        if spec.dtype == tf.string or not shape.is_fully_defined():
            return None
        total += spec.dtype.size * int(np.prod(shape, dtype=np.int64))
    return total


class _Spilled:
    """Examples written to a private folder of the user cache, the folder removed once their dataset is gone."""

    def __init__(self, writer, arrays, element_spec):
        self.writer, self.element_spec = writer, element_spec
        self.arrays = [arrays[str(i)] for i in range(len(arrays))]

    def element(self, *tensors):
        return tf.nest.pack_sequence_as(self.element_spec, list(tensors))

    def release_with(self, dataset):
        weakref.finalize(dataset, self.writer.remove)


def _spill(dataset, preprocessed, sizes, num_examples):
    """Writes every example to disk in its smaller known form; `(_Spilled, form)`, or None when there is no room."""
    form = min((f for f in sizes if sizes[f] is not None), key=lambda f: (sizes[f], f != "preprocessed"),
               default=None)
    if form is None:
        return None
    needed = sizes[form] * num_examples
    root = paths.user_cache_dir("features")
    paths.make_room(root, needed)
    room = min(paths.cache_limit_bytes(), paths.free_bytes(root))
    if needed > room:
        warnings.warn(f"kerasft: {num_examples} examples exceed the memory budget and need {needed / 1e6:,.0f} MB "
                      f"on disk, but {root} has room for {room / 1e6:,.0f} MB ($KERASFT_CACHE_MAX_GB caps it): "
                      "reading and preprocessing them from the source on every pass.", stacklevel=3)
        return None
    source = preprocessed if form == "preprocessed" else dataset.batch(_PREPROCESS_BATCH)
    writer = caching.ArrayWriter(root / paths.private_name("inputs"), {"what": f"{form} inputs"},
                                 {"rows": num_examples}, what=f"the {form} inputs spilled to disk", private=True)
    logger.info("kerasft: %d examples exceed the memory budget; keeping them %s in %s", num_examples, form,
                writer.folder)
    try:
        for batch in source:
            writer.write("rows", {str(i): tensor.numpy() for i, tensor in enumerate(tf.nest.flatten(batch))})
        arrays = writer.finish()["rows"]
    except paths.DiskFullError as error:  # the disk filled meanwhile: the source still works
        warnings.warn(f"kerasft: {error} Reading the examples from the source on every pass instead.",
                      stacklevel=3)
        return None
    return _Spilled(writer, arrays, source.element_spec), form


def _is_text(model):
    return model.input.dtype == "string"


def _image_transform(preprocessor):
    def transform(images):
        return preprocessor(tf.cast(images, "float32"))

    return transform


class FeatureError(ValueError):
    """A cut does not fit the model, or a feature cache cannot be built from the data."""


# === Cuts ===


def _cut_depth(cut):
    """0 for `"frozen"`, N for `"top:N"` (trainable settings name cuts; `"all"` leaves no frozen bottom)."""
    try:
        depth = models.parse_trainable(cut)
    except models.ClassifierError:
        depth = None
    if depth is None:
        raise FeatureError(f'A cut is "frozen" or "top:N" with N >= 1. Received: cut={cut!r}')
    return depth


def _pooling_mask_name(network):
    """The network input that masks the pooling (the padding mask of text), or None."""
    mask = keras_internals.call_keyword(network.get_layer("pooling"), "mask")
    return None if mask is None else keras_internals.producer(mask)[0].name


def _cut_outputs(model, cut, block_pattern=None):
    """What the bottom below `cut` outputs: `{name: KerasTensor}` inside the backbone's own graph."""
    network = model.get_layer("network")
    backbone = network.get_layer("backbone")
    used = models.used_output(backbone)
    depth = _cut_depth(cut)
    if depth == 0:
        pooling = network.get_layer("pooling")
        mask_name = _pooling_mask_name(network)
        # A weightless copy: the model's own pooling layer gains no call in another graph.
        pool = pooling.__class__.from_config({**pooling.get_config(), "name": "features"})
        return {"features": pool(used, **({"mask": backbone.input[mask_name]} if mask_name else {}))}
    stem, found = backbones.blocks(backbone, block_pattern)
    if depth > len(found):
        raise FeatureError(
            f"cut={cut!r} asks for more blocks than the backbone of {model.name!r} has: {len(found)} blocks "
            f"({found[0][0]} .. {found[-1][0]}). Use top:1 .. top:{len(found)}."
        )
    below = {id(layer) for layer in stem} | {id(layer) for _, layers in found[:-depth] for layer in layers}
    # Walk back from the used output; the tensors where the walk leaves the top blocks are the cut.
    activations, passed, seen, stack = [], {}, set(), [used]
    while stack:
        tensor = stack.pop()
        operation, node_index = keras_internals.producer(tensor)
        if isinstance(operation, keras.layers.InputLayer):
            passed[operation.name] = tensor  # e.g. the padding mask the top blocks also read
        elif id(operation) in below:
            if not any(tensor is known for known in activations):
                activations.append(tensor)
        elif (id(operation), node_index) not in seen:
            seen.add((id(operation), node_index))
            stack.extend(keras_internals.node_inputs(operation, node_index))
    names = ["activations"] if len(activations) == 1 else [f"activations_{i}" for i in range(len(activations))]
    return {**dict(zip(names, activations)), **passed}


def split_network(model, cut, block_pattern=None):
    """Splits a classifier's network at `cut`: a frozen bottom to compute once, and the top that trains.

    Both parts share their layers (and so their weights) with `model`, and
    `top(bottom(x, training=False))` computes what `model.get_layer("network")(x)` does.

    Args:
        model: keras.Model. A kerasft classifier.
        cut: str. `"frozen"` (the bottom is the whole backbone and the
            pooling) or `"top:N"` (the bottom stops below the top N blocks).
        block_pattern: str or None. The backbone spec's block regex (found
            from the layer names when None).

    Returns:
        `(bottom, top)`: `bottom` maps preprocessed input to a dict of
        tensors; `top` maps that dict to the outputs through the top N
        blocks (a sub-model named `"backbone"`), `"pooling"` and `"head"`
        (only `"head"` for `"frozen"`).

    Example:
    >>> bottom, top = kft.features.split_network(model, "top:1")
    >>> top(bottom(preprocessed, training=False))  # == model.get_layer("network")(preprocessed)
    """
    network = model.get_layer("network")
    backbone = network.get_layer("backbone")
    outputs = _cut_outputs(model, cut, block_pattern)
    bottom = keras.Model(backbone.input, outputs, name="bottom")
    inputs = {name: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name) for name, t in outputs.items()}
    head = network.get_layer("head")
    if _cut_depth(cut) == 0:
        return bottom, keras.Model(inputs, head(inputs["features"]), name="top")
    names = list(outputs)
    upper = keras.Model([outputs[n] for n in names], models.used_output(backbone), name="backbone")
    upper_output = upper([inputs[n] for n in names])  # training reaches the top blocks (dropout, BatchNorm)
    mask_name = _pooling_mask_name(network)
    pooled = network.get_layer("pooling")(upper_output, **({"mask": inputs[mask_name]} if mask_name else {}))
    return bottom, keras.Model(inputs, head(pooled), name="top")


def bottom_and_head(model):
    """Splits a classifier's network at the pooled features.

    Returns:
        `(bottom, head)`: `bottom` maps preprocessed input to pooled features
        (the frozen backbone); `head` is the classifier's own head, sharing
        its weights with `model`.
    """
    network = model.get_layer("network")
    pooled = _cut_outputs(model, "frozen")["features"]
    return keras.Model(network.get_layer("backbone").input, pooled, name="bottom"), network.get_layer("head")


class Bottom:
    """The frozen bottom of a classifier below one or more cuts, traced once: one pass gives every cut.

    Calling it on a batch of preprocessed input returns `{cut: {name: tensor}}`.

    Args:
        model: keras.Model. A kerasft classifier.
        cuts: sequence of str. `"frozen"` and/or `"top:N"`.
        block_pattern: str or None. The backbone spec's block regex.
    """

    def __init__(self, model, cuts, block_pattern=None):
        self.cuts = tuple(dict.fromkeys(cuts))
        backbone = model.get_layer("network").get_layer("backbone")
        outputs = {cut: _cut_outputs(model, cut, block_pattern) for cut in self.cuts}
        self.model = keras.Model(backbone.input, outputs, name="bottom")
        self._call = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def __call__(self, x):
        return self._call(x)

    def map(self, dataset, cut):
        """Maps the bottom over a batched `(preprocessed, label)` dataset: the uncached path.

        Args:
            dataset: tf.data.Dataset. Batches of `(preprocessed input, label)`.
            cut: str. One of `self.cuts`.

        Returns:
            A dataset of `(inputs at the cut, label)`, recomputed on every pass
            (so it may follow augmentation), as `FeatureCache.dataset` gives them.
        """
        return dataset.map(lambda x, y: (self(x)[cut], y), num_parallel_calls=tf.data.AUTOTUNE)


def frozen_features(model, *preprocessed):
    """Runs the frozen bottom once over preprocessed datasets (one traced function for all of them).

    Args:
        model: keras.Model. A kerasft classifier.
        *preprocessed: tf.data.Dataset. Outputs of `preprocess`.

    Returns:
        A list with one `(features, labels)` pair of numpy arrays per dataset,
        for training the head alone.
    """
    bottom = Bottom(model, ["frozen"])
    pairs = []
    for dataset in preprocessed:
        features, labels = [], []
        for x, y in dataset:
            features.append(bottom(x)["frozen"]["features"].numpy())
            labels.append(y.numpy())
        pairs.append((np.concatenate(features), np.concatenate(labels)))
    return pairs


# === The cache ===


def weights_digest(layer):
    """Returns a hex digest of a layer's weights (shapes, dtypes and values, in order), to key caches and searches."""
    sha = hashlib.sha256()
    for weight in layer.weights:
        value = np.ascontiguousarray(weight.numpy())
        sha.update(f"{value.shape}{value.dtype}".encode())
        sha.update(value.tobytes())
    return sha.hexdigest()[:20]


def unnamed_config(config, ignore=("name",)):
    """A (nested) layer config without the keys in `ignore`, its layer names replaced by their order.

    Keras numbers unnamed layers per process (`input_layer_3`), so two
    identical models built one after the other differ only in those names,
    which also appear in every reference to a layer (`keras_history`,
    `input_layers`).
    """
    layer_names = {}

    def collect(value):
        if isinstance(value, dict):
            if "inbound_nodes" in value and isinstance(value.get("name"), str):  # a layer of a functional model
                layer_names.setdefault(value["name"], f"layer_{len(layer_names)}")
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    def rename(value):
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items() if k not in ignore}
        if isinstance(value, (list, tuple)):
            return [rename(v) for v in value]
        return layer_names.get(value, value) if isinstance(value, str) else value

    collect(config)
    return rename(config)


def _config_digest(config):
    return hashlib.sha256(json.dumps(unnamed_config(config), sort_keys=True, default=str).encode()).hexdigest()[:20]


def architecture_digest(model):
    """A digest of a model's architecture (its config, names left out), equal across processes."""
    return _config_digest(model.get_config())


def cache_key(model, data, cut, splits=("train", "validation")):
    """Returns what a feature cache of `model` at `cut` over `data` depends on, as a JSON-able dict.

    Args:
        model: keras.Model. A kerasft classifier.
        data: TaskData.
        cut: str. `"frozen"` or `"top:N"`.
        splits: sequence of str. The cached splits.
    """
    backbone = model.get_layer("network").get_layer("backbone")
    return {
        "format": _CACHE_FORMAT,
        "model": model.name,
        "architecture": f"{type(backbone).__name__} {backbone.dtype_policy.name}",
        "weights": weights_digest(backbone),
        "cut": cut,
        "data": data.fingerprint(),
        "splits": {split: data.size(split) for split in splits},
        "preprocessing": _config_digest(model.get_layer("preprocessor").get_config()),
    }


class FeatureCache:
    """What a classifier's frozen bottom outputs over a TaskData's splits, at one or more cuts, computed once.

    Every cut not found on disk is computed in a single pass over each split
    (preprocessed with the model's own preprocessor). A cut stays in memory
    while the cuts of this cache fit the memory budget; on disk, it lives in
    `<directory>/<model>-<cut>-<data fingerprint>/` as `.npy` files written
    row by row, beside a `key.json` holding `cache_key` and every file's size
    and SHA-256 (`kerasft.caching`). A folder whose key differs (other
    weights, preprocessing, architecture or splits) or whose files are
    truncated or altered is rebuilt, never reused, and a folder only appears
    whole, by renaming, so a killed run leaves nothing that looks complete.
    A full disk raises `kerasft.paths.DiskFullError` naming the folder and
    the bytes needed, and leaves other caches as they were.

    Args:
        model: keras.Model. A kerasft classifier; only its layers below each
            cut run.
        data: TaskData.
        cuts: sequence of str. `"frozen"` and/or `"top:N"`.
        directory: str, Path or None. Keep the caches on disk there and reuse
            those whose key matches. None keeps them in memory within the
            memory budget; a cut that would pass it goes to `spill_directory`.
        spill_directory: str, Path or None. Where a cut too big for memory
            goes (default: `kerasft.paths.user_cache_dir("features")`).
        splits: sequence of str. The splits to cache.
        batch_size: int. Examples per forward pass while computing.
        block_pattern: str or None. The backbone spec's block regex.
        preprocessed: dict or None. Split -> batches of `(preprocessed input, label)` in
            the data's order (`preprocess` output) to read instead of preprocessing
            again: a caller that needs the preprocessed split too tokenizes or decodes it once.
        verbose: int. 1 prints what was computed, reused or rebuilt.
        memory_budget: float or None. Gigabytes the cuts kept in memory may
            take (see `kerasft.caching.memory_budget_bytes`).

    Attributes:
        locations: dict. Cut -> `"memory"` or the folder that holds it.
        computed: list of str. The cuts this instance computed.
        rebuilt: list of str. The computed cuts whose folder held another key or damaged files.
        seconds: float. Time spent computing.

    Example:
    >>> cache = kft.features.FeatureCache(model, data, cuts=["frozen", "top:1"])
    >>> train = cache.dataset("top:1", "train", batch_size=32, shuffle=True, seed=0)
    >>> _, top = kft.features.split_network(model, "top:1")
    >>> top.predict(cache.dataset("top:1", "validation", batch_size=64))
    """

    def __init__(self, model, data, cuts=("frozen",), directory=None, spill_directory=None,
                 splits=("train", "validation"), batch_size=64, block_pattern=None, preprocessed=None, verbose=0,
                 memory_budget=None):
        self.cuts = tuple(dict.fromkeys(cuts))
        for cut in self.cuts:
            _cut_depth(cut)
        for split in splits:
            if data.size(split) == 0:
                raise FeatureError(f"Cannot cache the features of an empty {split} split ({data.name}).")
        self.splits = tuple(splits)
        self.locations, self.computed, self.rebuilt, self.seconds = {}, [], [], 0.0
        self._directory = Path(directory) if directory is not None else None
        self._spill_directory = spill_directory
        self._verbose = verbose
        self._arrays, self._bytes_in_memory = {}, 0
        self._memory_budget = caching.memory_budget_bytes(memory_budget)
        key = cache_key(model, data, self.cuts[0], self.splits)  # hashes the weights once for all cuts
        self._keys = {cut: {**key, "cut": cut} for cut in self.cuts}
        self._slots = {cut: f"{model.name}-{cut.replace(':', '')}-{self._keys[cut]['data'][:12]}" for cut in self.cuts}
        missing = [cut for cut in self.cuts if not self._load(cut)]
        if missing:
            self._compute(model, data, missing, batch_size, block_pattern, preprocessed or {})

    def _load(self, cut):
        """Opens a cut's folder when its key matches and its files are whole; False when it must be computed."""
        if self._directory is None:
            return False
        folder = self._directory / self._slots[cut]
        try:
            stored = paths.read_json(folder / caching.KEY_FILE)
            if stored.get("key") == self._keys[cut]:
                arrays = caching.open_arrays(folder)[1]  # reads every byte once against its SHA-256
        except FileNotFoundError:
            return False
        except paths.CorruptFileError as error:  # damaged on disk: never used, rebuilt
            self._log(f"kerasft: the feature cache in {folder} is damaged ({error}); rebuilding it")
            self.rebuilt.append(cut)
            return False
        if stored.get("key") != self._keys[cut]:
            differs = sorted(k for k in self._keys[cut] if stored.get("key", {}).get(k) != self._keys[cut][k])
            self._log(f"kerasft: the feature cache in {folder} was built for another {', '.join(differs)}; "
                      "rebuilding it")
            self.rebuilt.append(cut)
            return False
        self._arrays[cut] = _by_split(arrays)
        self.locations[cut] = folder
        os.utime(folder)  # recently used: the last to go when the cache makes room
        self._log(f"kerasft: reusing the {cut} feature cache in {folder}")
        return True

    def _compute(self, model, data, cuts, batch_size, block_pattern, preprocessed):
        start = time.time()
        bottom = Bottom(model, cuts, block_pattern)
        sizes = {split: data.size(split) for split in self.splits}
        writers = {}
        try:
            for split in self.splits:
                batches = (preprocessed[split] if split in preprocessed
                           else preprocess(model, getattr(data, split), batch_size, num_examples=sizes[split],
                                           cache=False))
                for x, y in batches:
                    outputs = bottom(x)
                    labels = ({f"labels.{name}": t.numpy() for name, t in y.items()} if isinstance(y, dict)
                              else {"labels": y.numpy()})  # multi-task data: one column per target
                    for cut in cuts:
                        if cut not in writers:
                            writers[cut] = self._writer(cut, outputs[cut], sizes)
                        writers[cut].write(split, {**{name: t.numpy() for name, t in outputs[cut].items()}, **labels})
            for cut in cuts:
                self._arrays[cut] = _by_split(writers[cut].finish())
                self.locations[cut] = writers[cut].folder or "memory"
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        self.computed.extend(cuts)
        self.seconds += time.time() - start
        where = ", ".join(f"{cut} ({self.nbytes(cut) / 1e6:.1f} MB, "
                          f"{'in memory' if self.locations[cut] == 'memory' else self.locations[cut]})" for cut in cuts)
        self._log(f"kerasft: computed the features at {where} over "
                  f"{' + '.join(f'{n} {s}' for s, n in sizes.items())} examples in {self.seconds:.1f}s")

    def _writer(self, cut, first_outputs, sizes):
        """Where a cut goes: its folder in `directory`, else memory while the budget allows, else the spill folder."""
        size = sum(sizes.values()) * sum(t.dtype.size * int(np.prod(t.shape[1:])) for t in first_outputs.values())
        folder = None if self._directory is None else self._directory / self._slots[cut]
        if folder is None:
            if self._bytes_in_memory + size > self._memory_budget:
                root = Path(self._spill_directory or paths.user_cache_dir("features"))
                if self._spill_directory is None:  # kerasft's own cache: keep it under the cap
                    for removed in paths.make_room(root, size):
                        self._log(f"kerasft: removed the least recently used feature cache {removed} "
                                  f"(cap {paths.cache_limit_bytes() / 2**30:.0f} GB, $KERASFT_CACHE_MAX_GB)")
                folder = root / self._slots[cut]
            else:
                self._bytes_in_memory += size
        manifest = {"key": self._keys[cut], "inputs": list(first_outputs)}
        return caching.ArrayWriter(folder, manifest, sizes, what=f"the {cut} feature cache")

    def _log(self, message):
        if self._verbose:
            print(message, flush=True)

    def arrays(self, cut, split):
        """Returns `(inputs, labels)` of a cut and split: a dict of numpy arrays (memory-mapped on disk) and labels
        (a dict per target for multi-task data)."""
        if cut not in self._arrays:
            raise FeatureError(f"This cache holds the cuts {list(self._arrays)}. Received: cut={cut!r}")
        if split not in self.splits:
            raise FeatureError(f"This cache holds the splits {list(self.splits)}. Received: split={split!r}")
        return self._arrays[cut][split]

    def nbytes(self, cut):
        """Returns the bytes a cut's arrays take over all cached splits."""
        return sum(a.nbytes for split in self.splits for a in tf.nest.flatten(self.arrays(cut, split)))

    def dataset(self, cut, split, batch_size, shuffle=False, seed=None, labels=None):
        """Returns batches of `(inputs at the cut, labels)`, the input of `split_network(model, cut)[1]`.

        Rows on disk are read a batch at a time (`kerasft.caching.row_dataset`),
        so reading a cache does not grow the process's memory.

        Args:
            cut: str. A cached cut.
            split: str. A cached split.
            batch_size: int. Examples per batch.
            shuffle: bool. A new order on every pass (over the whole split).
            seed: int or None. Shuffle seed.
            labels: np.ndarray, nest of them, or None. Targets in the split's order to give instead
                of the cached labels (e.g. one-hot rows, teacher probabilities, or a multi-task model's
                targets and sample weights).
        """
        inputs, cached_labels = self.arrays(cut, split)
        labels = cached_labels if labels is None else labels
        flat = tf.nest.flatten(labels)
        if not any(isinstance(a, np.memmap) for a in (*inputs.values(), *flat)):  # in memory: slices are cheapest
            ds = tf.data.Dataset.from_tensor_slices((dict(inputs), labels))
            if shuffle:
                ds = ds.shuffle(len(flat[0]), seed=seed, reshuffle_each_iteration=True)
            return prefetched(ds.batch(batch_size))
        names = list(inputs)
        ds = caching.row_dataset([inputs[name] for name in names] + flat, batch_size, shuffle=shuffle, seed=seed)
        return prefetched(ds.map(lambda *tensors: (dict(zip(names, tensors[:len(names)])),
                                                   tf.nest.pack_sequence_as(labels, list(tensors[len(names):])))))


def _by_split(arrays):
    """`{split: {name: array}}` with labels among them -> `{split: ({name: array}, labels)}`; the columns
    `labels.<target>` of multi-task data become a dict of labels."""
    def labels(named):
        if "labels" in named:
            return named["labels"]
        return {name.split(".", 1)[1]: a for name, a in named.items() if name.startswith("labels.")}

    return {split: ({name: a for name, a in named.items() if name != "labels" and not name.startswith("labels.")},
                    labels(named)) for split, named in arrays.items()}

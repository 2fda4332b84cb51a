"""Loads labelled images, texts or sound clips into a cleaned, split `TaskData`.

Every loader (`from_directory`, `from_csv`, `from_arrays`, `from_tfds`,
`from_tfrecord`) reads its source into one shared core (`assemble`), which
checks the labels, drops empty texts and exact duplicates, splits stratified
and seeded, and keeps the raw examples of each split in numpy (texts,
pixels, file paths, encoded image bytes or waveforms; for TFRecord files,
only record numbers). The `tf.data` pipelines of a `TaskData` are built from
those arrays on first use.

Elements are UNBATCHED `(x, y)` pairs:
- text: `x` is a `tf.string` scalar.
- image: `x` is `tf.uint8` of shape `(H, W, 3)`; grayscale is repeated to RGB,
  alpha is dropped.
- audio: `x` is `tf.float32` of shape `(clip_samples,)`: a mono waveform at
  `sample_rate`, cut or zero-padded to `duration` seconds (`kerasft.audio`).
- `y` is an `int32` class id (multiclass; binary when there are 2 classes), a
  `float32` multi-hot vector `(C,)` (multilabel) or a `float32` scalar
  (regression).

```
errors      DataError, DataWarning
labels      raw labels -> encoded labels, class names, task
splits      stratified, seeded splits and samples
task_data   TaskData: examples per split, tf.data pipelines, summary, fingerprint
assemble    the core every loader shares
readers     from_arrays, from_directory (images, sound clips, texts), from_csv (CSV/TSV/JSONL)
tfds        from_tfds
tfrecord    from_tfrecord, and TaskData.to_tfrecord's writer: sharded tf.train.Example files, streamed
```

Example:

```python
data = kerasft.data.from_directory("photos/", image_size=(224, 224))
print(data.summary())
model.fit(data.train.batch(32), validation_data=data.validation.batch(32))
```
"""

from kerasft.data.errors import DataError, DataWarning
from kerasft.data.readers import IMAGE_EXTENSIONS, TEXT_EXTENSIONS, from_arrays, from_csv, from_directory
from kerasft.data.splits import SPLITS
from kerasft.data.task_data import CleaningReport, TaskData
from kerasft.data.tfds import from_tfds
from kerasft.data.tfrecord import from_tfrecord

__all__ = ["IMAGE_EXTENSIONS", "SPLITS", "TEXT_EXTENSIONS", "CleaningReport", "DataError", "DataWarning", "TaskData",
           "from_arrays", "from_csv", "from_directory", "from_tfds", "from_tfrecord"]

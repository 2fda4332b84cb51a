"""Data, models, backbones and inputs named on the command line: checked before TensorFlow starts, then loaded."""

import contextlib
import json
import os
import sys
from pathlib import Path

from kerasft.cli.errors import UsageError
from kerasft.cli.output import native_stderr

# The backbone `train` and `tune` use without --backbone: the best one installed offline for the modality.
DEFAULT_BACKBONES = {"text": "minilm_l6", "image": "efficientnet_lite0", "audio": "efficientnet_lite0"}


def check_paths(args):
    """Refuses a data source, model or input path that does not exist, before TensorFlow starts."""
    def check(path, data=False):
        if path and not (data and path.startswith(("tfds:", "sample:"))) and not os.path.exists(path):
            raise UsageError(f"{path}: no such file or folder" + (" (nor a tfds:<name> or sample:<name>)." if data
                                                                  else "."))

    check(getattr(args, "data", None), data=True)
    for model in [getattr(args, "model", None), *(getattr(args, "models", None) or ())]:
        check(model)
    for item in getattr(args, "inputs", None) or ():
        if item != "-" and not os.path.exists(item):
            raise UsageError(f"{item}: no such file or folder. predict reads files, folders and - (stdin); "
                             f"pass a text as --text {json.dumps(item)}.")


def load_data(source, args, every_row=False):
    """A TaskData from a folder, a delimited/JSONL file, `tfds:<name>` or `sample:<name>`.

    Args:
        source: str. The data argument.
        args: argparse.Namespace. The data flags.
        every_row: bool. Keep every example, duplicates included, in one split (train) for scoring a
            held-out file whole.
    """
    import kerasft as kft

    splits = dict(validation_split=0.0 if every_row else args.validation_split,
                  test_split=0.0 if every_row else args.test_split, seed=args.seed)
    if source.startswith("sample:"):
        name = source.split(":", 1)[1]
        samples = {"bbc_news": kft.samples.bbc_news, "fashion_mnist": kft.samples.fashion_mnist,
                   "spoken_words": kft.samples.spoken_words}
        if name not in samples:
            raise UsageError(f"Unknown sample {name!r}; expected one of {', '.join(samples)}.")
        return samples[name](seed=args.seed)
    if source.startswith("tfds:"):
        return kft.data.from_tfds(source.split(":", 1)[1], data_dir=args.data_dir, image_size=args.image_size,
                                  download=args.download, deduplicate=not every_row, **splits)
    path = Path(source)
    if path.is_dir():
        utf8 = args.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
        return kft.data.from_directory(path, image_size=args.image_size or (224, 224), sample_rate=args.sample_rate,
                                       duration=args.duration, fallback_encoding=None if utf8 else args.encoding,
                                       deduplicate=not every_row, **splits)
    if path.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise UsageError(f"{source}: expected a folder, or a .csv, .tsv or .jsonl file.")
    columns = [column.strip() for column in args.label_column.split(",")]  # several: one target each
    return kft.data.from_csv(path, text_column=args.text_column, task=args.task,
                             label_column=columns if len(columns) > 1 else args.label_column,
                             encoding=args.encoding, deduplicate=not every_row, **splits)


def load_model(path):
    """`(keras.Model, class names or None)` from a `.keras` file or an export folder's `model.keras`."""
    import keras
    import keras_hub  # noqa: F401  registers the KerasHub layers a text model holds

    from kerasft.exporting import KERAS_FILE, LABELS_FILE

    path = Path(path)
    if path.is_dir() and (path / KERAS_FILE).is_file():
        path = path / KERAS_FILE
    if not (path.is_file() and path.suffix == ".keras"):
        raise UsageError(f"{path}: expected a .keras file or an export folder holding {KERAS_FILE}.")
    labels = path.with_name(LABELS_FILE)
    class_names = labels.read_text(encoding="utf-8").splitlines() if labels.is_file() else None
    return keras.models.load_model(path, compile=False), class_names


def default_modalities():
    """`{backbone: [the modalities it is the default for]}`."""
    modalities = {}
    for modality, backbone in DEFAULT_BACKBONES.items():
        modalities.setdefault(backbone, []).append(modality)
    return modalities


def prediction_inputs(args, modality):
    """`(inputs, how to show each, [(file, why skipped)])` from --text, files, folders and `-` (stdin)."""
    from kerasft import audio
    from kerasft.data import IMAGE_EXTENSIONS, readers

    if modality == "text":
        texts = list(args.text or [])
        for item in args.inputs:
            texts += _texts_in(item, args)
        if not texts:
            raise UsageError("No text to classify: pass --text \"...\", .txt/.csv/.tsv/.jsonl files, folders of .txt "
                             "files, or - for stdin.")
        return texts, texts, []
    if args.text:
        raise UsageError(f"--text is for text models; this {modality} model takes files and folders.")
    extensions = IMAGE_EXTENSIONS if modality == "image" else audio.AUDIO_EXTENSIONS
    files = []
    for item in args.inputs:
        path = Path(item)
        if item == "-":
            files += [Path(line.strip()) for line in sys.stdin if line.strip()]
        elif path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in extensions)
        else:
            files.append(path)
    if not files:
        raise UsageError(f"No {modality} files found in {', '.join(args.inputs) or 'the arguments'}: pass "
                         f"{'/'.join(e[1:] for e in extensions)} files or folders of them.")
    # libjpeg prints its own complaint about a corrupt file; the skip line below says it once, with the file's name.
    with contextlib.nullcontext() if args.verbose else native_stderr(keep=lambda line: False):
        problems = readers.unreadable(files, modality)
    readable = [str(f) for f, why in zip(files, problems) if why is None]
    return readable, readable, [(str(f), why) for f, why in zip(files, problems) if why]


def _texts_in(item, args):
    """The texts of one predict argument: `-` (a text per line), .txt (a text per line),
    .csv/.tsv/.jsonl (the --text-column) or a folder (a text per .txt file)."""
    from kerasft.data import tables

    def read(file):
        try:
            return file.read_text(encoding=args.encoding)
        except UnicodeDecodeError as error:
            raise UsageError(f"{file} is not valid {args.encoding} (byte {error.object[error.start]:#04x} at offset "
                             f"{error.start}). Pass --encoding cp1252 (or --encoding latin-1) or re-save the file "
                             "as UTF-8.") from None

    path = Path(item)
    if item == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise UsageError(f"{item}: a folder without .txt files; a text model reads .txt (a text per line), "
                             ".csv/.tsv/.jsonl (the --text-column) or folders of .txt files (a text per file).")
        return [read(p) for p in files]
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl"):
        return tables.read_column(path, args.text_column, encoding=args.encoding)
    if path.suffix.lower() == ".txt":
        return [line for line in read(path).splitlines() if line.strip()]
    raise UsageError(f"{item}: a text model reads .txt (a text per line), .csv/.tsv/.jsonl (the --text-column) "
                     f"or folders of .txt files; pass a text as --text {json.dumps(item)}.")

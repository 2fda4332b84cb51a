"""The `kerasft` command line: the Python API's main calls, one subcommand each.

```
kerasft backbones                                  what can be fine-tuned, and from which weights
kerasft train reviews.csv                          fine-tune (default backbone per modality), evaluate, export, report
kerasft tune photos/ --time-limit 600 --top-k 3    search, ensemble the best, export
kerasft ensemble a.keras b.keras --method greedy_soup --data reviews.csv --output saved_models/ens
kerasft export model.keras saved_models/reviews --formats keras,saved_model,litert --keep 3
kerasft evaluate saved_models/reviews holdout.csv --all
kerasft predict saved_models/reviews --text "The film was a delight." new_reviews.csv --json
kerasft cache info                                 the user cache; `kerasft cache clear` empties it
```
Data is a folder (one subfolder per class), a `.csv`/`.tsv`/`.jsonl` file, a
TensorFlow Datasets name as `tfds:<name>` (prepared offline), or a sample as
`sample:bbc_news` / `sample:fashion_mnist` / `sample:spoken_words`. `--config run.yaml` takes the same
keys as the flags (`batch_size: 16`); flags given on the line win. The flags'
defaults are the library's own (read from its source, so `--help` answers
without starting TensorFlow).

Output: a line per step by default; `--quiet` prints only results and errors;
`--verbose` adds Keras' progress bars and TensorFlow's own start-up lines.
Errors name the fix as a flag (`--encoding cp1252`), translated here from the
library's Python spelling (`encoding=`).

Exit codes: 0 done; 2 bad usage or bad input, with a one-line message (the
traceback only with `--debug`); 3 `predict` skipped unreadable files (each
named on stderr) and predicted the others; 1 an unexpected failure.
"""

import argparse
import ast
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3
# Share of `kerasft tune --time-limit` the search gets; evaluating, exporting and reporting take the rest.
SEARCH_SHARE = 0.7
# As kerasft.ensembling.METHODS (a test checks), without importing TensorFlow to parse arguments.
ENSEMBLE_METHODS = ["mean", "weighted", "stacking", "uniform_soup", "greedy_soup"]
# The backbone `train` and `tune` use without --backbone: the best one installed offline for the modality.
DEFAULT_BACKBONES = {"text": "minilm_l6", "image": "efficientnet_lite0", "audio": "efficientnet_lite0"}
DATA_HELP = "a folder (a subfolder per class), .csv/.tsv/.jsonl, tfds:<name> or sample:<name>"


class UsageError(ValueError):
    """A flag, a file or a value given on the command line is wrong."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other error of the command line."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"kerasft: error: {message} (`{self.prog} --help` describes the flags)\n")


# === Output: verbosity and TensorFlow's start-up lines ===

# What TensorFlow's C++ side writes through absl: "I0000 00:00:1795.. 1125 port.cc:153] ..." and companions.
_CPP_LOG_LINE = re.compile(r"([IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
                           r"|WARNING: All log messages before absl::InitializeLog\(\) "
                           r"|To enable the following instructions: )")


def start_tensorflow(verbose):
    """Imports TensorFlow; unless `verbose`, without the lines its C++ side writes on stderr.

    TensorFlow 2.21 writes its start-up lines (oneDNN, CUDA stubs) from
    static initializers of two shared objects, the core and the profiler
    plugin, each with its own copy of absl, before absl logging is
    initialized: absl then sends every message to stderr and no environment
    variable reaches it, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them. Hence
    stderr goes to a file while TensorFlow loads, and every other line of it
    is passed on. `TF_CPP_MIN_LOG_LEVEL=3`, which TensorFlow's own log sink
    reads, silences the later lines (CPU features, cuInit). Both happen in
    this process only: the library never changes a caller's logging.

    Args:
        verbose: bool. Leave TensorFlow's output as it is.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose:
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _native_stderr(keep=lambda line: not _CPP_LOG_LINE.match(line)):
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _native_stderr(keep):
    """Sends what is written on stderr (file descriptor 2, native code included) to a file meanwhile, then passes
    on the lines `keep` accepts."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if keep(line)))


@contextlib.contextmanager
def _output_filters(args):
    """--quiet drops Python warnings; unless --verbose, TensorFlow's Python log lines (tf.function retracing)
    and the data loaders' (the summary holds them) go too."""
    loggers = [logging.getLogger(name) for name in ("kerasft.data", "tensorflow")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        if args.quiet:
            warnings.simplefilter("ignore")
        if not args.verbose:
            for logger in loggers:
                logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _note(args, message):
    """Prints a progress line, unless --quiet."""
    if not args.quiet:
        print(message, flush=True)


def _verbose(args):
    """`fine_tune`'s and `tune`'s `verbose`: 0 with --quiet, 2 (Keras' progress bars too) with --verbose, else 1
    (a line per phase, epoch or trial, with estimates of what remains)."""
    return 0 if args.quiet else 2 if args.verbose else 1


def _still_improving(history):
    """`(epochs, first, last)` when the last phase's validation loss was still falling at its last epoch, else None.

    Falling means: the last epoch is the best, and the last quarter of the
    phase's epochs still brought more than a tenth of its whole improvement
    (a loss creeping down long after accuracy settled does not count).
    """
    curves = getattr(history, "history", history) or {}
    losses = curves.get("val_loss") or []
    phases = curves.get("phase") or [1] * len(losses)
    last = [loss for loss, phase in zip(losses, phases) if phase == phases[-1]] if losses else []
    if len(last) < 2 or not last[-1] < min(last[:-1]) * (1 - 1e-3):
        return None
    tail = max(1, len(last) // 4)
    if last[-1 - tail] - last[-1] > 0.1 * (last[0] - last[-1]):
        return len(last), last[0], last[-1]
    return None


# === Errors in the command line's own spelling ===

_EXAMPLE_VALUES = re.compile(r"\b([a-z][a-z_]*)= \(e\.g\. '([^']+)'(?: or '([^']+)')?\)")
_ARGUMENT = re.compile(r"\b([a-z][a-z_]*)=(True|False|None|'[^']*'|\"[^\"]*\"|\([^()]*\)"
                       r"|[^\s,;()]+?(?=\.?(?:\s|$|[,;()])))?")
# A bare argument name: with an underscore (project_name), or the subject of "... must be".
_BARE_NAME = re.compile(r"\b[a-z]+(?:_[a-z]+)+\b|^[a-z]+(?= must be)")
_BACKBONE_NAMES = re.compile(r"kft\.backbones\.names\((?:'(\w+)')?\)")


def cli_spelling(message, parser):
    """Rewrites a library message's Python arguments (`encoding=`, `pretrained=False`) as `parser`'s flags.

    Only the arguments the command has a flag for change; `kft.backbones.names('text')`
    becomes `kerasft backbones --modality text`.

    Args:
        message: str. The error message.
        parser: argparse.ArgumentParser. The subcommand's parser.
    """
    flags = {action.dest: action for action in parser._actions if action.option_strings}

    def flag(name, value=""):
        action = flags[name]
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # --overwrite, --no-pretrained
            return option if value in ("", str(action.const)) else f"no {option}"
        if value == "None":
            return f"no {option}"
        value = value.strip("'\"")
        if value.startswith("("):
            value = ",".join(part.strip(" '\"") for part in value.strip("()").split(",") if part.strip())
        return f"{option} {value or action.metavar or name.upper()}"

    def example(match):
        name, first, second = match.groups()
        if name not in flags:
            return match.group(0)
        return flag(name, first) + (f" (or {flag(name, second)})" if second else "")

    def argument(match):
        return flag(match.group(1), match.group(2) or "") if match.group(1) in flags else match.group(0)

    def bare(match):  # project_name -> --project-name
        name = match.group(0)
        return max(flags[name].option_strings, key=len) if name in flags else name

    def backbones(match):
        return "`kerasft backbones" + (f" --modality {match.group(1)}`" if match.group(1) else "`")

    message = _EXAMPLE_VALUES.sub(example, message)
    message = _ARGUMENT.sub(argument, message)
    message = _BARE_NAME.sub(bare, message)
    return _BACKBONE_NAMES.sub(backbones, message)


# === Data and models from the command line ===


def _check_paths(args):
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
    return kft.data.from_csv(path, text_column=args.text_column, label_column=args.label_column, task=args.task,
                             encoding=args.encoding, deduplicate=not every_row, **splits)


def _load_model(path):
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


def _default_modalities():
    """`{backbone: [the modalities it is the default for]}`."""
    modalities = {}
    for modality, backbone in DEFAULT_BACKBONES.items():
        modalities.setdefault(backbone, []).append(modality)
    return modalities


def _backbone(args, data):
    """The --backbone, or the default for the data's modality (said in the output)."""
    if args.backbone:
        return args.backbone
    backbone = DEFAULT_BACKBONES[data.modality]
    _note(args, f"kerasft: backbone {backbone} (the default for {data.modality}; --backbone picks another, "
                "`kerasft backbones` lists them)")
    return backbone


def _head(args):
    import kerasft as kft

    settings = _given(args, "dropout")
    if args.head_units is not None:
        try:
            settings["units"] = tuple(int(u) for u in str(args.head_units).split(",") if u.strip())
        except ValueError:
            raise UsageError(f"--head-units takes widths separated by commas, e.g. 256,128. Received: "
                             f"{args.head_units!r}") from None
    return kft.Head(**settings)


def _input_size(args, data):
    if data.modality in ("image", "audio"):
        return {"image_size": args.image_size}
    return {"sequence_length": args.sequence_length}


def _given(args, *names):
    """The flags among `names` that have a value: the others keep the library's default."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _run_folder(requested, default, overwrite):
    """A run folder that holds no earlier run: `requested` (refused if taken, unless `overwrite`), or
    `default`, `default-2`, `default-3`, ... Created, so a concurrent run takes another."""
    def taken(folder):
        return folder.is_dir() and any(folder.iterdir())

    if requested or overwrite:
        folder = Path(requested or default)
        if taken(folder):
            if not overwrite:
                raise UsageError(f"{folder} holds an earlier run; pass --overwrite to replace it, or another "
                                 "--run-dir.")
            shutil.rmtree(folder)
    else:
        folder, number = Path(default), 1
        while taken(folder):
            number += 1
            folder = Path(f"{default}-{number}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _headline(evaluation):
    """`accuracy 0.9412` (classification) or `mae 0.1234` (regression)."""
    name = "accuracy" if "accuracy" in evaluation.metrics else "mae"
    return f"{name} {evaluation.metrics[name]:.4f}"


def _export(args, model, data, metrics, hyperparameters):
    import kerasft as kft

    output = args.output or f"saved_models/{_short_name(data.name)}"
    _note(args, f"kerasft: exporting to {output} (model.keras and a SavedModel version)")
    return kft.export(model, output, data=data, metrics=metrics, hyperparameters=hyperparameters, keep=args.keep)


def _short_name(name):
    from kerasft import backbones

    return backbones.short_name(name)


# === Subcommands ===


def cmd_backbones(args):
    from kerasft import backbones

    defaults = _default_modalities()
    rows = []
    for name in backbones.names(args.modality):
        spec = backbones.get(name)
        size = (f"{spec.image_size[0]}x{spec.image_size[1]}" if spec.modality == "image"
                else "whole text" if spec.adapt else f"{spec.sequence_length} tokens")
        rows.append({"name": name, "modality": spec.modality, "params": spec.params, "input": size,
                     "weights": spec.source, "default_for": defaults.get(name, [])})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<20} {'modality':<8} {'params':>8}  {'input':<11} weights")
    for row in rows:
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] else "?"
        default = f" (default for {' and '.join(row['default_for'])})" if row["default_for"] else ""
        print(f"{row['name']:<20} {row['modality']:<8} {params:>8}  {row['input']:<11} {row['weights']}{default}")


def cmd_train(args):
    import keras

    import kerasft as kft
    from kerasft import report

    data = load_data(args.data, args)
    _note(args, data.summary())
    backbone = _backbone(args, data)
    run_dir = _run_folder(args.run_dir, Path("runs") / _short_name(data.name), args.overwrite)
    _note(args, f"kerasft: run folder {run_dir} (report, TensorBoard logs)")
    model = kft.build_classifier(backbone, data=data, head=_head(args), pretrained=args.pretrained, seed=args.seed,
                                 **_given(args, "trainable"), **_input_size(args, data))
    history = kft.fine_tune(model, data, seed=args.seed, verbose=_verbose(args),
                            callbacks=[keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"))],
                            **_given(args, "epochs", "warmup_epochs", "batch_size", "learning_rate",
                                     "fine_tune_learning_rate", "time_limit"))
    improving = _still_improving(history)
    if improving:
        epochs, first, last = improving
        _note(args, f"kerasft: the validation loss was still falling at the last epoch ({first:.4f} -> {last:.4f} "
                    f"over {epochs} epochs): more epochs may help, e.g. --epochs {2 * epochs}"
                    + (" and a larger --time-limit" if args.time_limit else ""))
    evaluation = kft.evaluate(model, data)
    _note(args, evaluation.summary())
    settings = {**_settings(args), "backbone": backbone}
    exported = _export(args, model, data, evaluation, settings)
    (run_dir / "history.json").write_text(report.history_json(history))
    page = report.write_report(run_dir, evaluation=evaluation, history=history, data=data,
                               title=f"kerasft train: {backbone} on {data.name}",
                               details={**settings, "export": exported.path})
    print(f"test {_headline(evaluation)}; exported to {exported.path} (SavedModel version {exported.version}); "
          f"report {page}")


def cmd_tune(args):
    import kerasft as kft
    from kerasft import report

    try:
        space = json.loads(args.space) if args.space else None
    except json.JSONDecodeError as error:
        raise UsageError(f"--space is not valid JSON ({error}): {args.space}") from None
    data = load_data(args.data, args)
    _note(args, data.summary())
    backbone = _backbone(args, data)
    search = kft.tune(data, backbone=backbone, overwrite=args.overwrite, space=space, pretrained=args.pretrained,
                      cache_features="disk" if args.cache_on_disk else True, seed=args.seed, verbose=_verbose(args),
                      time_limit=args.time_limit * SEARCH_SHARE if args.time_limit else None,
                      **_given(args, "tuner", "max_trials", "epochs", "directory", "project_name", "objective"),
                      **_input_size(args, data))
    _note(args, search.summary())
    completed = sum(r["status"] == "COMPLETED" for r in search.results())
    members = search.best_models(min(args.top_k, completed))
    model = members[0] if len(members) == 1 else kft.ensemble(members, method=args.method, validation=data)
    evaluation = kft.evaluate(model, data)
    _note(args, evaluation.summary())
    settings = {**_settings(args), "backbone": backbone, "search": str(search.directory), "members": len(members),
                "method": args.method if len(members) > 1 else "best trial"}
    exported = _export(args, model, data, evaluation, settings)
    run_dir = _run_folder(args.run_dir, Path(search.directory) / "report", args.overwrite)
    page = report.write_report(run_dir, evaluation=evaluation, search=search, data=data,
                               title=f"kerasft tune: {backbone} on {data.name}",
                               details={**settings, "export": exported.path})
    print(f"test {_headline(evaluation)}; exported to {exported.path} (SavedModel version {exported.version}); "
          f"report {page}")


def cmd_auto(args):
    import kerasft as kft

    data = load_data(args.data, args)
    _note(args, data.summary())
    output = args.output or f"saved_models/{_short_name(data.name)}"
    result = kft.auto(data, time_limit=args.time_limit, directory=args.directory, name=_short_name(data.name),
                      export_path=output, seed=args.seed, verbose=0 if args.quiet else 1)
    _note(args, result.evaluation.summary())
    print(f"{result.method}: test {_headline(result.evaluation)}; exported to {result.exported.path}; report "
          f"{result.report}; {result.seconds:.0f} s")


def cmd_ensemble(args):
    import kerasft as kft

    members = [_load_model(path)[0] for path in args.models]
    data = load_data(args.data, args) if args.data else None
    model = kft.ensemble(members, method=args.method, validation=data, calibrate=args.calibrate)
    metrics = kft.evaluate(model, data) if data is not None else None
    if metrics is not None:
        _note(args, metrics.summary())
    exported = kft.export(model, args.output, data=data, metrics=metrics, keep=args.keep)
    print(f"{args.method} of {len(members)} members exported to {exported.path}")


def cmd_export(args):
    import kerasft as kft

    model, class_names = _load_model(args.model)
    data = load_data(args.data, args) if args.data else None
    formats = tuple(f for f in args.formats.split(",") if f)
    quantize = tuple(q for q in args.quantize.split(",") if q) if args.quantize else None
    exported = kft.export(model, args.output, class_names=None if data else class_names, data=data,
                          version=args.version, formats=formats, quantize=quantize, keep=args.keep)
    print(json.dumps({"path": exported.path, "version": exported.version, "keras": exported.keras,
                      "saved_model": exported.saved_model, "litert": exported.litert}, indent=1))


def cmd_evaluate(args):
    import kerasft as kft

    if args.all and args.split:
        raise UsageError("--all scores every example; it takes no --split.")
    model, model_classes = _load_model(args.model)
    data = load_data(args.data, args, every_row=args.all)
    if args.all:
        dataset, what = data.train.concatenate(data.validation).concatenate(data.test), "every example"
    else:
        dataset, what = getattr(data, args.split or "test"), f"{args.split or 'test'} split"
    dataset, class_names = _in_model_order(dataset, data, model_classes)
    evaluation = kft.evaluate(model, dataset, class_names=class_names)
    if args.json:
        print(json.dumps({"data": data.name, "scored": what, **evaluation.metrics,
                          "per_class": evaluation.per_class}, indent=1))
    else:
        print(f"{data.name}, {what}")
        print(evaluation.summary())


def _in_model_order(dataset, data, model_classes):
    """The dataset with its labels as the model's class ids (a held-out file may lack some classes)."""
    if not model_classes or data.task == "regression" or list(data.class_names) == model_classes:
        return dataset, data.class_names
    unknown = sorted(set(data.class_names) - set(model_classes))
    if unknown or data.task == "multilabel":
        raise UsageError(f"The data's classes {data.class_names} are not the model's {model_classes}"
                         + (f" ({unknown} unknown to it)" if unknown else "") + ".")
    import tensorflow as tf

    ids = tf.constant([model_classes.index(name) for name in data.class_names])
    return dataset.map(lambda x, y: (x, tf.gather(ids, y))), model_classes


def cmd_predict(args):
    import kerasft as kft

    predictor = kft.load(args.model)
    inputs, shown, skipped = _prediction_inputs(args, predictor.modality)
    for item, why in skipped:
        print(f"kerasft: skipped {item}: {why}", file=sys.stderr)
    if not inputs:
        raise UsageError(f"None of the {len(skipped)} files could be read (each is named above).")
    labels, scores = predictor.predict_labels(inputs)
    for item, label, score in zip(shown, labels, scores):
        if args.json:
            print(json.dumps({"input": item, "label": label, "score": round(float(score), 6)}))
        else:
            line = " ".join(item.split()) if predictor.modality == "text" else item
            print(f"{label}\t{score:.4f}\t{line if len(line) <= 60 else line[:57] + '...'}")
    return EXIT_SKIPPED if skipped else EXIT_OK


def _prediction_inputs(args, modality):
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
    with contextlib.nullcontext() if args.verbose else _native_stderr(keep=lambda line: False):
        problems = readers.unreadable(files, modality)
    readable = [str(f) for f, why in zip(files, problems) if why is None]
    return readable, readable, [(str(f), why) for f, why in zip(files, problems) if why]


def _texts_in(item, args):
    """The texts of one predict argument: `-` (a text per line), .txt (a text per line),
    .csv/.tsv/.jsonl (the --text-column) or a folder (a text per .txt file)."""
    from kerasft.data import readers

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
        return readers.read_column(path, args.text_column, encoding=args.encoding)
    if path.suffix.lower() == ".txt":
        return [line for line in read(path).splitlines() if line.strip()]
    raise UsageError(f"{item}: a text model reads .txt (a text per line), .csv/.tsv/.jsonl (the --text-column) "
                     f"or folders of .txt files; pass a text as --text {json.dumps(item)}.")


def cmd_cache(args):
    from kerasft import paths

    if args.action == "clear":
        freed = paths.clear_cache(("features",) if args.features else ())
        print(f"removed {freed / 1e6:.1f} MB from {paths.user_cache_dir(*(('features',) if args.features else ()))}")
        return
    usage = paths.cache_usage()
    print(f"{paths.user_cache_dir()} (feature caches capped at {paths.cache_limit_bytes() / 2**30:.1f} GB, "
          "$KERASFT_CACHE_MAX_GB)")
    for name, size in usage.items():
        print(f"  {name:<12} {size / 1e6:10.1f} MB")
    print(f"  {'total':<12} {sum(usage.values()) / 1e6:10.1f} MB")


def _settings(args):
    skip = {"command", "func", "config", "debug", "verbose", "quiet", "json", "tensorflow"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


# === The parser ===

EXAMPLES = {
    "backbones": "kerasft backbones --modality text",
    "train": "kerasft train reviews.csv\n  kerasft train photos/ --backbone efficientnet_lite2 --trainable top:2 "
             "--epochs 10 --keep 3",
    "tune": "kerasft tune photos/ --time-limit 600 --top-k 3 --method mean",
    "auto": "kerasft auto sample:bbc_news --time-limit 300",
    "ensemble": "kerasft ensemble a.keras b.keras c.keras --method greedy_soup --data reviews.csv --output "
                "saved_models/soup",
    "export": "kerasft export runs/best.keras saved_models/reviews --formats keras,saved_model,litert --quantize int8 "
              "--data reviews.csv --keep 3",
    "evaluate": "kerasft evaluate saved_models/reviews holdout.csv --all --json",
    "predict": "kerasft predict saved_models/reviews --text \"What a match!\" more_texts.txt holdout.csv --json\n"
               "  kerasft predict saved_models/photos new_photos/ cat.jpg\n  cat texts.txt | kerasft predict "
               "saved_models/reviews -",
    "cache": "kerasft cache info; kerasft cache clear --features",
}


def library_defaults(module, name):
    """The literal default arguments of a kerasft function, or the fields of a dataclass, read from its source.

    Importing the module would start TensorFlow, which `--help` must not wait
    for; reading its source keeps each flag's default the library's own.

    Args:
        module: str. A kerasft module, e.g. `"kerasft.training"`.
        name: str. A function or dataclass defined at its top level.

    Returns:
        dict. Argument name -> default, for the defaults that are literals.
    """
    relative = Path(*module.split(".")[1:])  # kerasft's own folder, found without importing a module of it
    source = Path(__file__).parent / relative.with_suffix(".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    pairs = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            positional = node.args.args[len(node.args.args) - len(node.args.defaults):]
            pairs = list(zip(positional, node.args.defaults)) + list(zip(node.args.kwonlyargs, node.args.kw_defaults))
            pairs = [(argument.arg, default) for argument, default in pairs if default is not None]
        elif isinstance(node, ast.ClassDef) and node.name == name:
            pairs = [(item.target.id, item.value) for item in node.body
                     if isinstance(item, ast.AnnAssign) and item.value is not None]
    defaults = {}
    for key, value in pairs:
        try:
            defaults[key] = ast.literal_eval(value)
        except ValueError:  # computed: the flag says "the library's"
            pass
    return defaults


def _until_stopped(defaults, name):
    """The help of an epochs flag whose library default is None: training stops by itself."""
    return " (default: until the validation loss stops improving)" if defaults.get(name, 0) is None else ""


def _flag(parser, *names, help, **kwargs):
    """Adds a flag whose help ends with its default (when it has one)."""
    default = kwargs.get("default")
    if not (default is None or default is False or default in ("", argparse.SUPPRESS)):
        help += " (default: %(default)s)"
    return parser.add_argument(*names, help=help, **kwargs)


def _image_size(value):
    """`--image-size 96` or `96,128` (height,width) -> (height, width)."""
    try:
        sides = tuple(int(v) for v in value.replace("x", ",").split(","))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"expected a side in pixels (96) or height,width (96,128); got {value!r}")
    return sides * 2 if len(sides) == 1 else sides


def _data_flags(parser):
    group = parser.add_argument_group("data")
    _flag(group, "--text-column", default="text", help="CSV/TSV column or JSONL key of the text")
    _flag(group, "--label-column", default="label", help="CSV/TSV column or JSONL key of the label")
    _flag(group, "--task", choices=["multiclass", "binary", "multilabel", "regression"],
          help="read labels as this task (default: inferred; regression reads numbers)")
    _flag(group, "--encoding", default="utf-8", help="text encoding of CSV/TSV/JSONL and .txt files, e.g. cp1252")
    _flag(group, "--validation-split", type=float, default=0.15, help="fraction of the data for validation")
    _flag(group, "--test-split", type=float, default=0.15, help="fraction of the data for the held-out test")
    _flag(group, "--data-dir", help="TensorFlow Datasets data_dir for tfds:<name>")
    _flag(group, "--download", action="store_true", help="let tfds:<name> download the data set (needs internet)")
    _flag(group, "--image-size", type=_image_size, metavar="SIZE",
          help="pixels the backbone sees, 96 or height,width 96,128 (images, spectrograms; default: the "
               "backbone's; image folders load at 224)")
    _flag(group, "--sample-rate", type=int, default=16000, help="Hz sound clips are resampled to (audio)")
    _flag(group, "--duration", type=float, default=1.0, help="seconds per sound clip (audio)")
    _flag(group, "--sequence-length", type=int, help="tokens per text (default: the backbone's)")
    _flag(group, "--seed", type=int, default=0, help="seeds the split, initialization and shuffling")


def _backbone_flags(parser):
    _flag(parser, "--backbone", help="a name from `kerasft backbones`, or a preset folder (default: "
          + ", ".join(f"{b} for {' and '.join(m)}" for b, m in _default_modalities().items()) + ")")
    _flag(parser, "--no-pretrained", dest="pretrained", action="store_false",
          help="random initial weights instead of the pretrained ones (offline, without the weights)")


def _output_flags(parser, run_dir_help):
    _flag(parser, "--output", help="export folder (default: saved_models/<data name>)")
    _flag(parser, "--run-dir", help=run_dir_help)
    _flag(parser, "--keep", type=int, metavar="N",
          help="keep only the newest N SavedModel versions in the export folder (default: all)")


def build_parser():
    """The `kerasft` argument parser: its subcommands, their flags with descriptions and defaults."""
    fine_tune = library_defaults("kerasft.training", "fine_tune")
    classifier = library_defaults("kerasft.models", "build_classifier")
    head = library_defaults("kerasft.heads", "Head")
    tune = library_defaults("kerasft.tuning.search", "tune")
    parser = _Parser(
        prog="kerasft", description="Transfer learning for Keras 3: pretrained backbones, tuned heads, exports.",
        epilog="Exit codes: 0 ok, 2 bad usage or input, 3 predict skipped unreadable files, 1 unexpected failure. "
               "`kerasft <command> --help` for more.")
    _output_options(parser, False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    parser.commands = commands

    def command(name, help_text, func, tensorflow=True):
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {EXAMPLES[name]}",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func, tensorflow=tensorflow)
        _flag(sub, "--config", help="a YAML file of flag values (keys as the flags, with _), e.g. run.yaml")
        _output_options(sub, argparse.SUPPRESS)
        return sub

    sub = command("backbones", "list the backbones: modality, parameters, input size, weights, defaults",
                  cmd_backbones)
    _flag(sub, "--modality", choices=["text", "image", "audio"], help="only the backbones for this input")
    _flag(sub, "--json", action="store_true", help="a JSON list instead of a table")

    sub = command("train", "fine-tune a backbone on data, evaluate on its test split, export, write a report",
                  cmd_train)
    _flag(sub, "data", help=DATA_HELP)
    _backbone_flags(sub)
    _flag(sub, "--trainable", default=classifier.get("trainable"), help="frozen, top:N (the top N blocks) or all")
    units = ",".join(map(str, head["units"])) if "units" in head else None
    _flag(sub, "--head-units", default=units, help="hidden layer widths of the head, e.g. 256 or 256,128"
          + (" (default: none, a linear head)" if units == "" else ""))
    _flag(sub, "--dropout", type=float, default=head.get("dropout"), help="dropout rate before each head layer")
    _flag(sub, "--epochs", type=int, default=fine_tune.get("epochs"),
          help="most epochs of the last phase (of the head when frozen, else of the unfrozen blocks)"
          + _until_stopped(fine_tune, "epochs"))
    _flag(sub, "--warmup-epochs", type=int, default=fine_tune.get("warmup_epochs"),
          help="most head-only epochs before unfreezing (top:N and all; 0 skips them)"
          + _until_stopped(fine_tune, "warmup_epochs"))
    _flag(sub, "--batch-size", type=int, default=fine_tune.get("batch_size"), help="examples per training step")
    _flag(sub, "--learning-rate", type=float, default=fine_tune.get("learning_rate"),
          help="learning rate of the head (phase 1)")
    _flag(sub, "--fine-tune-learning-rate", type=float, default=fine_tune.get("fine_tune_learning_rate"),
          help="learning rate of the unfrozen blocks (phase 2; default: 5e-5 text, 1e-4 images)")
    _flag(sub, "--time-limit", type=float, metavar="SECONDS",
          help="seconds training may take: no epoch starts that would overrun it, the best weights are kept")
    _output_flags(sub, "report and TensorBoard logs (default: runs/<data name>, or runs/<data name>-2, -3, ... "
                       "when taken)")
    _flag(sub, "--overwrite", action="store_true", help="replace the run folder of an earlier run of that name")
    _data_flags(sub)

    sub = command("tune", "search heads, unfreeze depth and training settings with KerasTuner; export the best "
                  "(or an ensemble of the best)", cmd_tune)
    _flag(sub, "data", help=DATA_HELP)
    _backbone_flags(sub)
    _flag(sub, "--tuner", default=tune.get("tuner"),
          help="halving (successive halving over unfreeze depths, frozen trials first), hyperband, random or "
               "bayesian")
    _flag(sub, "--max-trials", type=int, default=tune.get("max_trials"), help="trials to run, in all")
    _flag(sub, "--time-limit", type=float, metavar="SECONDS",
          help="seconds for the whole command: the search gets 70%%, and no trial starts that would overrun it; "
               "the rest evaluates, exports and writes the report")
    _flag(sub, "--epochs", type=int, default=tune.get("epochs"),
          help="most epochs of a trial's last phase" + _until_stopped(tune, "epochs"))
    _flag(sub, "--space", help='JSON narrowing the search space, e.g. \'{"trainable": "frozen", "units": [128, 256]}\'')
    _flag(sub, "--objective", default=tune.get("objective"),
          help="the metric trials are ranked by: val_accuracy, val_loss (regression: val_mae)")
    _flag(sub, "--directory", default=tune.get("directory"), help="where searches are kept")
    _flag(sub, "--project-name", help="the search's folder in --directory; an existing one is resumed "
                                      "(default: <data name>_<backbone>_<tuner>)")
    _flag(sub, "--overwrite", action="store_true", help="delete an existing search (and its report) of that name")
    _flag(sub, "--cache-on-disk", action="store_true",
          help="keep the frozen bottoms' outputs in <search>/features, so a resumed search reuses them")
    _flag(sub, "--top-k", type=int, default=1, help="ensemble the k best trials (1: the best alone)")
    _flag(sub, "--method", default="mean", choices=ENSEMBLE_METHODS, help="how --top-k > 1 trials are combined")
    _output_flags(sub, "report folder (default: <search>/report, or report-2, -3, ... when taken)")
    _data_flags(sub)

    sub = command("auto", "within a time budget: choose backbones for the data, search them, fuse the best, "
                  "calibrate, evaluate, export and write a report", cmd_auto)
    _flag(sub, "data", help=DATA_HELP)
    _flag(sub, "--time-limit", type=float, default=300, metavar="SECONDS",
          help="seconds for the whole run (it ends within about 15%% of it)")
    _flag(sub, "--directory", default="runs", help="where the searches and the report go (<directory>/<data name>)")
    _flag(sub, "--output", help="export folder (default: saved_models/<data name>)")
    _data_flags(sub)

    sub = command("ensemble", "combine saved classifiers into one model and export it", cmd_ensemble)
    _flag(sub, "models", nargs="+", help=".keras files or export folders")
    _flag(sub, "--method", default="mean", choices=ENSEMBLE_METHODS,
          help="average probabilities (mean, weighted), learn a combiner (stacking) or average weights (soups)")
    _flag(sub, "--calibrate", action="store_true",
          help="fold a temperature fitted on the validation split into the ensemble (needs --data)")
    _flag(sub, "--data", help="validation data (needed by weighted and greedy_soup; also evaluates)")
    _flag(sub, "--output", help="export folder (required)")
    _flag(sub, "--keep", type=int, metavar="N", help="keep only the newest N SavedModel versions (default: all)")
    _data_flags(sub)

    sub = command("export", "write a .keras model as model.keras, a SavedModel version, labels and a card", cmd_export)
    _flag(sub, "model", help=".keras file or export folder")
    _flag(sub, "output", help="export folder (a new SavedModel version is added)")
    _flag(sub, "--formats", default="keras,saved_model", help="any of keras, saved_model, litert, comma-separated")
    _flag(sub, "--quantize", help="LiteRT quantizations besides float32: float16, dynamic, int8")
    _flag(sub, "--version", type=int, help="SavedModel version to write (default: the next free one)")
    _flag(sub, "--data", help="data for the model card, LiteRT checks and int8 calibration")
    _flag(sub, "--keep", type=int, metavar="N", help="keep only the newest N SavedModel versions (default: all)")
    _data_flags(sub)

    sub = command("evaluate", "accuracy, macro-F1 and per-class metrics on held-out data", cmd_evaluate)
    _flag(sub, "model", help=".keras file or export folder")
    _flag(sub, "data", help=DATA_HELP)
    _flag(sub, "--all", action="store_true", help="score every example of the data (a held-out file), not a split")
    _flag(sub, "--split", choices=["test", "validation", "train"],
          help="the split to score, made as `train` makes it (default: test)")
    _flag(sub, "--json", action="store_true", help="the metrics as JSON")
    _data_flags(sub)

    sub = command("predict", "classify texts, image files or sound files with an exported model", cmd_predict)
    _flag(sub, "model", help="export folder, .keras, SavedModel version folder or .tflite")
    _flag(sub, "inputs", nargs="*",
          help="files and folders (each must exist). Text models: .txt (a text per line), .csv/.tsv/.jsonl (the "
               "--text-column), folders of .txt files (a text per file). Image and sound models: their files and "
               "folders of them. - reads stdin: a text (or a file path) per line. An unreadable image or sound "
               "file is named on stderr and skipped (exit code 3)")
    _flag(sub, "--text", action="append", metavar="TEXT", help="a text to classify (repeat for more)")
    _flag(sub, "--text-column", default="text", help="CSV/TSV column or JSONL key of the texts")
    _flag(sub, "--encoding", default="utf-8", help="text encoding of .txt/.csv/.tsv/.jsonl inputs, e.g. cp1252")
    _flag(sub, "--json", action="store_true", help="one JSON object per line")

    sub = command("cache", "show or clear kerasft's user cache (converted presets, spilled feature caches)",
                  cmd_cache, tensorflow=False)
    _flag(sub, "action", choices=["info", "clear"], help="info: sizes; clear: delete (all is made again on use)")
    _flag(sub, "--features", action="store_true", help="clear only the feature caches")
    return parser


def _output_options(parser, default):
    """--quiet, --verbose and --debug, before or after the command (`default` SUPPRESS after it, so the
    subcommand does not reset a flag given before it)."""
    _flag(parser, "-q", "--quiet", action="store_true", default=default, help="print only results and errors")
    _flag(parser, "-v", "--verbose", action="store_true", default=default,
          help="Keras progress bars and TensorFlow's own start-up lines")
    _flag(parser, "--debug", action="store_true", default=default,
          help="show the traceback of an error (and TensorFlow's lines)")


def parse(argv):
    """Parses the command line; values from `--config` fill in the flags the line does not give.

    Returns:
        `(args, the subcommand's parser)`.
    """
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    command = next((a for a in argv if a in EXAMPLES), None)
    subparser = parser.commands.choices.get(command)
    if known.config and subparser:
        import yaml

        try:
            with open(known.config, encoding="utf-8") as file:
                config = yaml.safe_load(file) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"--config {known.config}: {error}") from None
        if not isinstance(config, dict):
            raise UsageError(f"--config {known.config}: expected a mapping of flag names to values.")
        config = {str(k).replace("-", "_"): v for k, v in config.items()}
        flags = {action.dest for action in subparser._actions if action.option_strings}
        unknown = sorted(set(config) - flags)
        if unknown:
            raise UsageError(f"--config {known.config}: unknown keys {unknown} for `kerasft {command}` "
                             f"(known: {sorted(flags - {'help', 'config', 'debug'})}).")
        if config.get("image_size") is not None:
            size = config["image_size"]
            config["image_size"] = _image_size(",".join(map(str, size)) if isinstance(size, (list, tuple))
                                               else str(size))
        subparser.set_defaults(**config)
    # predict's inputs may follow its flags (`predict model --text "..." a.txt`), which argparse leaves over.
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict":
        args.inputs += [item for item in extra if item == "-" or not item.startswith("-")]
        extra = [item for item in extra if item.startswith("-") and item != "-"]
    if extra:
        (subparser or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.quiet and args.verbose:
        raise UsageError("--quiet and --verbose ask for opposite things; pass one.")
    if args.command == "ensemble" and not args.output:
        raise UsageError("kerasft ensemble: --output is required (on the line or in --config).")
    if getattr(args, "keep", None) is not None and args.keep < 1:
        raise UsageError(f"--keep takes a number of versions >= 1. Received: --keep {args.keep}")
    _check_paths(args)
    return args, subparser


def main(argv=None):
    """Runs the command line; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    subparser = None
    try:
        args, subparser = parse(argv)
        if args.tensorflow:
            start_tensorflow(verbose=args.verbose or args.debug)
        with _output_filters(args):
            return args.func(args) or EXIT_OK
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except (ValueError, OSError, KeyError) as error:  # kerasft's errors are ValueErrors with a clear message
        if debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if subparser is not None:
            message = cli_spelling(message, subparser)
        print(f"kerasft: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("kerasft: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not the user's input: show where
        if debug:
            raise
        import traceback

        traceback.print_exc()
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())

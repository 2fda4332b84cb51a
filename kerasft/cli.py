"""The `kerasft` command line: the Python API's main calls, one subcommand each.

```
kerasft backbones                                  what can be fine-tuned, and from which weights
kerasft train reviews.csv --backbone minilm_l6     fine-tune, evaluate, export, write a report
kerasft tune photos/ --backbone efficientnet_lite0 --max-trials 10 --top-k 3
kerasft ensemble a.keras b.keras --method greedy_soup --data reviews.csv --output saved_models/ens
kerasft export model.keras saved_models/reviews --formats keras,saved_model,litert
kerasft evaluate saved_models/reviews reviews.csv
kerasft predict saved_models/reviews "The film was a delight." --json
kerasft cache info                                 the user cache; `kerasft cache clear` empties it
```
Data is a folder (one subfolder per class), a `.csv`/`.tsv`/`.jsonl` file, a
TensorFlow Datasets name as `tfds:<name>` (prepared offline), or a sample as
`sample:bbc_news` / `sample:fashion_mnist` / `sample:spoken_words`. `--config run.yaml` takes the same
keys as the flags (`batch_size: 16`); flags given on the line win.

Exit codes: 0 done; 2 bad usage or bad input, with a one-line message (the
traceback only with `--debug`); 1 an unexpected failure.
"""

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# Share of `kerasft tune --time-limit` the search gets; evaluating, exporting and reporting take the rest.
SEARCH_SHARE = 0.7
# As kerasft.ensembling.METHODS (a test checks), without importing TensorFlow to parse arguments.
ENSEMBLE_METHODS = ["mean", "weighted", "stacking", "uniform_soup", "greedy_soup"]


class UsageError(ValueError):
    """A flag, a file or a value given on the command line is wrong."""


# === Data and models from the command line ===

def load_data(source, args):
    """A TaskData from a folder, a delimited/JSONL file, `tfds:<name>` or `sample:<name>`."""
    import kerasft as kft

    splits = dict(validation_split=args.validation_split, test_split=args.test_split, seed=args.seed)
    if source.startswith("sample:"):
        name = source.split(":", 1)[1]
        samples = {"bbc_news": kft.samples.bbc_news, "fashion_mnist": kft.samples.fashion_mnist,
                   "spoken_words": kft.samples.spoken_words}
        if name not in samples:
            raise UsageError(f"Unknown sample {name!r}; expected one of {', '.join(samples)}.")
        return samples[name](seed=args.seed)
    if source.startswith("tfds:"):
        image_size = (args.image_size, args.image_size) if args.image_size else None
        return kft.data.from_tfds(source.split(":", 1)[1], data_dir=args.data_dir, image_size=image_size,
                                  seed=args.seed)
    path = Path(source)
    if path.is_dir():
        size = args.image_size or 224
        return kft.data.from_directory(path, image_size=(size, size), sample_rate=args.sample_rate,
                                       duration=args.duration, **splits)
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
            raise UsageError(f"{source}: expected a folder, or a .csv, .tsv or .jsonl file.")
        return kft.data.from_csv(path, text_column=args.text_column, label_column=args.label_column, **splits)
    raise UsageError(f"{source}: no such file or folder (nor a tfds:<name> or sample:<name>).")


def _load_model(path):
    """A keras.Model from a `.keras` file or an export folder's `model.keras`."""
    import keras
    import keras_hub  # noqa: F401  registers the KerasHub layers a text model holds

    from kerasft.exporting import KERAS_FILE

    path = Path(path)
    if path.is_dir() and (path / KERAS_FILE).is_file():
        path = path / KERAS_FILE
    if not (path.is_file() and path.suffix == ".keras"):
        raise UsageError(f"{path}: expected a .keras file or an export folder holding {KERAS_FILE}.")
    return keras.models.load_model(path, compile=False)


def _head(args):
    import kerasft as kft

    try:
        units = tuple(int(u) for u in args.head_units.split(",") if u) if args.head_units else ()
    except ValueError:
        raise UsageError(f"--head-units takes widths separated by commas, e.g. 256,128. Received: "
                         f"{args.head_units!r}") from None
    return kft.Head(units=units, dropout=args.dropout)


def _input_size(args, data):
    if data.modality in ("image", "audio"):
        return {"image_size": (args.image_size, args.image_size) if args.image_size else None}
    return {"sequence_length": args.sequence_length}


def _default_name(data):
    from kerasft import backbones

    return backbones.short_name(data.name)


# === Subcommands ===


def cmd_backbones(args):
    from kerasft import backbones

    rows = []
    for name in backbones.names(args.modality):
        spec = backbones.get(name)
        size = (f"{spec.image_size[0]}x{spec.image_size[1]}" if spec.modality == "image"
                else "whole text" if spec.adapt else f"{spec.sequence_length} tokens")
        rows.append({"name": name, "modality": spec.modality, "params": spec.params, "input": size,
                     "weights": spec.source})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<20} {'modality':<8} {'params':>8}  {'input':<11} weights")
    for row in rows:
        params = f"{row['params'] / 1e6:.1f}M" if row["params"] else "?"
        print(f"{row['name']:<20} {row['modality']:<8} {params:>8}  {row['input']:<11} {row['weights']}")


def cmd_train(args):
    import keras

    import kerasft as kft
    from kerasft import report

    data = load_data(args.data, args)
    print(data.summary(), flush=True)
    name = _default_name(data)
    run_dir = Path(args.run_dir or f"runs/{name}")
    model = kft.build_classifier(args.backbone, data=data, head=_head(args), trainable=args.trainable,
                                 seed=args.seed, **_input_size(args, data))
    history = kft.fine_tune(model, data, epochs=args.epochs, warmup_epochs=args.warmup_epochs,
                            batch_size=args.batch_size, learning_rate=args.learning_rate,
                            fine_tune_learning_rate=args.fine_tune_learning_rate, seed=args.seed,
                            callbacks=[keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"))],
                            time_limit=args.time_limit, verbose=2 if args.verbose else 1)
    evaluation = kft.evaluate(model, data)
    print(evaluation.summary())
    exported = kft.export(model, args.output or f"saved_models/{name}", data=data, metrics=evaluation,
                          hyperparameters=_settings(args))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.json").write_text(report.history_json(history))
    page = report.write_report(run_dir, evaluation=evaluation, history=history, data=data,
                               title=f"kerasft train: {args.backbone} on {data.name}",
                               details={**_settings(args), "export": exported.path})
    print(f"test accuracy {evaluation.metrics.get('accuracy', float('nan')):.4f}; exported to {exported.path} "
          f"(SavedModel version {exported.version}); report {page}")


def cmd_tune(args):
    import kerasft as kft
    from kerasft import report

    try:
        space = json.loads(args.space) if args.space else None
    except json.JSONDecodeError as error:
        raise UsageError(f"--space is not valid JSON ({error}): {args.space}") from None
    data = load_data(args.data, args)
    print(data.summary(), flush=True)
    name = _default_name(data)
    # The search gets SEARCH_SHARE of --time-limit; the rest evaluates, exports and writes the report.
    search = kft.tune(data, backbone=args.backbone, tuner=args.tuner, max_trials=args.max_trials, epochs=args.epochs,
                      time_limit=args.time_limit * SEARCH_SHARE if args.time_limit else None,
                      directory=args.directory, project_name=args.project_name, overwrite=args.overwrite,
                      space=space, objective=args.objective, seed=args.seed, **_input_size(args, data))
    print(search.summary())
    members = search.best_models(min(args.top_k, sum(r["status"] == "COMPLETED" for r in search.results())))
    model = members[0] if len(members) == 1 else kft.ensemble(members, method=args.method, validation=data)
    evaluation = kft.evaluate(model, data)
    print(evaluation.summary())
    exported = kft.export(model, args.output or f"saved_models/{name}", data=data, metrics=evaluation,
                          hyperparameters={"search": str(search.directory), "members": len(members),
                                           "method": args.method if len(members) > 1 else "best trial"})
    page = report.write_report(args.run_dir or search.directory / "report", evaluation=evaluation, search=search,
                               data=data, title=f"kerasft tune: {args.backbone} on {data.name}",
                               details={**_settings(args), "export": exported.path})
    print(f"test accuracy {evaluation.metrics.get('accuracy', float('nan')):.4f}; exported to {exported.path}; "
          f"report {page}")


def cmd_auto(args):
    import kerasft as kft

    data = load_data(args.data, args)
    print(data.summary(), flush=True)
    name = _default_name(data)
    result = kft.auto(data, time_limit=args.time_limit, directory=args.directory, name=name,
                      export_path=args.output, seed=args.seed)
    print(result.evaluation.summary())
    print(f"{result.method}: test accuracy {result.evaluation.metrics['accuracy']:.4f}; exported to "
          f"{result.exported.path}; report {result.report}; {result.seconds:.0f} s")


def cmd_ensemble(args):
    import kerasft as kft

    members = [_load_model(path) for path in args.models]
    data = load_data(args.data, args) if args.data else None
    model = kft.ensemble(members, method=args.method, validation=data, calibrate=args.calibrate)
    metrics = kft.evaluate(model, data) if data is not None else None
    if metrics is not None:
        print(metrics.summary())
    exported = kft.export(model, args.output, data=data, metrics=metrics)
    print(f"{args.method} of {len(members)} members exported to {exported.path}")


def cmd_export(args):
    import kerasft as kft

    model = _load_model(args.model)
    data = load_data(args.data, args) if args.data else None
    formats = tuple(f for f in args.formats.split(",") if f)
    quantize = tuple(q for q in args.quantize.split(",") if q) if args.quantize else None
    exported = kft.export(model, args.output, data=data, version=args.version, formats=formats, quantize=quantize)
    print(json.dumps({"path": exported.path, "version": exported.version, "keras": exported.keras,
                      "saved_model": exported.saved_model, "litert": exported.litert}, indent=1))


def cmd_evaluate(args):
    import kerasft as kft

    model = _load_model(args.model)
    data = load_data(args.data, args)
    evaluation = kft.evaluate(model, getattr(data, args.split), class_names=data.class_names)
    if args.json:
        print(json.dumps({"split": args.split, **evaluation.metrics, "per_class": evaluation.per_class}, indent=1))
    else:
        print(f"{data.name}, {args.split} split")
        print(evaluation.summary())


def cmd_predict(args):
    import kerasft as kft

    predictor = kft.load(args.model)
    inputs, shown = _prediction_inputs(args, predictor.modality)
    labels, scores = predictor.predict_labels(inputs)
    for item, label, score in zip(shown, labels, scores):
        if args.json:
            print(json.dumps({"input": item, "label": label, "score": round(float(score), 6)}))
        else:
            print(f"{label}\t{score:.4f}\t{item}")


def _prediction_inputs(args, modality):
    """The raw inputs and how to show each: image or sound files (or folders of them), or texts."""
    from kerasft import audio
    from kerasft import data as data_module

    if modality in ("image", "audio"):
        kind, extensions = (("image", data_module.IMAGE_EXTENSIONS) if modality == "image"
                            else ("sound", audio.AUDIO_EXTENSIONS))
        files = []
        for item in args.inputs:
            path = Path(item)
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                                and p.suffix.lower() in extensions)
            elif path.is_file():
                files.append(path)
            else:
                raise UsageError(f"{item}: no such {kind} file or folder.")
        if not files:
            raise UsageError(f"No {kind} files found in " + ", ".join(args.inputs) + ".")
        return [str(f) for f in files], [str(f) for f in files]
    texts = []
    for item in args.inputs:
        if item == "-":
            texts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
        elif item.endswith(".txt") and os.path.isfile(item):
            with open(item, encoding="utf-8") as file:
                texts += [line.rstrip("\n") for line in file if line.strip()]
        else:
            texts.append(item)
    if not texts:
        raise UsageError("No text to classify: pass texts, a .txt file (one text per line) or - for stdin.")
    return texts, [t if len(t) <= 60 else t[:57] + "..." for t in texts]


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
    skip = {"command", "func", "config", "debug", "verbose", "json"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


# === The parser ===

EXAMPLES = {
    "backbones": "kerasft backbones --modality text",
    "train": "kerasft train reviews.csv --backbone minilm_l6 --trainable top:1 --epochs 2 "
             "--output saved_models/reviews",
    "tune": "kerasft tune photos/ --backbone efficientnet_lite0 --max-trials 10 --top-k 3 --method mean",
    "auto": "kerasft auto sample:bbc_news --time-limit 300",
    "ensemble": "kerasft ensemble a.keras b.keras c.keras --method greedy_soup --data reviews.csv --output "
                "saved_models/soup",
    "export": "kerasft export runs/best.keras saved_models/reviews --formats keras,saved_model,litert --quantize int8 "
              "--data reviews.csv",
    "evaluate": "kerasft evaluate saved_models/reviews reviews.csv --json",
    "predict": "kerasft predict saved_models/reviews \"What a match!\" texts.txt --json",
    "cache": "kerasft cache info; kerasft cache clear --features",
}


def _data_flags(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--text-column", default="text", help="CSV/TSV column or JSONL key of the text")
    group.add_argument("--label-column", default="label", help="CSV/TSV column or JSONL key of the label")
    group.add_argument("--validation-split", type=float, default=0.15, help="fraction for validation")
    group.add_argument("--test-split", type=float, default=0.15, help="fraction for the held-out test")
    group.add_argument("--data-dir", help="TensorFlow Datasets data_dir for tfds:<name>")
    group.add_argument("--image-size", type=int, help="side in pixels the backbone sees (images, spectrograms)")
    group.add_argument("--sample-rate", type=int, default=16000, help="Hz sound clips are resampled to (audio)")
    group.add_argument("--duration", type=float, default=1.0, help="seconds per sound clip (audio)")
    group.add_argument("--sequence-length", type=int, help="tokens per text (text)")
    group.add_argument("--seed", type=int, default=0, help="seeds the split, initialization and shuffling")


def _model_flags(parser):
    parser.add_argument("--backbone", help="a name from `kerasft backbones`, or a preset folder (required)")
    parser.add_argument("--head-units", default="", help="hidden layer widths, e.g. 256 or 256,128")
    parser.add_argument("--dropout", type=float, default=0.1)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="kerasft", description="Transfer learning for Keras 3: pretrained backbones, tuned heads, exports.",
        epilog="Exit codes: 0 ok, 2 bad usage or input, 1 unexpected failure. `kerasft <command> --help` for more.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    parser.commands = commands

    def command(name, help_text, func):
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  epilog=f"example:\n  {EXAMPLES[name]}", formatter_class=argparse.RawTextHelpFormatter)
        sub.set_defaults(func=func)
        sub.add_argument("--config", help="a YAML file of flag values (keys as the flags, with _), e.g. run.yaml")
        sub.add_argument("--debug", action="store_true", help="show the traceback of an error")
        return sub

    sub = command("backbones", "list the backbones: modality, parameters, input size, weights", cmd_backbones)
    sub.add_argument("--modality", choices=["text", "image", "audio"])
    sub.add_argument("--json", action="store_true")

    sub = command("train", "fine-tune a backbone on data, evaluate on its test split, export, write a report",
                  cmd_train)
    sub.add_argument("data", help="folder, .csv/.tsv/.jsonl, tfds:<name> or sample:<name>")
    _model_flags(sub)
    sub.add_argument("--trainable", default="frozen", help="frozen, top:N or all")
    sub.add_argument("--epochs", type=int, help="most epochs at the trainable setting (default: until validation "
                     "stops improving)")
    sub.add_argument("--warmup-epochs", type=int, help="most head-only epochs before unfreezing (default: until "
                     "validation stops improving; 0 skips the warm-up)")
    sub.add_argument("--time-limit", type=float, help="seconds the training may take")
    sub.add_argument("--batch-size", type=int, default=32)
    sub.add_argument("--learning-rate", type=float, default=1e-3, help="of the head (phase 1)")
    sub.add_argument("--fine-tune-learning-rate", type=float, help="of the unfrozen blocks (phase 2)")
    sub.add_argument("--output", help="export folder (default saved_models/<data name>)")
    sub.add_argument("--run-dir", help="report and TensorBoard logs (default runs/<data name>)")
    sub.add_argument("--verbose", action="store_true", help="Keras progress bars instead of a line per epoch")
    _data_flags(sub)

    sub = command("tune", "search heads, unfreeze depth and training settings with KerasTuner; export the best "
                  "(or an ensemble of the best)", cmd_tune)
    sub.add_argument("data", help="folder, .csv/.tsv/.jsonl, tfds:<name> or sample:<name>")
    sub.add_argument("--backbone", help="a name from `kerasft backbones`, or a preset folder (required)")
    sub.add_argument("--tuner", default="halving", choices=["halving", "hyperband", "random", "bayesian"])
    sub.add_argument("--time-limit", type=float, help="seconds for the whole command (the search gets 70%%)")
    sub.add_argument("--max-trials", type=int, default=10)
    sub.add_argument("--epochs", type=int, help="most epochs of a trial's last phase (default: until validation "
                     "stops improving; Hyperband: 10)")
    sub.add_argument("--space", help='JSON narrowing the space, e.g. \'{"trainable": "frozen", "units": [128, 256]}\'')
    sub.add_argument("--objective", default="val_accuracy")
    sub.add_argument("--directory", default="runs", help="where searches are kept (resumed unless --overwrite)")
    sub.add_argument("--project-name")
    sub.add_argument("--overwrite", action="store_true", help="delete an existing search of that name first")
    sub.add_argument("--top-k", type=int, default=1, help="ensemble the k best trials (1: the best alone)")
    sub.add_argument("--method", default="mean", choices=ENSEMBLE_METHODS)
    sub.add_argument("--output", help="export folder (default saved_models/<data name>)")
    sub.add_argument("--run-dir", help="report folder (default <search>/report)")
    _data_flags(sub)

    sub = command("auto", "within a time budget: choose backbones, search, fuse the best, calibrate, evaluate, "
                  "export, write a report", cmd_auto)
    sub.add_argument("data", help="folder, .csv/.tsv/.jsonl, tfds:<name> or sample:<name>")
    sub.add_argument("--time-limit", type=float, default=300, help="seconds for the whole run")
    sub.add_argument("--directory", default="runs", help="where the searches and the report go")
    sub.add_argument("--output", help="export folder (default saved_models/<data name>)")
    _data_flags(sub)

    sub = command("ensemble", "combine saved classifiers into one model and export it", cmd_ensemble)
    sub.add_argument("models", nargs="+", help=".keras files or export folders")
    sub.add_argument("--method", default="mean", choices=ENSEMBLE_METHODS)
    sub.add_argument("--calibrate", action="store_true",
                     help="fold a temperature fitted on the validation split into the ensemble (needs --data)")
    sub.add_argument("--data", help="validation data (needed by weighted and greedy_soup; also evaluates)")
    sub.add_argument("--output", help="export folder (required)")
    _data_flags(sub)

    sub = command("export", "write a .keras model as model.keras, a SavedModel version, labels and a card", cmd_export)
    sub.add_argument("model", help=".keras file or export folder")
    sub.add_argument("output", help="export folder (a new SavedModel version is added)")
    sub.add_argument("--formats", default="keras,saved_model", help="any of keras, saved_model, litert")
    sub.add_argument("--quantize", help="LiteRT quantizations: float16, dynamic, int8")
    sub.add_argument("--version", type=int, help="SavedModel version (default: the next free one)")
    sub.add_argument("--data", help="data for the model card, LiteRT checks and int8 calibration")
    _data_flags(sub)

    sub = command("evaluate", "accuracy, macro-F1 and per-class metrics on a split of the data", cmd_evaluate)
    sub.add_argument("model", help=".keras file or export folder")
    sub.add_argument("data", help="folder, .csv/.tsv/.jsonl, tfds:<name> or sample:<name> (split as `train` "
                                  "splits it)")
    sub.add_argument("--split", default="test", choices=["test", "validation", "train"])
    sub.add_argument("--json", action="store_true")
    _data_flags(sub)

    sub = command("predict", "classify image files, folders of images, or texts with an exported model", cmd_predict)
    sub.add_argument("model", help="export folder, .keras, SavedModel version folder or .tflite")
    sub.add_argument("inputs", nargs="+", help="image files or folders; or texts, .txt files (a text per line), - "
                                               "for stdin")
    sub.add_argument("--json", action="store_true", help="one JSON object per line")

    sub = command("cache", "show or clear kerasft's user cache (converted presets, spilled feature caches)",
                  cmd_cache)
    sub.add_argument("action", choices=["info", "clear"])
    sub.add_argument("--features", action="store_true", help="clear only the feature caches")
    return parser


def parse(argv):
    """Parses the command line; values from `--config` fill in the flags the line does not give."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    command = next((a for a in argv if a in EXAMPLES), None)
    if known.config and command:
        import yaml

        try:
            with open(known.config, encoding="utf-8") as file:
                config = yaml.safe_load(file) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"--config {known.config}: {error}") from None
        if not isinstance(config, dict):
            raise UsageError(f"--config {known.config}: expected a mapping of flag names to values.")
        config = {str(k).replace("-", "_"): v for k, v in config.items()}
        subparser = parser.commands.choices[command]
        flags = {action.dest for action in subparser._actions if action.option_strings}
        unknown = sorted(set(config) - flags)
        if unknown:
            raise UsageError(f"--config {known.config}: unknown keys {unknown} for `kerasft {command}` "
                             f"(known: {sorted(flags - {'help', 'config', 'debug'})}).")
        subparser.set_defaults(**config)
    args = parser.parse_args(argv)
    for flag in _REQUIRED.get(args.command, ()):
        if not getattr(args, flag):
            raise UsageError(f"kerasft {args.command}: --{flag} is required (on the line or in --config)"
                             + ("; `kerasft backbones` lists them." if flag == "backbone" else "."))
    return args


_REQUIRED = {"train": ("backbone",), "tune": ("backbone",), "ensemble": ("output",)}


def main(argv=None):
    """Runs the command line; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        args = parse(argv)
        args.func(args)
    except SystemExit as exit_:  # argparse: usage errors (2) and --help (0)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except (ValueError, OSError, KeyError) as error:  # kerasft's errors are ValueErrors with a clear message
        if debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
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
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

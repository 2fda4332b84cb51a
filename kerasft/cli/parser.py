"""The `kerasft` argument parser (subcommands, flags, `--config`) and `main`, which runs a command line."""

import argparse
import ast
import sys
from pathlib import Path

from kerasft.cli.commands import (
    cmd_auto,
    cmd_backbones,
    cmd_cache,
    cmd_ensemble,
    cmd_evaluate,
    cmd_export,
    cmd_predict,
    cmd_train,
    cmd_tune,
)
from kerasft.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, cli_spelling
from kerasft.cli.loading import check_paths, default_modalities
from kerasft.cli.output import output_filters, start_tensorflow

# As kerasft.ensembling.METHODS (a test checks), without importing TensorFlow to parse arguments.
ENSEMBLE_METHODS = ["mean", "weighted", "stacking", "uniform_soup", "greedy_soup"]
DATA_HELP = "a folder (a subfolder per class), .csv/.tsv/.jsonl, tfds:<name> or sample:<name>"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other error of the command line."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"kerasft: error: {message} (`{self.prog} --help` describes the flags)\n")


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
    source = Path(__file__).parents[1] / relative.with_suffix(".py")
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
    _flag(group, "--label-column", default="label",
          help="CSV/TSV column or JSONL key of the label; several, comma-separated (topic,urgency), make one "
               "model with a head per target")
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
          + ", ".join(f"{b} for {' and '.join(m)}" for b, m in default_modalities().items()) + ")")
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
    check_paths(args)
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
        with output_filters(args):
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

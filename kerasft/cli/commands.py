"""The subcommands: `cmd_<name>(args)` runs `kerasft <name>` through the Python API."""

import json
import shutil
import sys
from pathlib import Path

from kerasft.cli.errors import EXIT_OK, EXIT_SKIPPED, UsageError
from kerasft.cli.loading import DEFAULT_BACKBONES, default_modalities, load_data, load_model, prediction_inputs
from kerasft.cli.output import note, verbose

# Share of `kerasft tune --time-limit` the search gets; evaluating, exporting and reporting take the rest.
SEARCH_SHARE = 0.7


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


def _backbone(args, data):
    """The --backbone, or the default for the data's modality (said in the output)."""
    if args.backbone:
        return args.backbone
    backbone = DEFAULT_BACKBONES[data.modality]
    note(args, f"kerasft: backbone {backbone} (the default for {data.modality}; --backbone picks another, "
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


def _evaluate_and_export(args, model, data, settings):
    """`(evaluation on the test split, exporting.Exported)`: what `train` and `tune` end with."""
    import kerasft as kft

    evaluation = kft.evaluate(model, data)
    note(args, evaluation.summary())
    return evaluation, _export(args, model, data, evaluation, settings)


def _print_result(evaluation, exported, page):
    print(f"test {evaluation.headline()}; exported to {exported.path} (SavedModel version {exported.version}); "
          f"report {page}")


def _export(args, model, data, metrics, hyperparameters):
    import kerasft as kft

    output = args.output or f"saved_models/{_short_name(data.name)}"
    note(args, f"kerasft: exporting to {output} (model.keras and a SavedModel version)")
    return kft.export(model, output, data=data, metrics=metrics, hyperparameters=hyperparameters, keep=args.keep)


def _short_name(name):
    from kerasft import backbones

    return backbones.short_name(name)


def cmd_backbones(args):
    from kerasft import backbones

    defaults = default_modalities()
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
    note(args, data.summary())
    backbone = _backbone(args, data)
    run_dir = _run_folder(args.run_dir, Path("runs") / _short_name(data.name), args.overwrite)
    note(args, f"kerasft: run folder {run_dir} (report, TensorBoard logs)")
    model = kft.build_classifier(backbone, data=data, head=_head(args), pretrained=args.pretrained, seed=args.seed,
                                 **_given(args, "trainable"), **_input_size(args, data))
    history = kft.fine_tune(model, data, seed=args.seed, verbose=verbose(args),
                            callbacks=[keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"))],
                            **_given(args, "epochs", "warmup_epochs", "batch_size", "learning_rate",
                                     "fine_tune_learning_rate", "time_limit"))
    improving = _still_improving(history)
    if improving:
        epochs, first, last = improving
        note(args, f"kerasft: the validation loss was still falling at the last epoch ({first:.4f} -> {last:.4f} "
                    f"over {epochs} epochs): more epochs may help, e.g. --epochs {2 * epochs}"
                    + (" and a larger --time-limit" if args.time_limit else ""))
    settings = {**_settings(args), "backbone": backbone}
    evaluation, exported = _evaluate_and_export(args, model, data, settings)
    (run_dir / "history.json").write_text(report.history_json(history))
    page = report.write_report(run_dir, evaluation=evaluation, history=history, data=data,
                               title=f"kerasft train: {backbone} on {data.name}",
                               details={**settings, "export": exported.path})
    _print_result(evaluation, exported, page)


def cmd_tune(args):
    import kerasft as kft
    from kerasft import report

    try:
        space = json.loads(args.space) if args.space else None
    except json.JSONDecodeError as error:
        raise UsageError(f"--space is not valid JSON ({error}): {args.space}") from None
    data = load_data(args.data, args)
    note(args, data.summary())
    backbone = _backbone(args, data)
    search = kft.tune(data, backbone=backbone, overwrite=args.overwrite, space=space, pretrained=args.pretrained,
                      cache_features="disk" if args.cache_on_disk else True, seed=args.seed, verbose=verbose(args),
                      time_limit=args.time_limit * SEARCH_SHARE if args.time_limit else None,
                      **_given(args, "tuner", "max_trials", "epochs", "directory", "project_name", "objective"),
                      **_input_size(args, data))
    note(args, search.summary())
    completed = sum(r["status"] == "COMPLETED" for r in search.results())
    members = search.best_models(min(args.top_k, completed))
    model = members[0] if len(members) == 1 else kft.ensemble(members, method=args.method, validation=data)
    settings = {**_settings(args), "backbone": backbone, "search": str(search.directory), "members": len(members),
                "method": args.method if len(members) > 1 else "best trial"}
    evaluation, exported = _evaluate_and_export(args, model, data, settings)
    run_dir = _run_folder(args.run_dir, Path(search.directory) / "report", args.overwrite)
    page = report.write_report(run_dir, evaluation=evaluation, search=search, data=data,
                               title=f"kerasft tune: {backbone} on {data.name}",
                               details={**settings, "export": exported.path})
    _print_result(evaluation, exported, page)


def cmd_auto(args):
    import kerasft as kft

    data = load_data(args.data, args)
    note(args, data.summary())
    output = args.output or f"saved_models/{_short_name(data.name)}"
    result = kft.auto(data, time_limit=args.time_limit, directory=args.directory, name=_short_name(data.name),
                      export_path=output, seed=args.seed, verbose=0 if args.quiet else 1)
    note(args, result.evaluation.summary())
    print(f"{result.method}: test {result.evaluation.headline()}; exported to {result.exported.path}; report "
          f"{result.report}; {result.seconds:.0f} s")


def cmd_ensemble(args):
    import kerasft as kft

    members = [load_model(path)[0] for path in args.models]
    data = load_data(args.data, args) if args.data else None
    model = kft.ensemble(members, method=args.method, validation=data, calibrate=args.calibrate)
    metrics = kft.evaluate(model, data) if data is not None else None
    if metrics is not None:
        note(args, metrics.summary())
    exported = kft.export(model, args.output, data=data, metrics=metrics, keep=args.keep)
    print(f"{args.method} of {len(members)} members exported to {exported.path}")


def cmd_export(args):
    import kerasft as kft

    model, class_names = load_model(args.model)
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
    model, model_classes = load_model(args.model)
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
    inputs, shown, skipped = prediction_inputs(args, predictor.modality)
    for item, why in skipped:
        print(f"kerasft: skipped {item}: {why}", file=sys.stderr)
    if not inputs:
        raise UsageError(f"None of the {len(skipped)} files could be read (each is named above).")
    predictions = predictor.predict_labels(inputs)
    targets = predictions if isinstance(predictions, dict) else {None: predictions}  # a multi-task model: per target
    for i, item in enumerate(shown):
        answers = {target: (labels[i], float(scores[i])) for target, (labels, scores) in targets.items()}
        if args.json:
            fields = {target: {"label": label, "score": round(score, 6)} for target, (label, score) in answers.items()}
            print(json.dumps({"input": item, **fields.pop(None, fields)}))
        else:
            if predictor.modality == "text":  # the text itself, on one line and cut to 60 characters
                item = " ".join(item.split())
                item = item if len(item) <= 60 else item[:57] + "..."
            shown_answers = "\t".join(f"{label}\t{score:.4f}" if target is None else f"{target}={label}\t{score:.4f}"
                                      for target, (label, score) in answers.items())
            print(f"{shown_answers}\t{item}")  # a file's whole path: a cut one could name another file
    return EXIT_SKIPPED if skipped else EXIT_OK


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

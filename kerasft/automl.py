"""`kft.auto`: one call from a TaskData to a fused, calibrated, evaluated and exported model, within a time budget.

```
plan     the backbones that install offline for the data's modality, cheapest first (text: the classic
         TF-IDF member, then MiniLM; images and sound: EfficientNet-Lite0, then MobileNetV2); a probe
         of the first network's speed sizes what fits: splits too big for the budget are sampled
         (stratified), small images are seen at 96x96 instead of 224x224
members  the classic member trains once (seconds, on the whole training split); each network is searched
         (`kft.tune`, successive halving: frozen trials first, deeper ones as time allows) with its share of
         what remains, on the sample
fuse     every member alone, their mean, fitted weights and a stacking combiner, each scored on
         validation honestly (cross-fitted where fitted: `ensembling.validation_scores`); the best wins
finish   calibration folded into the model, test evaluation, export, report
```
Multi-task data (every target multiclass or binary) goes the same way: each
member has a head per target, the fusions combine per target, and every score
is the mean of the targets' accuracies (as `kft.tune`'s objective).
A share of the budget is kept for fusing and finishing; every search stops
starting trials that would not end in time, so the call ends within about
15% of `time_limit`.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from kerasft import (backbones, calibration, ensembling, evaluation, exporting, features, models, multitask, report,
                     training)
from kerasft import tuning

# The backbones `auto` tries per modality, cheapest first (each installs offline; see ASSETS.md).
BACKBONES = {"text": ("tfidf", "minilm_l6"), "image": ("efficientnet_lite0", "mobilenet_v2"),
             "audio": ("efficientnet_lite0", "mobilenet_v2")}
# Share of the budget kept for fusing, calibrating, evaluating and exporting.
FINISH_SHARE = 0.25
# Share of the budget the networks' frozen features may take together (the rest goes to trials).
FEATURE_SHARE = 0.3
# Members each search contributes to the fusions.
MEMBERS_PER_SEARCH = 3
# The probe times this many batches of 32 end to end; a share of its rate is what a whole split sustains here
# (a search's feature pass over 29,000 Fashion-MNIST images ran at well under the probe's 323 examples/s of one
# batch, and overran its share by half).
PROBE_BATCHES, PROBE_DISCOUNT = 3, 0.5
# Images this small or smaller are seen at SMALL_IMAGE_SIZE (upscaling them to 224 buys nothing).
SMALL_IMAGE, SMALL_IMAGE_SIZE = 64, (96, 96)
# How fusions rank when their validation accuracy ties: the simplest first.
_SIMPLICITY = ("member", "mean", "weighted", "stacking")


class AutoError(ValueError):
    """A budget, data or a setting `auto` cannot work with."""


@dataclasses.dataclass
class AutoResult:
    """What `auto` made.

    Attributes:
        model: keras.Model. The chosen model (a member or a fusion, calibrated) on raw input.
        method: str. What it is: `"<backbone> #<rank>"` for a member, else the fusion method.
        evaluation: kerasft.evaluation.Evaluation (multi-task data: a `MultiTaskEvaluation`). On the test split
            (or the sample of it `notes` names).
        exported: kerasft.exporting.Exported. Where it was written.
        report: Path. The report's HTML file.
        scores: dict. Every candidate's validation accuracy (fusions fitted on validation: cross-fitted).
        notes: list of str. What the budget changed (sampled splits, image size, skipped backbones).
        seconds: float. Wall time of the call.
    """

    model: object
    method: str
    evaluation: object
    exported: object
    report: object
    scores: dict
    notes: list
    seconds: float


def auto(data, time_limit=300, backbones_to_try=None, directory="runs", export_path=None, name=None, seed=0,
         verbose=1):
    """Trains the best model it can for a TaskData within `time_limit` seconds, calibrates it and exports it.

    Args:
        data: TaskData (classification; multi-task data with every target multiclass or binary). Its
            validation split chooses, its test split scores.
        time_limit: float. Seconds for the whole call; it ends within about 15% of it.
        backbones_to_try: sequence of str or None. Default: `BACKBONES[data.modality]`.
        directory: str or Path. Where the searches and the report go (`<directory>/<name>/`).
        export_path: str, Path or None. Export folder (default `saved_models/<name>`).
        name: str or None. Names the run (default: the data's name).
        seed: int. Seeds the samples, the models and every search.
        verbose: int. 0 silent; 1 a line per step with the time spent and left.

    Returns:
        An `AutoResult`.

    Raises:
        AutoError: before any training, when the budget cannot fit even the cheapest member (the
            message gives the smallest budget that would), or the data is not a classification task.

    Example:
    >>> result = kft.auto(kft.samples.bbc_news(), time_limit=300)
    >>> result.evaluation["accuracy"], result.exported.path
    """
    start = time.monotonic()
    names = tuple(backbones_to_try or BACKBONES.get(getattr(data, "modality", None), ()))
    _check(data, time_limit, names)
    name = name or backbones.short_name(data.name)
    run_dir = Path(directory) / name
    deadline = start + time_limit

    def log(message):
        if verbose:
            print(f"kerasft auto [{time.monotonic() - start:.0f} s spent, {max(0.0, deadline - time.monotonic()):.0f} "
                  f"s left]: {message}", flush=True)

    whole = data
    data, build_args, notes = _fit_to_budget(data, names, time_limit, seed, log)
    members, skipped = _members(data, whole, names, build_args, deadline - FINISH_SHARE * time_limit, run_dir, seed,
                                verbose, log)
    notes += skipped

    log(f"scoring {len(members)} members and their fusions on validation")
    keys = list(members)
    if len(keys) > 1:
        raw_scores = ensembling.validation_scores([members[k] for k in keys], data)
        scores = {(keys[int(k.split()[1])] if k.startswith("member ") else k): v for k, v in raw_scores.items()}
    else:
        scores = {keys[0]: ensembling.validation_score(members[keys[0]], data)}
    method = min(scores, key=lambda key: (-scores[key], _SIMPLICITY.index(key if key in _SIMPLICITY else "member")))
    log(f"chose {method} (validation accuracy {scores[method]:.4f}); calibrating")
    if method in members:
        model = calibration.calibrate(members[method], data, verbose=0)
    else:
        model = ensembling.ensemble(list(members.values()), method=method, validation=data, calibrate=True)

    result = evaluation.evaluate(model, data)
    exported = exporting.export(model, export_path or Path("saved_models") / name, data=data, metrics=result,
                                hyperparameters={"auto": {"method": method, "time_limit": time_limit,
                                                          "members": keys}})
    details = {"chosen": method, "time limit": f"{time_limit:g} s", "export": exported.path,
               **{f"validation accuracy, {key}": f"{score:.4f}" for key, score in scores.items()},
               **{f"note {i + 1}": note for i, note in enumerate(notes)}}
    page = report.write_report(run_dir / "report", evaluation=result, data=data,
                               title=f"kerasft auto: {data.name}", details=details)
    seconds = time.monotonic() - start
    log(f"test {result.headline()}; exported to {exported.path}; report {page}")
    return AutoResult(model, method, result, exported, page, scores, notes, seconds)


def _check(data, time_limit, names):
    if not hasattr(data, "fingerprint"):
        raise AutoError(f"auto needs a kft TaskData (from kft.data or kft.samples). Received: {type(data).__name__}")
    tasks = multitask.targets_of(data)
    other = {target: task for target, task in (tasks or {}).items() if task not in ("multiclass", "binary")}
    if other:
        raise AutoError(f"auto fuses and calibrates classifiers; {data.name!r} has the targets {other}. Give auto "
                        "one classification target (data.for_target(name)), or train them all with kft.fine_tune.")
    if data.task not in ("multiclass", "binary"):
        raise AutoError(f"auto fuses and calibrates classifiers; {data.name!r} is a {data.task} task.")
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit > 0:
        raise AutoError(f"time_limit is a number of seconds > 0. Received: time_limit={time_limit!r}")
    if not names:
        raise AutoError(f"auto has no backbones for {data.modality} data; pass backbones_to_try=.")
    for backbone in names:
        if not backbones.takes(backbones.get(backbone), data.modality):
            raise AutoError(f"Backbone {backbone!r} does not take {data.modality} data. Pick from "
                            f"kft.backbones.names({data.modality!r}).")
    if data.size("validation") == 0 or data.size("test") == 0:
        raise AutoError(f"auto chooses on the validation split and scores on the test split; {data.name!r} has "
                        f"{data.size('validation')} validation and {data.size('test')} test examples.")


def _fit_to_budget(data, names, time_limit, seed, log):
    """Samples splits too big for the budget and picks the image size, from a probe of the first network."""
    notes, build_args = [], {}
    if data.modality == "image":
        height = _stored_height(data)
        if height and height <= SMALL_IMAGE:
            build_args["image_size"] = SMALL_IMAGE_SIZE
            notes.append(f"images of {height} pixels seen at {SMALL_IMAGE_SIZE[0]}x{SMALL_IMAGE_SIZE[1]}")
    networks = [n for n in names if backbones.get(n).adapt is None]
    if not networks:
        return data, build_args, notes
    network = networks[0]
    rate = _probe(data, network, build_args, seed)
    budget = FEATURE_SHARE * time_limit * rate / len(networks)  # examples whose frozen features, computed by each
    # network's search, fit the share
    smallest = int((20 * max(data.num_classes, 2) + min(data.size("test"), 500)) / rate * 3 + 30)
    if time_limit < smallest:
        raise AutoError(f"time_limit={time_limit:g} s is too small for {data.name!r}: {network} runs at about "
                        f"{rate:.0f} examples/s here, so even the smallest member (a head on 20 examples per class, "
                        f"evaluated and exported) needs about {smallest} s. Give at least that.")
    train, validation, test = (data.size(s) for s in ("train", "validation", "test"))
    sizes = {}
    if train + validation > budget:
        sizes["train"] = max(int(budget * 0.8), 20 * data.num_classes)
        sizes["validation"] = max(int(budget * 0.2), 10 * data.num_classes)
    tested = FINISH_SHARE / 3 * time_limit * rate / len(networks)  # the test split goes through every network
    if test > tested:
        sizes["test"] = max(int(tested), 10 * data.num_classes)
    sizes = {split: n for split, n in sizes.items() if n < data.size(split)}
    if sizes:
        data = data.subset(seed=seed, **sizes)
        notes.append("sampled to fit the budget (stratified): " + ", ".join(
            f"{split} {n} of {size}" for split, n, size in
            ((s, n, {"train": train, "validation": validation, "test": test}[s]) for s, n in sizes.items())))
    log(f"{network} computes about {rate:.0f} examples/s here; " + ("; ".join(notes) or "the data fits whole"))
    return data, build_args, notes


def _stored_height(data):
    inputs = data.inputs("train")
    return inputs.shape[1] if isinstance(inputs, np.ndarray) and inputs.ndim == 4 else None


def _probe(data, backbone, build_args, seed):
    """Examples per second the backbone's frozen features take here, end to end (read, decode, preprocess, bottom)
    over `PROBE_BATCHES` batches of 32 after a first one, times `PROBE_DISCOUNT`."""
    model = models.build_classifier(backbone, data=data, seed=seed, **build_args)
    batches = features.preprocess(model, data.train.take(32 * (PROBE_BATCHES + 1)), 32, cache=False)
    bottom = features.Bottom(model, ["frozen"])
    iterator = iter(batches)
    bottom(next(iterator)[0])  # traces
    start, seen = time.perf_counter(), 0
    for x, _ in iterator:  # reading the outputs waits for them
        seen += len(tf.nest.flatten(tf.nest.map_structure(np.asarray, bottom(x)))[0])
    return PROBE_DISCOUNT * max(seen, 32) / max(time.perf_counter() - start, 1e-3)


def _members(data, whole, names, build_args, search_deadline, run_dir, seed, verbose, log):
    """Trains or searches each backbone in turn; returns `({name: model}, notes)`.

    A classic member trains in seconds on the whole training split (`whole`; its validation split holds the
    sampled one, so what fusions are fitted and chosen on stays unseen); the networks search on `data`, the
    sample their budget allows.
    """
    members, notes = {}, []
    for index, backbone in enumerate(names):
        left = search_deadline - time.monotonic()
        share = left / (len(names) - index)
        if share <= 5:
            notes.append(f"{backbone} skipped: no time left")
            log(notes[-1])
            continue
        spec = backbones.get(backbone)
        if spec.adapt is not None:  # a classic member: one fine_tune, seconds
            log(f"training the classic member {backbone} on all {whole.size('train')} training examples")
            model = models.build_classifier(backbone, data=whole, seed=seed)
            training.fine_tune(model, whole, learning_rate=1e-2, seed=seed, time_limit=share, verbose=0)
            members[backbone] = model
            continue
        log(f"searching {backbone} for up to {share:.0f} s")
        search = tuning.tune(data, backbone, time_limit=share, max_trials=30, directory=run_dir / "searches",
                             seed=seed, overwrite=True, verbose=1 if verbose > 1 else 0, **build_args)
        done = sum(row["status"] == "COMPLETED" for row in search.results())
        if not done:
            notes.append(f"{backbone}: no trial finished in {share:.0f} s")
            log(notes[-1])
            continue
        for rank, model in enumerate(search.best_models(min(MEMBERS_PER_SEARCH, done))):
            members[f"{backbone} #{rank + 1}"] = model
        best = search.tuner.oracle.get_best_trials(1)[0].score
        log(f"{backbone}: {done} trials, best validation accuracy {best:.4f}")
    if not members:
        raise AutoError("No member finished within the time limit; give auto more time.")
    return members, notes

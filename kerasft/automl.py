"""`kft.auto`: one call from a TaskData to a fused, calibrated, evaluated and exported model, within a time budget.

```
plan      the backbones that install offline for the data's modality, cheapest first
          (text: the classic TF-IDF member, then MiniLM; images and sound: EfficientNet-Lite0, then MobileNetV2)
search    each backbone's search (`kft.tune`, successive halving: frozen first, deeper as time allows)
          gets its share of what remains of the budget
fuse      every single member and their fusions (mean, weighted, stacking, greedy soup where the
          members share an architecture), chosen on validation
finish    calibration (temperature folded into the model), test evaluation, export, report
```
A fifth of the budget (at least what the export is estimated to take) is kept
for fusing and finishing; each search gets the rest in turn, and stops
starting trials that would not end in time.
"""

import dataclasses
import time
from pathlib import Path

from kerasft import backbones, ensembling, evaluation, exporting, report, tuning

# The backbones `auto` tries per modality, cheapest first (each installs offline; see ASSETS.md).
BACKBONES = {"text": ("tfidf", "minilm_l6"), "image": ("efficientnet_lite0", "mobilenet_v2"),
             "audio": ("efficientnet_lite0", "mobilenet_v2")}
# Share of the budget kept for fusing, calibrating, evaluating and exporting.
FINISH_SHARE = 0.2
# Members each search contributes to the fusions.
MEMBERS_PER_SEARCH = 3


class AutoError(ValueError):
    """A budget or a setting `auto` cannot work with."""


@dataclasses.dataclass
class AutoResult:
    """What `auto` made.

    Attributes:
        model: keras.Model. The chosen (fused, calibrated) model on raw input.
        method: str. How it was made: a member's name, or the fusion method.
        evaluation: kerasft.evaluation.Evaluation. On the test split.
        exported: kerasft.exporting.Exported or None. Where it was written.
        report: Path or None. The report's HTML file.
        candidates: dict. Candidate name -> validation accuracy, for every single member and fusion tried.
        searches: list of kerasft.tuning.Search. One per backbone searched.
        seconds: float. Wall time of the call.
    """

    model: object
    method: str
    evaluation: object
    exported: object
    report: object
    candidates: dict
    searches: list
    seconds: float


def auto(data, time_limit=300, backbones_to_try=None, directory="runs", export_path=None, name=None, seed=0,
         verbose=1):
    """Trains the best model it can for a TaskData within `time_limit` seconds, and exports it.

    Args:
        data: TaskData. Its validation split chooses, its test split scores.
        time_limit: float. Seconds for the whole call; it ends within about 15% of it.
        backbones_to_try: sequence of str or None. Default: `BACKBONES[data.modality]`.
        directory: str or Path. Where the searches and the report go (`<directory>/<name>/`).
        export_path: str, Path or None. Export folder (default `saved_models/<name>`).
        name: str or None. Names the run (default: the data's name).
        seed: int. Seeds every search.
        verbose: int. 0 silent; 1 a line per step with the time left.

    Returns:
        An `AutoResult`.

    Example:
    >>> result = kft.auto(kft.samples.bbc_news(), time_limit=300)
    >>> result.evaluation["accuracy"], result.exported.path
    """
    start = time.monotonic()
    names = tuple(backbones_to_try or BACKBONES[data.modality])
    for backbone in names:
        if not backbones.takes(backbones.get(backbone), data.modality):
            raise AutoError(f"Backbone {backbone!r} does not take {data.modality} data. Pick from "
                            f"kft.backbones.names({data.modality!r}).")
    if not isinstance(time_limit, (int, float)) or isinstance(time_limit, bool) or time_limit <= 0:
        raise AutoError(f"time_limit is a number of seconds > 0. Received: time_limit={time_limit!r}")
    name = name or backbones.short_name(data.name)
    run_dir = Path(directory) / name
    deadline = start + time_limit
    search_deadline = deadline - FINISH_SHARE * time_limit

    def log(message):
        if verbose:
            print(f"kerasft auto [{time.monotonic() - start:.0f} s, {max(0.0, deadline - time.monotonic()):.0f} s "
                  f"left]: {message}", flush=True)

    # === Search each backbone in turn, cheapest first ===
    searches, members = [], {}
    for index, backbone in enumerate(names):
        left = search_deadline - time.monotonic()
        share = left / (len(names) - index)
        if share <= 0:
            log(f"no time left to search {backbone}")
            break
        log(f"searching {backbone} for up to {share:.0f} s")
        search = tuning.tune(data, backbone, time_limit=share, directory=run_dir / "searches", seed=seed,
                             overwrite=True, verbose=verbose)
        searches.append(search)
        done = sum(row["status"] == "COMPLETED" for row in search.results())
        for rank, model in enumerate(search.best_models(min(MEMBERS_PER_SEARCH, done)) if done else []):
            members[f"{backbone} #{rank + 1}"] = model
    if not members:
        raise AutoError(f"No member finished within time_limit={time_limit:g} s. Give it more time.")

    # === Fuse, choose on validation ===
    log(f"fusing {len(members)} members")
    candidates = ensembling.candidates(members, data)
    method = max(candidates, key=lambda key: candidates[key].score)
    model = candidates[method].model
    log(f"chose {method} (validation accuracy {candidates[method].score:.4f})")
    model = ensembling.calibrate(model, data)

    # === Finish ===
    result = evaluation.evaluate(model, data)
    exported = exporting.export(model, export_path or Path("saved_models") / name, data=data, metrics=result,
                                hyperparameters={"auto": {"method": method, "time_limit": time_limit,
                                                          "backbones": list(names)}})
    page = report.write_report(run_dir / "report", evaluation=result, data=data,
                               title=f"kerasft auto: {data.name}",
                               details={"chosen": method, "time limit": f"{time_limit:g} s",
                                        **{f"validation, {key}": f"{c.score:.4f}" for key, c in candidates.items()}})
    seconds = time.monotonic() - start
    log(f"test accuracy {result.metrics.get('accuracy', float('nan')):.4f}; exported to {exported.path}; "
        f"report {page}")
    return AutoResult(model, method, result, exported, page, {k: c.score for k, c in candidates.items()}, searches,
                      seconds)

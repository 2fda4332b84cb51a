"""Run reports: training curves, confusion matrix, per-class metrics, tuning results, misclassified examples.

`write_report(run_dir, ...)` writes one folder a practitioner can open:

```
run_dir/
  report.html  report.md       every section below, images inline by relative path
  curves.png                   loss and accuracy per epoch, train and validation, phases marked
  confusion_matrix.png         rows: true class, columns: predicted (counts, row-normalized colour)
  reliability.png              reliability diagram: accuracy against confidence in 15 bins, and the ECE
  per_class.csv                precision, recall, F1, support
  misclassified/               the most confident mistakes: thumbnails (images), WAV clips to play (audio)
  results.png                  the objective per trial (when a search is given)
```
Figures are drawn with matplotlib's Agg canvas (no display, no global
state); every file is written to a temporary name and renamed into place.
"""

import csv
import html
import io
import json
import os
from pathlib import Path

import keras_tuner
import numpy as np

from kerasft import evaluation as evaluation_lib
from kerasft import paths


def write_report(run_dir, evaluation=None, history=None, search=None, data=None, title="kerasft run",
                 details=None, top_k=12):
    """Writes `report.html`, `report.md` and their figures into `run_dir`.

    Args:
        run_dir: str or Path. The run folder (created when missing).
        evaluation: `kft.evaluation.Evaluation` or None. Test-split metrics,
            per-class table, confusion matrix, and the probabilities that pick
            the misclassified examples.
        history: `keras.callbacks.History`, dict or None. From `fine_tune`:
            the curves (with `"phase"` marking head-only and unfrozen epochs).
        search: `kft.tuning.Search` or None. Adds the trials table and plot.
        data: TaskData or None. Gives the misclassified examples' inputs (its
            test split, in the order `evaluate` read it).
        title: str. The report's heading.
        details: dict or None. Key/value lines shown at the top (backbone,
            settings, paths...).
        top_k: int. How many misclassified examples to show.

    Returns:
        The path of `report.html`.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sections = []  # (heading, markdown, html)
    if details:
        rows = [[str(k), str(v)] for k, v in details.items()]
        sections.append(("Run", _md_table(["setting", "value"], rows), _html_table(["setting", "value"], rows)))
    if evaluation is not None:
        metrics = [[k, f"{v:.4f}" if isinstance(v, float) else str(v)] for k, v in evaluation.metrics.items()]
        sections.append(("Test metrics", _md_table(["metric", "value"], metrics),
                         _html_table(["metric", "value"], metrics)))
        if evaluation.per_class:
            header = ["class", "precision", "recall", "f1", "support"]
            rows = [[name] + [f"{row[k]:.3f}" for k in header[1:4]] + [str(row["support"])]
                    for name, row in evaluation.per_class.items()]
            _write_csv(run_dir / "per_class.csv", header, rows)
            sections.append(("Per class", _md_table(header, rows), _html_table(header, rows)))
        if evaluation.confusion_matrix is not None:
            save_figure(_confusion_figure(evaluation), run_dir / "confusion_matrix.png")
            sections.append(_image_section("Confusion matrix", "confusion_matrix.png"))
        if "ece" in evaluation.metrics:
            save_figure(_reliability_figure(evaluation), run_dir / "reliability.png")
            sections.append(_image_section("Calibration", "reliability.png"))
    curves = getattr(history, "history", history)
    if curves and curves.get("loss"):
        save_figure(_curves_figure(curves), run_dir / "curves.png")
        sections.insert(1 if details else 0, _image_section("Training curves", "curves.png"))
    if search is not None:
        results = search.results()
        names = [k for k in results[0]] if results else []
        rows = [["" if r[k] is None else _short(r[k]) for k in names] for r in results]
        sections.append(("Tuning trials", _md_table(names, rows), _html_table(names, rows)))
        plot = Path(search.directory) / "results.png"
        if plot.exists():
            paths.write_atomic(run_dir / "results.png", plot.read_bytes())
            sections.append(_image_section("Objective per trial", "results.png"))
    if evaluation is not None and evaluation.confusion_matrix is not None:
        sections.append(_misclassified(run_dir, evaluation, data, top_k))

    title_html = html.escape(title)
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title_html}</title>",
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
            "text-align:left}img{max-width:100%}figure{display:inline-block;margin:.5em;text-align:center;"
            "font-size:.85em;max-width:14em;vertical-align:top}</style></head><body>", f"<h1>{title_html}</h1>"]
    markdown = [f"# {title}", ""]
    for heading, md, body in sections:
        page += [f"<h2>{html.escape(heading)}</h2>", body]
        markdown += [f"## {heading}", "", md, ""]
    # Counts the images the browser could decode into <body data-images="loaded/total"> (checked by the tests).
    page.append("<script>addEventListener('load', () => { const all = [...document.images]; "
                "document.body.dataset.images = all.filter(i => i.complete && i.naturalWidth > 0).length + '/' + "
                "all.length; });</script></body></html>")
    paths.write_atomic(run_dir / "report.md", "\n".join(markdown))
    paths.write_atomic(run_dir / "report.html", "\n".join(page))
    return run_dir / "report.html"


# === Figures ===


def new_figure(size):
    """A matplotlib Figure on the Agg canvas: no display, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _curves_figure(curves):
    metrics = [m for m in ("loss", "accuracy", "mae") if m in curves]
    figure = new_figure((5 * len(metrics), 3.6))
    epochs = np.arange(1, len(curves["loss"]) + 1)
    phases = curves.get("phase")
    for i, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), i + 1)
        axes.plot(epochs, curves[metric], "o-", label=f"train {metric}")
        if f"val_{metric}" in curves:
            axes.plot(epochs, curves[f"val_{metric}"], "o-", label=f"validation {metric}")
        if phases and 2 in phases and 1 in phases:
            axes.axvline(phases.index(2) + 0.5, color="grey", linestyle="--", label="backbone unfrozen")
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _confusion_figure(evaluation):
    matrix = evaluation.confusion_matrix
    n = len(matrix)
    size = min(4 + 0.45 * n, 14)
    figure = new_figure((size, size * 0.85))
    axes = figure.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    axes.imshow(np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0), cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for (r, c), count in np.ndenumerate(matrix):
            share = count / rows[r, 0] if rows[r, 0] else 0
            axes.text(c, r, str(count), ha="center", va="center", fontsize=8,
                      color="white" if share > 0.5 else "black")
        axes.set_xticks(range(n), evaluation.class_names, rotation=45, ha="right")
        axes.set_yticks(range(n), evaluation.class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    figure.tight_layout()
    return figure


def _reliability_figure(evaluation):
    """Accuracy against mean confidence per bin (bars), the diagonal of perfect calibration, and the ECE."""
    confidence, accuracy, counts = evaluation_lib.calibration_bins(evaluation.probabilities, evaluation.labels)
    bins = len(counts)
    centers = (np.arange(bins) + 0.5) / bins
    filled = counts > 0
    figure = new_figure((8.4, 3.6))
    axes, histogram = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    axes.bar(centers[filled], accuracy[filled], width=1 / bins, edgecolor="black", label="accuracy")
    axes.bar(centers[filled], confidence[filled] - accuracy[filled], bottom=accuracy[filled], width=1 / bins,
             color="salmon", alpha=0.6, edgecolor="red", label="gap to confidence")
    axes.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
             title=f"ECE {evaluation.metrics['ece']:.4f} ({bins} bins)")
    axes.legend(fontsize="small", loc="upper left")
    histogram.bar(centers, counts, width=1 / bins, edgecolor="black")
    histogram.set(xlim=(0, 1), xlabel="confidence (top probability)", ylabel="examples")
    figure.tight_layout()
    return figure


# === Misclassified examples ===


def _misclassified(run_dir, evaluation, data, top_k):
    """The top-k mistakes by the confidence of the wrong class, with thumbnails or text excerpts."""
    predicted = evaluation.probabilities.argmax(-1)
    wrong = np.flatnonzero(predicted != evaluation.labels)
    wrong = wrong[np.argsort(-evaluation.probabilities[wrong, predicted[wrong]], kind="stable")][:top_k]
    inputs = data.inputs("test") if data is not None and len(wrong) else None
    names = evaluation.class_names
    header = ["#", "true", "predicted", "confidence", "input"]
    rows, cells = [], []
    folder = run_dir / "misclassified"
    for rank, index in enumerate(wrong):
        true, guess = names[evaluation.labels[index]], names[predicted[index]]
        score = f"{evaluation.probabilities[index, predicted[index]]:.3f}"
        shown, cell = f"test example {index}", html.escape(f"test example {index}")
        if inputs is not None and getattr(data, "modality", None) == "image":
            folder.mkdir(exist_ok=True)
            name = f"misclassified/{rank:02d}_{index}.png"
            _save_thumbnail(inputs[index], run_dir / name)
            shown, cell = f"![{index}]({name})", f"<img src='{name}' alt='test example {index}' width='96'>"
        elif inputs is not None and getattr(data, "modality", None) == "audio":
            folder.mkdir(exist_ok=True)
            name = f"misclassified/{rank:02d}_{index}.wav"
            _save_clip(inputs[index], data.sample_rate, run_dir / name)
            shown, cell = f"[test example {index}]({name})", f"<audio controls src='{name}'></audio>"
        elif inputs is not None:
            text = str(inputs[index])
            excerpt = text[:200] + ("..." if len(text) > 200 else "")
            shown, cell = excerpt.replace("|", "\\|").replace("\n", " "), html.escape(excerpt)
        rows.append([str(rank + 1), true, guess, score, shown])
        cells.append([str(rank + 1), html.escape(true), html.escape(guess), score, cell])
    if not rows:
        none = "No test example was misclassified."
        return "Most confident mistakes", none, f"<p>{none}</p>"
    body = "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells) + "</table>"
    return f"Most confident mistakes (top {len(rows)})", _md_table(header, rows), body


def _save_clip(waveform, sample_rate, path):
    """Writes a clip as a 16-bit PCM WAV file, for the report's audio player."""
    import soundfile

    soundfile.write(path, np.clip(waveform, -1.0, 1.0), sample_rate, subtype="PCM_16")


def _save_thumbnail(image, path):
    from PIL import Image

    if isinstance(image, (str, bytes, os.PathLike)):  # a file path or encoded bytes (image folders)
        thumbnail = Image.open(io.BytesIO(image) if isinstance(image, bytes) else image).convert("RGB")
        thumbnail.thumbnail((192, 192))
    else:  # pixels (N, H, W, 1 or 3)
        pixels = np.clip(np.asarray(image), 0, 255).astype("uint8")
        thumbnail = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if max(thumbnail.size) < 96:
        scale = 96 // max(thumbnail.size)
        thumbnail = thumbnail.resize((thumbnail.width * scale, thumbnail.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="PNG")
    paths.write_atomic(path, buffer.getvalue())


# === Search results ===


def search_rows(project_dir, names, objective):
    """One row per trial of a `kft.tune` search folder: id, status, hyperparameters (`names`), objective, epochs,
    time."""
    rows = []
    trials = [keras_tuner.engine.trial.Trial.load(str(p)) for p in Path(project_dir).glob("trial_*/trial.json")]
    # Ids are numbers, zero-padded to the digits of max_trials, which a resumed search may change.
    for trial in sorted(trials, key=lambda t: int(t.trial_id)):
        extra_path = Path(project_dir) / f"trial_{trial.trial_id}" / "kerasft_trial.json"
        extra = json.loads(extra_path.read_text()) if extra_path.exists() else {}
        hps = trial.hyperparameters
        row = {"trial": trial.trial_id, "status": trial.status}
        for name in names:
            row[name] = hps.values.get(name) if name in hps.values and hps.is_active(name) else None
        row[objective] = trial.score
        row.update({key: extra.get(key) for key in ("epochs", "seconds", "features", "peak_rss_mb")})
        rows.append(row)
    return rows


def format_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_rows(rows):
    if not rows:
        return "(no trials yet)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_search_tables(project_dir, rows):
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paths.write_atomic(Path(project_dir) / "results.csv", buffer.getvalue())
    paths.write_atomic(Path(project_dir) / "results.md", markdown_rows(rows))


def plot_search(project_dir, rows, objective):
    """results.png: the objective of each completed trial, and the best so far."""
    done = [r for r in rows if r["status"] == "COMPLETED" and r[objective.name] is not None]
    figure = new_figure((7, 4))
    axes = figure.add_subplot()
    trials = [r["trial"] for r in done]
    scores = [r[objective.name] for r in done]
    best = np.maximum.accumulate(scores) if objective.direction == "max" else np.minimum.accumulate(scores)
    axes.plot(range(len(done)), scores, "o", label=objective.name)
    axes.step(range(len(done)), best, where="post", label="best so far")
    axes.set_xticks(range(len(done)), trials, rotation=90 if len(done) > 15 else 0)
    axes.set_xlabel("trial")
    axes.set_ylabel(objective.name)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, Path(project_dir) / "results.png")


# === Writing ===


def _image_section(heading, name):
    return heading, f"![{heading}]({name})", f"<img src='{name}' alt='{html.escape(heading)}'>"


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _html_table(header, rows):
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def save_figure(figure, path):
    """Writes a figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    paths.write_atomic(path, buffer.getvalue())


def _write_csv(path, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    paths.write_atomic(path, buffer.getvalue())


def history_json(history):
    """The curves of a `fine_tune` History as JSON (for `history.json` in a run folder)."""
    curves = getattr(history, "history", history) or {}
    return json.dumps({k: [float(v) for v in values] for k, values in curves.items()}, indent=1)

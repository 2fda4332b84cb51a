"""Loaders of tables: texts and their labels (one target or several) from `.csv`, `.tsv` or `.jsonl` files."""

import csv
import difflib
import json
from pathlib import Path

import numpy as np

from kerasft.data.assemble import assemble
from kerasft.data.errors import DataError, first_items
from kerasft.data.labels import check_task
from kerasft.data.splits import check_fractions
from kerasft.data.targets import check_names, per_target
from kerasft.data.task_data import content_digest


def from_csv(path, text_column="text", label_column="label", validation_split=0.15,
             test_split=0.15, seed=0, deduplicate=True, drop_empty=True, label_separator=None,
             task=None, encoding="utf-8", name=None, stratify=None):
    """Makes a text TaskData from a `.csv`, `.tsv` or `.jsonl` file.

    The format follows the extension (stdlib `csv` / `json`); quoted CSV fields
    may hold newlines. Rows are named as in a spreadsheet (the header is row 1);
    JSONL lines by line number. Labels are class names, or integers (classes
    sorted numerically); mixing both is an error. Surrounding spaces of labels
    are ignored.

    Several label columns make multi-task data: one named target per column
    (`data.targets`), each with its own task and classes; a row with an empty
    cell (or no key) in some of them is kept for the others, its missing labels
    masked in training (`kerasft.data.targets`).

    Args:
        path: str or Path. The file.
        text_column: str. Column (or JSON key) holding the text.
        label_column: str or list of str. Column (or JSON key) holding the
            label, or one column per target (multi-task).
        validation_split: float. Fraction for validation, in [0, 1).
        test_split: float. Fraction for test, in [0, 1).
        seed: int. Seed of the split (stratified for classes).
        deduplicate: bool. Drop exact duplicate texts (keeps the first).
        drop_empty: bool. Drop empty or whitespace-only texts.
        label_separator: str, dict or None. Splits each label into several class
            names, making a multilabel task (e.g. "|" for "sport|politics");
            multi-task: one for every target, or a dict per target. JSON lists
            as labels are multilabel too.
        task: str, dict or None. "regression" reads labels as numbers; None infers;
            multi-task: one for every target, or a dict per target.
        encoding: str. The file's text encoding (a UTF-8 BOM is skipped).
        name: str or None. Name in summaries; defaults to the file stem.
        stratify: str or None. Multi-task: the target the splits are stratified
            on (default: the first).

    Example:

    ```python
    data = kerasft.data.from_csv("reviews.csv", text_column="review", label_column="stars")
    tickets = kerasft.data.from_csv("tickets.csv", label_column=["topic", "urgency"])
    ```
    """
    check_fractions(validation_split, test_split)
    path = Path(path)
    multi = not isinstance(label_column, str)
    label_columns = check_names(label_column, "label_column") if multi else [label_column]
    if multi and text_column in label_columns:
        raise DataError(f"text_column {text_column!r} is also in label_column; a column is either the text or a "
                        f"target. Received: text_column={text_column!r}, label_column={label_column!r}")
    tasks = per_target(task, label_columns, "task")
    for value in tasks.values():
        check_task(value)
    separators = per_target(label_separator, label_columns, "label_separator")
    numbers, kind, values = read_columns(path, (text_column, *label_columns), encoding, share=label_columns)
    texts = np.array([str(text or "") for text in values[text_column]], dtype=object)
    labels = {column: _raw_labels(values[column], separators[column], tasks[column]) for column in label_columns}
    return assemble(
        name=name or path.stem, modality="text", input_kind="text", inputs=texts,
        digests=np.fromiter((content_digest(t.encode("utf-8")) for t in texts), "S16", len(texts)),
        raw_labels=labels if multi else labels[label_column],
        split_of=None, where=lambda i: f"{kind} {numbers[i]}", task=tasks if multi else task,
        validation_split=validation_split, test_split=test_split, seed=seed,
        deduplicate=deduplicate, drop_empty=drop_empty, stratify=stratify)


def _raw_labels(values, label_separator, task):
    """A column's cells as the labels `encode_labels` reads: names, lists of names (with a separator) or numbers."""
    if label_separator is not None:
        return [None if v is None else str(v).split(label_separator) for v in values]
    if task != "regression":
        return [v if v is None or isinstance(v, (list, float, bool)) else str(v) for v in values]
    return values


def read_column(path, column, encoding="utf-8"):
    """Returns the values of one column of a `.csv`, `.tsv` or `.jsonl` file, as str, row by row.

    Args:
        path: str or Path. The file.
        column: str. Column (or JSON key) to read; a row without it gives "".
        encoding: str. The file's text encoding.
    """
    _, _, values = read_columns(Path(path), (column,), encoding)
    return [str(value or "") for value in values[column]]


def read_columns(path, columns, encoding, share=()):
    """`(row numbers, "row" or "line", {column: values})` of a `.csv`/`.tsv`/`.jsonl` file holding `columns`.

    Read as a stream, keeping only `columns`: a file of millions of rows never
    sits in memory whole. Equal values of a column in `share` are one object
    (a million rows of ten classes hold ten strings).
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise DataError(f"Expected a .csv, .tsv or .jsonl file. Received: {str(path)!r}")
    stream_encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    values, numbers, undecodable, shared = {column: [] for column in columns}, [], [], {}
    with open(path, encoding=stream_encoding, errors="surrogateescape", newline="") as file:
        reader = _jsonl_records if suffix == ".jsonl" else _delimited_records
        found, records = reader(file, "\t" if suffix == ".tsv" else ",", path)
        if found is not None:
            _check_columns(found, columns, path)
        for number, row in records:
            if any(_has_bad_bytes(row.get(column)) for column in columns):
                undecodable.append(number)
            for column in columns:
                value = row.get(column)
                values[column].append(shared.setdefault(value, value) if column in share and isinstance(value, str)
                                      else value)
            numbers.append(number)
    if found is None:  # JSONL: the keys are known once every line is read
        _check_columns(records.columns, columns, path)
    kind = "line" if suffix == ".jsonl" else "row"
    if not numbers:
        raise DataError(f"{str(path)!r} has a header but no examples.")
    if undecodable:
        raise DataError(
            f"{str(path)!r} is not valid {encoding}: {first_items(f'{kind} {n}' for n in undecodable)} "
            f"{'holds' if len(undecodable) == 1 else 'hold'} other bytes. "
            "Pass encoding= (e.g. 'cp1252' or 'latin-1') or re-save the file as UTF-8."
        )
    return np.asarray(numbers, np.int64), kind, values


def _check_columns(columns, wanted, path):
    for column in wanted:
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=1, cutoff=0.6)
            raise DataError(
                f"Column {column!r} is not in {str(path)!r}."
                + (f" Did you mean {close[0]!r}?" if close else "")
                + f" Received columns: {columns}"
            )


def _has_bad_bytes(value):
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def _delimited_records(file, delimiter, path):
    """`(columns, records)` of a CSV/TSV stream: records yield `(spreadsheet row number, {column: value})`."""
    reader = csv.reader(file, delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise DataError(f"{str(path)!r} is not valid {path.suffix[1:].upper()} (line {reader.line_num}): "
                        f"{error}") from None
    if header is None or not any(cell.strip() for cell in header):
        raise DataError(f"{str(path)!r} is empty. Expected a header and rows of examples.")
    columns = [c.strip() for c in header]

    def records():
        try:
            for i, row in enumerate(reader):
                if any(cell.strip() for cell in row):
                    yield i + 2, dict(zip(columns, row))
        except csv.Error as error:
            raise DataError(f"{str(path)!r} is not valid {path.suffix[1:].upper()} "
                            f"(line {reader.line_num}): {error}") from None

    return columns, records()


def _jsonl_records(file, _, path):
    """`(None, records)` of a JSON Lines stream: the keys are known only as lines are read (`records.columns`)."""
    return None, _JsonlRecords(file, path)


class _JsonlRecords:
    """Records of a JSON Lines stream, `(line number, object)`; `columns` lists the keys seen so far."""

    def __init__(self, file, path):
        self.file, self.path, self.columns, self._seen = file, path, [], set()

    def __iter__(self):
        blank = True
        for number, line in enumerate(self.file, start=1):
            if not line.strip():
                continue
            blank = False
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{str(self.path)!r} line {number} is not valid JSON: {error}. "
                                "Expected one JSON object per line.") from None
            if not isinstance(record, dict):
                raise DataError(f"{str(self.path)!r} line {number} is a {type(record).__name__}. "
                                "Expected one JSON object per line.")
            for key in record:
                if key not in self._seen:
                    self._seen.add(key)
                    self.columns.append(key)
            yield number, record
        if blank:
            raise DataError(f"{str(self.path)!r} is empty. Expected a header and rows of examples.")

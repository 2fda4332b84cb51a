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

```
errors     exit codes, UsageError, cli_spelling: a library message's `encoding=` as the flag `--encoding`
output     start_tensorflow without its start-up lines; --quiet and --verbose
loading    the data, models and predict inputs the line names: checked first, loaded in the subcommand
commands   cmd_<name>(args) for each subcommand, through the Python API
parser     build_parser (flags whose defaults are read from the library's source), parse (--config), main
```
Every heavy import (TensorFlow, Keras, kerasft's modules) happens inside the
function that needs it, so `kerasft --help` answers at once.
"""

from kerasft.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, UsageError
from kerasft.cli.parser import ENSEMBLE_METHODS, build_parser, main

__all__ = ["ENSEMBLE_METHODS", "EXIT_FAILURE", "EXIT_OK", "EXIT_SKIPPED", "EXIT_USAGE", "UsageError", "build_parser",
           "main"]

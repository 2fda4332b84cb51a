"""Do time budgets hold? `kft.tune(..., time_limit=120)` and `kerasft tune ... --time-limit 300` on BBC News.

1. `kft.tune(bbc_news, "minilm_l6", time_limit=120)`: the call's wall time (backbone load, tokenizing and
   the feature cache included) and the trials it finished (target: within 120 s + 15%, at least one trial).
2. `kerasft tune sample:bbc_news --backbone minilm_l6 --time-limit 300` in a fresh process: wall time, and
   whether it left a model, a report and an export (target: under 345 s).
Writes one section of BENCHMARKS.md.

Usage: .venv/bin/python bench/time_budget.py
"""

import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402


def main():
    rows = ["| run | budget | wall time | within 15% | result |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        data = kft.samples.bbc_news()
        start = time.perf_counter()
        search = kft.tune(data, "minilm_l6", time_limit=120, directory=folder, verbose=1)
        wall = time.perf_counter() - start
        done = [r for r in search.results() if r["status"] == "COMPLETED"]
        best = max(r["val_accuracy"] for r in done) if done else float("nan")
        rows.append(f"| kft.tune(bbc_news, 'minilm_l6', time_limit=120) | 120 s | {wall:.0f} s | "
                    f"{'yes' if wall <= 138 else '**no**'} | {len(done)} trials finished "
                    f"({', '.join(sorted({r['trainable'] for r in done}))}), best val_accuracy {best:.4f} |")

        command = [sys.executable, "-m", "kerasft", "tune", "sample:bbc_news", "--backbone", "minilm_l6",
                   "--time-limit", "300", "--directory", os.path.join(folder, "cli"),
                   "--output", os.path.join(folder, "export")]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        wall = time.perf_counter() - start
        last = (result.stdout.strip().splitlines() or [""])[-1]
        exported = os.path.exists(os.path.join(folder, "export", "model.keras"))
        rows.append(f"| `kerasft tune sample:bbc_news --backbone minilm_l6 --time-limit 300` | 300 s | {wall:.0f} s | "
                    f"{'yes' if wall <= 345 else '**no**'} | exit {result.returncode}; export: "
                    f"{'yes' if exported else 'no'}; {last[:160]} |")
    write_section("Time budgets (bench/time_budget.py)", "\n".join(rows),
                  "BBC News (kft.samples.bbc_news()), MiniLM-L6, default space and tuner (successive halving), one run")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

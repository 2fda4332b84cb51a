"""`kerasft auto <sample> --time-limit 300` on the three embedded samples, as a user runs it; writes BENCHMARKS.md.

Each command runs in a fresh process (start-up, data loading, search, fusion,
calibration, test evaluation, export and report all counted); the wall time is
compared with the budget (target: within 15%).

Usage: .venv/bin/python bench/auto.py [--time-limit 300] [--samples bbc_news fashion_mnist spoken_words]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from bench_report import write_section


def run(sample, time_limit, folder):
    command = [sys.executable, "-m", "kerasft", "auto", f"sample:{sample}", "--time-limit", str(time_limit),
               "--directory", os.path.join(folder, "runs"), "--output", os.path.join(folder, "export", sample)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    last = [line for line in result.stdout.splitlines() if "test accuracy" in line]
    result_line = r"^(.*): test accuracy ([0-9.]+); exported to (\S+); report ([^;\s]+)"
    match = re.search(result_line, last[-1]) if last else None
    if result.returncode != 0 or not match:
        return {"sample": sample, "wall": wall, "error": (result.stderr or result.stdout).strip().splitlines()[-1:]}
    chosen = [line for line in result.stdout.splitlines() if "chose " in line]
    return {"sample": sample, "wall": wall, "method": match.group(1), "accuracy": float(match.group(2)),
            "export": os.path.exists(os.path.join(match.group(3), "model.keras")),
            "report": os.path.exists(match.group(4)), "chose": chosen[-1].split("chose ", 1)[1] if chosen else ""}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=300)
    parser.add_argument("--samples", nargs="+", default=["bbc_news", "fashion_mnist", "spoken_words"])
    args = parser.parse_args()
    rows = ["| command | wall time | within 15% | test accuracy | chosen | export and report |",
            "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for sample in args.samples:
            outcome = run(sample, args.time_limit, folder)
            print(outcome, flush=True)
            command = f"`kerasft auto sample:{sample} --time-limit {args.time_limit:g}`"
            within = "yes" if outcome["wall"] <= 1.15 * args.time_limit else "**no**"
            if "error" in outcome:
                rows.append(f"| {command} | {outcome['wall']:.0f} s | {within} | failed: {outcome['error']} | | |")
                continue
            rows.append(f"| {command} | {outcome['wall']:.0f} s | {within} | **{outcome['accuracy']:.4f}** | "
                        f"{outcome['chose']} | {'yes' if outcome['export'] and outcome['report'] else 'no'} |")
    write_section("kerasft auto on the samples (bench/auto.py)", "\n".join(rows),
                  "Each command in a fresh process, everything counted (start-up to report), one run each")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

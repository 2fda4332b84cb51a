"""Resident memory: over a long fine-tuning run, and of the input path as the data grows 16x.

Long run (`--long`): EfficientNet-Lite0 (top block unfrozen, 32x32) on 256
Fashion-MNIST images, batch 32: 8 train steps and one validation pass per
epoch, for 900 epochs (7200 steps, about what 2 hours of MiniLM fine-tuning
at ~1 s/step do). The RSS (from /proc/self/statm) is read after every epoch.

Input path (`--inputs`): each case runs in a fresh process, which reports its
peak RSS (VmHWM):
- images: synthetic class folders of 5,000, 20,000 and 80,000 PNG files
  (32x32, 10 classes), through `kft.data.from_directory(image_size=(64, 64))`
  (every file checked up front) and one epoch of
  `kft.fine_tune(trainable="frozen")` on a random-weight MobileNetV3-Small at
  64x64: the preprocessing and the frozen feature pass over every example,
  then the head on the cached features.
- texts: CSVs of 62,500, 250,000 and 1,000,000 short texts through
  `kft.data.from_csv`, then MiniLM-L6's tokenizer (`kft.features.preprocess`)
  over a 20,000-text training subset.
The memory budget is set to `--budget-gb` (default 0.1) in every case, as on a
machine with little memory: past it, caches go to disk. The folders and CSVs
are generated once into `--data-dir` (default /tmp/kerasft-bench) and reused.
Writes sections of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/memory.py [--long [--epochs 900]] [--inputs] [--data-dir /tmp/kerasft-bench]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PAGE = os.sysconf("SC_PAGE_SIZE")
IMAGE_SIZES = (5_000, 20_000, 80_000)
TEXT_SIZES = (62_500, 250_000, 1_000_000)
CLASSES = 10
TEXT_SUBSET = 20_000
WORDS = ("market shares bank profit loss match goal team season player film music award actor stage election "
         "minister vote policy court phone software data network chip storm rain river coast harbour").split()


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def peak_rss_mb():
    """The process's peak resident set (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


# === The long run ===


def long_run(epochs):
    import keras

    import kerasft as kft
    from bench_report import write_section

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.rss = []

        def on_epoch_end(self, epoch, logs=None):
            self.rss.append(rss_mb())

    data = kft.samples.fashion_mnist(seed=0).subset(train=256, validation=64, test=64, seed=0)
    model = kft.build_classifier("efficientnet_lite0", data=data, image_size=(32, 32), trainable="top:1", seed=0)
    recorder = Recorder()
    start = time.perf_counter()
    kft.fine_tune(model, data, epochs=epochs, warmup_epochs=0, batch_size=32, patience=0, verbose=0,
                  callbacks=[recorder])
    seconds = time.perf_counter() - start
    rss = recorder.rss
    marks = sorted({m for m in (10, 50, 100, 300, 600, len(rss)) if m <= len(rss)})
    base = rss[min(49, len(rss) - 1)]
    rows = ["| epoch | RSS |", "|---|---|"] + [f"| {m} | {rss[m - 1]:.0f} MB |" for m in marks]
    rows += ["", f"{len(rss)} epochs ({len(rss) * 8} train steps) in {seconds:.0f} s. RSS from epoch 50 to the end: "
             f"{base:.0f} -> {rss[-1]:.0f} MB (**{100 * (rss[-1] - base) / base:+.1f}%**); peak {max(rss):.0f} MB."]
    write_section("Memory over a long run (bench/memory.py)", "\n".join(rows),
                  "EfficientNet-Lite0 top:1 at 32x32, 256 Fashion-MNIST images, batch 32, one fine_tune call")
    print("\n".join(rows))


# === Data, generated once ===


def image_folder(data_dir, count):
    """A folder of `count` distinct 32x32 PNGs in CLASSES class folders; the smaller sets hard-link the largest's."""
    import numpy as np
    from PIL import Image

    largest = Path(data_dir) / f"images-{max(IMAGE_SIZES)}"
    if not (largest / "complete").exists():
        rng = np.random.default_rng(0)
        for i in range(max(IMAGE_SIZES)):
            label = i % CLASSES
            folder = largest / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(20 * label + 40 + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / f"{i:06d}.png")
        (largest / "complete").write_text("")
    folder = Path(data_dir) / f"images-{count}"
    if not (folder / "complete").exists():
        for i in range(count):
            source = largest / f"class_{i % CLASSES}" / f"{i:06d}.png"
            target = folder / source.parent.name / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(source, target)
        (folder / "complete").write_text("")
    return folder


def text_csv(data_dir, count):
    """A CSV of `count` distinct short texts (6-12 words) labelled by one of CLASSES topics."""
    import numpy as np

    path = Path(data_dir) / f"texts-{count}.csv"
    if not path.exists():
        rng = np.random.default_rng(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp"), "w") as f:
            f.write("text,label\n")
            for i in range(count):
                label = i % CLASSES
                words = rng.choice(WORDS, size=int(rng.integers(5, 12)))
                f.write(f"{WORDS[label * 3]} {' '.join(words)} {i},topic_{label}\n")
        os.replace(path.with_suffix(".tmp"), path)
    return path


# === One measured case, in its own process ===


def measure(kind, source):
    import kerasft as kft

    start = time.perf_counter()
    if kind == "images":
        data = kft.data.from_directory(source, image_size=(64, 64), seed=0)
        loaded = rss_mb()
        model = kft.build_classifier("mobilenet_v3_small", data=data, pretrained=False, image_size=(64, 64), seed=0)
        kft.fine_tune(model, data, trainable="frozen", epochs=1, patience=0, verbose=0)
    else:
        data = kft.data.from_csv(source, seed=0)
        loaded = rss_mb()
        model = kft.build_classifier("minilm_l6", data=data, seed=0)
        subset = data.subset(train=TEXT_SUBSET, seed=0)
        batches = sum(1 for _ in kft.features.preprocess(model, subset.train, 64, num_examples=TEXT_SUBSET))
        assert batches == -(-TEXT_SUBSET // 64)
    return {"examples": sum(data.size(s) for s in ("train", "validation", "test")), "rss_after_loading_mb": loaded,
            "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - start}


def run_case(kind, source, budget_gb):
    env = {**os.environ, "KERASFT_MEMORY_BUDGET_GB": str(budget_gb), "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, __file__, "--measure", kind, str(source)], env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{kind} {source} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def inputs(data_dir, budget_gb):
    from bench_report import write_section

    rows = ["| data | examples | RSS after loading | peak RSS | seconds |", "|---|---|---|---|---|"]
    growth = []
    for kind, sizes, make in (("images", IMAGE_SIZES, image_folder), ("texts", TEXT_SIZES, text_csv)):
        results = []
        for size in sizes:
            source = make(data_dir, size)
            result = run_case(kind, source, budget_gb)
            results.append(result)
            print(kind, size, result, flush=True)
            rows.append(f"| {kind}: {source.name} | {result['examples']:,} | {result['rss_after_loading_mb']:.0f} MB "
                        f"| {result['peak_rss_mb']:.0f} MB | {result['seconds']:.0f} |")
        change = 100 * (results[-1]["peak_rss_mb"] - results[0]["peak_rss_mb"]) / results[0]["peak_rss_mb"]
        growth.append(f"{kind} {sizes[0]:,} -> {sizes[-1]:,}: **{change:+.1f}%**")
    body = "\n".join(rows + ["", "Peak RSS from the smallest to the largest (16x the examples): "
                             + "; ".join(growth) + " (the bound: +15%). A cache that fits the budget stays in memory: "
                             "the 20,000 images' frozen features do (hence a higher peak than at 80,000, whose "
                             "features go to disk and are read back a batch at a time). The texts themselves are "
                             "held in memory by the TaskData a CSV makes (about 200 MB for 1,000,000); data "
                             "larger than that belongs in TFRecord files (`kft.data.from_tfrecord`)."])
    write_section("Memory of the input path as the data grows (bench/memory.py --inputs)", body,
                  f"each case in a fresh process; memory budget {budget_gb:g} GB ($KERASFT_MEMORY_BUDGET_GB); images: "
                  "from_directory(image_size=(64, 64)) + one epoch of fine_tune(trainable='frozen') on a random-weight "
                  f"MobileNetV3-Small at 64x64; texts: from_csv + MiniLM-L6 tokenizing a {TEXT_SUBSET:,}-text subset")
    print(body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--long", action="store_true", help="the long fine-tuning run")
    parser.add_argument("--epochs", type=int, default=900)
    parser.add_argument("--inputs", action="store_true", help="the input path at 3 sizes of images and texts")
    parser.add_argument("--data-dir", default="/tmp/kerasft-bench")
    parser.add_argument("--budget-gb", type=float, default=0.1)
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if args.long or not args.inputs:
        long_run(args.epochs)
    if args.inputs or not args.long:
        inputs(args.data_dir, args.budget_gb)


if __name__ == "__main__":
    main()

"""Multi-task learning (#18): one EfficientNet-Lite0 with a word head and a speaker-sex head, against two
single-task models with the same backbone and budget, on the two-target spoken words.

Data: `kft.samples.spoken_words(targets=("word", "speaker_sex"))`: 1920 train /
320 validation / 320 test clips, the validation and test speakers never heard in
training. The single-task models train on the same clips and splits, each on one
target (`data.for_target`). Every model gets the same recipe: the same backbone,
input size, trainable setting, head shape and seed, and `fine_tune` with the
same epochs, rates, patience and augmentation (the multi-task model's loss
weights 1 each, fine_tune's default; `--loss-weights balanced` weighs each
target inversely to its loss on the first batch).

Reported, in one run: test accuracy per target for every seed in `--seeds`
(each seed sets the initializers, the shuffling and the augmentation of all
three models; the split stays fixed) and their mean (the targets: the
multi-task model within 1 point of each single-task model), training wall time, and
inference latency (median of repeated `predict` calls on 32 raw test clips)
of the multi-task model against the two single-task models run one after the
other (target: at most 0.6x). Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/multi_task.py [--epochs 8] [--repeats 5] [--seeds 0,1,2] [--loss-weights equal|balanced]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from timing import median_latency  # noqa: E402

BACKBONE = "efficientnet_lite0"
IMAGE_SIZE = (128, 128)
TARGETS = ("word", "speaker_sex")


def train(data, epochs, seed, loss_weights=None):
    """Builds and fine-tunes one model on `data` with the shared recipe; returns it, its history and seconds."""
    start = time.monotonic()
    model = kft.build_classifier(BACKBONE, data=data, image_size=IMAGE_SIZE, trainable="top:4",
                                 head=kft.Head(units=(128,), dropout=0.2), seed=seed)
    history = kft.fine_tune(model, data, epochs=epochs, warmup_epochs=20, batch_size=32,
                            fine_tune_learning_rate=3e-4, patience=3, augmentation=0.5, seed=seed, verbose=1,
                            loss_weights=loss_weights)
    return model, history, time.monotonic() - start


def run_seed(data, epochs, seed, loss_weights):
    """The multi-task model and one single-task model per target, all trained with `seed`."""
    multi, history, seconds = train(data, epochs, seed, loss_weights)
    result = {"multi": (multi, kft.evaluate(multi, data), seconds), "loss_weights": history.loss_weights}
    for target in TARGETS:
        one = data.for_target(target)
        model, _, seconds = train(one, epochs, seed)
        result[target] = (model, kft.evaluate(model, one), seconds)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8, help="most phase-2 epochs of every model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; every seed trains all three models")
    parser.add_argument("--loss-weights", choices=("equal", "balanced"), default="equal",
                        help="the multi-task model's: fine_tune's default (1 each) or balanced on the first batch")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    started = time.monotonic()
    data = kft.samples.spoken_words(seed=0, targets=TARGETS)
    print(data.summary(), flush=True)
    runs = {seed: run_seed(data, args.epochs, seed, "balanced" if args.loss_weights == "balanced" else None)
            for seed in seeds}

    first = runs[seeds[0]]  # latency is a property of the architecture: measured on the first seed's models
    batch = data.inputs("test")[:32]
    outputs = first["multi"][0].predict(batch, verbose=0)
    for target in TARGETS:  # the multi-task model's dict holds one output per target, as trained
        assert outputs[target].shape == (32, data.targets[target].num_outputs)
    multi_latency = median_latency(first["multi"][0], batch, args.repeats)
    single_latency = {target: median_latency(first[target][0], batch, args.repeats) for target in TARGETS}
    both = sum(single_latency.values())

    def accuracy(run, model, target):
        return run[model][1][target]["accuracy"] if model == "multi" else run[model][1]["accuracy"]

    def mean(values):
        return sum(values) / len(values)

    rows = ["| seed | model | " + " | ".join(f"test accuracy, {t}" for t in TARGETS) + " | training |",
            "|---|---|" + "---|" * (len(TARGETS) + 1)]
    for seed, run in runs.items():
        rows.append(f"| {seed} | multi-task: one backbone, {len(TARGETS)} heads | "
                    + " | ".join(f"{accuracy(run, 'multi', t):.4f}" for t in TARGETS) + f" | {run['multi'][2]:.0f} s |")
        rows.append(f"| {seed} | two single-task models | "
                    + " | ".join(f"{accuracy(run, t, t):.4f}" for t in TARGETS)
                    + f" | {sum(run[t][2] for t in TARGETS):.0f} s |")
    gaps = {t: 100 * mean([accuracy(run, "multi", t) - accuracy(run, t, t) for run in runs.values()])
            for t in TARGETS}
    rows.append(f"| mean of {len(seeds)} | multi-task | " + " | ".join(
        f"**{mean([accuracy(run, 'multi', t) for run in runs.values()]):.4f}**" for t in TARGETS) + " | |")
    rows.append(f"| mean of {len(seeds)} | single-task | " + " | ".join(
        f"{mean([accuracy(run, t, t) for run in runs.values()]):.4f}" for t in TARGETS) + " | |")
    latency = ["", "| model | latency, batch 32 | parameters |", "|---|---|---|",
               f"| multi-task | {multi_latency * 1000:.0f} ms (**{multi_latency / both:.2f}x**) | "
               f"{first['multi'][0].count_params() / 1e6:.2f}M |"]
    for target in TARGETS:
        latency.append(f"| single-task: {target} | {single_latency[target] * 1000:.0f} ms | "
                       f"{first[target][0].count_params() / 1e6:.2f}M |")
    latency.append(f"| two single-task models together | {both * 1000:.0f} ms (1.00x) | "
                   f"{sum(first[t][0].count_params() for t in TARGETS) / 1e6:.2f}M |")
    weights = first["loss_weights"]
    verdict = [
        "",
        f"Multi-task minus single-task, test accuracy, mean of {len(seeds)} seeds: "
        + ", ".join(f"{t} {gap:+.2f} points" for t, gap in gaps.items())
        + f" (target: no worse than -1 point: {'met' if min(gaps.values()) >= -1 else 'NOT met'}); latency "
        f"{multi_latency / both:.2f}x the two single-task models together (target <= 0.6x: "
        f"{'met' if multi_latency / both <= 0.6 else 'NOT met'}). Loss weights ({args.loss_weights}, seed "
        f"{seeds[0]}): " + ", ".join(f"{t} {w:.3f}" for t, w in weights.items()) + ".",
    ]
    note = (f"{BACKBONE} on 64-band log-mel spectrograms resized to {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
            f"kft.samples.spoken_words(targets={TARGETS}): {data.size('train')} train / {data.size('validation')} "
            f"validation / {data.size('test')} test clips, test speakers never heard in training; every model "
            f"trainable='top:4', Head((128,), dropout 0.2), fine_tune(warmup_epochs=20, epochs={args.epochs}, "
            f"fine_tune_learning_rate=3e-4, patience=3, augmentation=0.5), seeds {seeds}; latency: median of "
            f"{args.repeats} predict calls on 32 raw test clips; whole script {time.monotonic() - started:.0f} s, load "
            f"average {os.getloadavg()[0]:.1f} at its end")
    title = "Multi-task learning (bench/multi_task.py)" if args.loss_weights == "equal" else (
        "Multi-task learning, balanced loss weights (bench/multi_task.py --loss-weights balanced)")
    write_section(title, "\n".join(rows + latency + verdict), note)
    print("\n".join(rows + latency + verdict))


if __name__ == "__main__":
    main()

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

Reported, in one run: test accuracy per target (the targets: the multi-task
model within 1 point of each single-task model), training wall time, and
inference latency (median of repeated `predict` calls on 32 raw test clips)
of the multi-task model against the two single-task models run one after the
other (target: at most 0.6x). Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/multi_task.py [--epochs 8] [--repeats 5] [--loss-weights equal|balanced]
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


def train(data, epochs, loss_weights=None):
    """Builds and fine-tunes one model on `data` with the shared recipe; returns it, its history and seconds."""
    start = time.monotonic()
    model = kft.build_classifier(BACKBONE, data=data, image_size=IMAGE_SIZE, trainable="top:4",
                                 head=kft.Head(units=(128,), dropout=0.2), seed=0)
    history = kft.fine_tune(model, data, epochs=epochs, warmup_epochs=20, batch_size=32,
                            fine_tune_learning_rate=3e-4, patience=3, augmentation=0.5, seed=0, verbose=1,
                            loss_weights=loss_weights)
    return model, history, time.monotonic() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8, help="most phase-2 epochs of every model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loss-weights", choices=("equal", "balanced"), default="equal",
                        help="the multi-task model's: fine_tune's default (1 each) or balanced on the first batch")
    args = parser.parse_args()
    started = time.monotonic()
    data = kft.samples.spoken_words(seed=0, targets=TARGETS)
    print(data.summary(), flush=True)

    multi, history, multi_seconds = train(data, args.epochs, "balanced" if args.loss_weights == "balanced" else None)
    multi_scores = kft.evaluate(multi, data)
    single = {}
    for target in TARGETS:
        one = data.for_target(target)
        model, _, seconds = train(one, args.epochs)
        single[target] = (model, kft.evaluate(model, one), seconds)

    batch = data.inputs("test")[:32]
    outputs = multi.predict(batch, verbose=0)
    for target in TARGETS:  # the multi-task model's dict holds one output per target, as trained
        assert outputs[target].shape == (32, data.targets[target].num_outputs)
    multi_latency = median_latency(multi, batch, args.repeats)
    single_latency = {target: median_latency(single[target][0], batch, args.repeats) for target in TARGETS}
    both = sum(single_latency.values())

    rows = ["| model | " + " | ".join(f"test accuracy, {t}" for t in TARGETS)
            + " | training | latency, batch 32 | parameters |", "|---|" + "---|" * (len(TARGETS) + 3)]
    rows.append(f"| multi-task: one backbone, {len(TARGETS)} heads | "
                + " | ".join(f"**{multi_scores[t]['accuracy']:.4f}**" for t in TARGETS)
                + f" | {multi_seconds:.0f} s | {multi_latency * 1000:.0f} ms (**{multi_latency / both:.2f}x**) | "
                f"{multi.count_params() / 1e6:.2f}M |")
    for target in TARGETS:
        model, scores, seconds = single[target]
        cells = [f"{scores['accuracy']:.4f}" if t == target else "-" for t in TARGETS]
        rows.append(f"| single-task: {target} | " + " | ".join(cells) + f" | {seconds:.0f} s | "
                    f"{single_latency[target] * 1000:.0f} ms | {model.count_params() / 1e6:.2f}M |")
    rows.append("| two single-task models together | " + " | ".join(
        f"{single[t][1]['accuracy']:.4f}" for t in TARGETS) + f" | {sum(s[2] for s in single.values()):.0f} s | "
        f"{both * 1000:.0f} ms (1.00x) | {sum(s[0].count_params() for s in single.values()) / 1e6:.2f}M |")
    gaps = {t: 100 * (multi_scores[t]["accuracy"] - single[t][1]["accuracy"]) for t in TARGETS}
    verdict = [
        "",
        "Multi-task minus single-task, test accuracy: " + ", ".join(f"{t} {gap:+.2f} points" for t, gap in
                                                                    gaps.items())
        + f" (target: no worse than -1 point: {'met' if min(gaps.values()) >= -1 else 'NOT met'}); latency "
        f"{multi_latency / both:.2f}x the two single-task models together (target <= 0.6x: "
        f"{'met' if multi_latency / both <= 0.6 else 'NOT met'}). Loss weights ({args.loss_weights}): "
        + ", ".join(f"{t} {w:.3f}" for t, w in history.loss_weights.items()) + ".",
    ]
    note = (f"{BACKBONE} on 64-band log-mel spectrograms resized to {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
            f"kft.samples.spoken_words(targets={TARGETS}): {data.size('train')} train / {data.size('validation')} "
            f"validation / {data.size('test')} test clips, test speakers never heard in training; every model "
            f"trainable='top:4', Head((128,), dropout 0.2), seed 0, fine_tune(warmup_epochs=20, epochs={args.epochs}, "
            "fine_tune_learning_rate=3e-4, patience=3, augmentation=0.5); latency: median of "
            f"{args.repeats} predict calls on 32 raw test clips; whole script {time.monotonic() - started:.0f} s, load "
            f"average {os.getloadavg()[0]:.1f} at its end")
    title = "Multi-task learning (bench/multi_task.py)" if args.loss_weights == "equal" else (
        "Multi-task learning, balanced loss weights (bench/multi_task.py --loss-weights balanced)")
    write_section(title, "\n".join(rows + verdict), note)
    print("\n".join(rows + verdict))


if __name__ == "__main__":
    main()

"""Distillation into genuinely smaller students, against the same students trained on the labels alone.

One run per data set, each writing its section of bench/BENCHMARKS.md:
- BBC News (`kft.samples.bbc_news()`, stratified 70/15/15, 128 tokens). Teacher: the mean ensemble of
  3 MiniLM-L6 members, each fully fine-tuned (every layer, 3 epochs, batch 16, no head warm-up: the
  plain KerasHub recipe, bench/fine_tune_speed.py), seeds 0-2. Students: `minilm_l3`
  (paraphrase-MiniLM-L3-v2) and MiniLM-L6 cut to 3 layers from the first member's fine-tuned backbone
  (`student_layers=3`: its layers 0, 3 and 5: DistilBERT's initialization), every layer trained, as
  DistilBERT trains its student. Weaker recipes measured: members `top:1` (3 epochs) made a 0.9686
  teacher, under the cut student on the labels alone (0.9780), which then distilled to 0.9717
  (2026-11-30); members `top:2` (8 epochs, 1e-4) all rolled phase 2 back, the same 0.9686 teacher and
  the same miss (2026-12-01); this teacher with students training their top 2 layers only: MiniLM-L3
  0.9654, the cut student 0.9748 distilled and alone (2026-12-01). `--fused-teacher`:
  the teacher also fuses a TF-IDF member (`tfidf`), weighted on validation (bench/fusion.py: fusion beats
  each kind alone), so the teacher knows more than a student can learn from the labels (its section of
  BENCHMARKS.md was measured with the `top:1` members and students training their top 2 layers).
  `--text-windows N`: every student (distilled and on the labels alone) trains on
  `data.with_text_windows(copies=N)`: each training article also as N windows of 100 consecutive words
  from a random word on, which the teacher labels (the articles run to ~400 words; a student reads the
  first 128 tokens), in a section of its own. `--student NAME` runs that student alone.
- Fashion-MNIST (2000 train / 500 validation / 2000 test, 28x28 upscaled). Teacher: the mean ensemble of
  3 EfficientNet-Lite2 members (`top:3`, seeds 0-2) at 160x160 (Lite2 is built for 260x260; at 96x96
  its members rolled back to one shared frozen backbone, 0.84x-0.90x a student's latency, 2026-11-30).
  Student: `efficientnet_lite0` at the teacher's 160x160, so that it is smaller by its network alone
  (at 96x96 it distilled to 0.8400, 1.6 points under the teacher, 2026-11-30), with and without
  augmentation of its training images (strength 0.2; distilled, the teacher labels each augmented batch
  as the student sees it; at 0.5 it scored 2 points under the unaugmented student), to measure what
  augmented distillation adds.
Every student has one recipe (head, trainable blocks, epochs, seed) whether distilled (temperature 2,
alpha 0.5) or trained on the labels alone. For each model: parameters, latency at batch 32 and at
batch 1 (bench/timing.py's median of 3 `predict` calls, in 5 rounds interleaved across the models: the
least disturbed round), test accuracy, training time; then each distilled student against the targets:
<= 0.6x the teacher's latency at batch 32, within 1.5 points of its test accuracy, better than the
same student on the labels alone.

Usage: .venv/bin/python bench/distillation.py [--data bbc_news|fashion_mnist] [--quick] [--fused-teacher]
    [--text-windows N] [--student NAME]
(--quick: a small subset and 1 epoch per phase, to check the script end to end; writes nothing)
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402
from kerasft import backbones, models  # noqa: E402
from timing import median_latency, raw_batch, timed  # noqa: E402

LATENCY_TARGET, ACCURACY_TARGET = 0.6, 0.015

SETTINGS = {
    "bbc_news": dict(
        title="BBC News",
        load=lambda: kft.samples.bbc_news(seed=0),
        quick_sizes=dict(train=100, validation=40, test=40),
        teacher="minilm_l6", teacher_build={"sequence_length": 128}, build={"sequence_length": 128},
        members=[kft.Head()] * 3,
        member_fit=dict(trainable="all", warmup_epochs=0, epochs=3, batch_size=16),
        students=[("minilm_l3", None), ("minilm_l6", 3)],
        # 8 epochs, early stopping on validation: with 4, the distilled cut student's phase 2 was rolled back while
        # its validation loss still fell (fused teacher: 1.3121, 1.2045, 1.1615, 1.1493 against phase 1's 1.1341;
        # 2026-11-30), so it was compared as a head on frozen layers against a fine-tuned student on the labels.
        student_head=kft.Head(), student_fit=dict(trainable="all", epochs=8, fine_tune_learning_rate=1e-4),
        augmentations=[0.0]),
    "fashion_mnist": dict(
        title="Fashion-MNIST",
        load=lambda: kft.samples.fashion_mnist(seed=0).subset(train=2000, validation=500, test=2000, seed=0),
        quick_sizes=dict(train=100, validation=50, test=100),
        teacher="efficientnet_lite2", teacher_build={"image_size": (160, 160)}, build={"image_size": (160, 160)},
        members=[kft.Head(units=(128,), dropout=0.2)] * 3,
        member_fit=dict(trainable="top:3", epochs=5, fine_tune_learning_rate=3e-4),
        students=[("efficientnet_lite0", None)],
        student_head=kft.Head(units=(128,), dropout=0.2),
        student_fit=dict(trainable="top:3", epochs=6, fine_tune_learning_rate=3e-4),
        augmentations=[0.2, 0.0]),
}


def quick_fit(fit, quick):
    """The recipe, or one epoch per phase of it for a --quick check."""
    return {**fit, "epochs": 1, "warmup_epochs": 1} if quick else fit


def teacher_of(data, setting, quick, fused=False):
    """The mean ensemble of the members, each fine-tuned with its own seed and head; `fused`: with a TF-IDF member
    beside them, weighted on validation (model fusion: kerasft's most accurate text model, bench/fusion.py)."""
    members = []
    for seed, head in enumerate(setting["members"]):
        fit = dict(quick_fit(setting["member_fit"], quick))
        member = kft.build_classifier(setting["teacher"], data=data, head=head, trainable=fit.pop("trainable"),
                                      seed=seed, **setting["teacher_build"])
        kft.fine_tune(member, data, seed=seed, verbose=0, **fit)
        members.append(member)
    if not fused:
        return kft.ensemble(members, method="mean"), members
    classic = kft.build_classifier("tfidf", data=data, seed=0)
    kft.fine_tune(classic, data, seed=0, verbose=0)
    return kft.ensemble(members + [classic], method="weighted", validation=data), members


def students_of(teacher, members, data, setting, quick, only=None):
    """Each student (`only`: that one) distilled and on the labels alone, at each augmentation:
    `{label: (model, seconds)}`."""
    fit = dict(quick_fit(setting["student_fit"], quick))
    trainable = fit.pop("trainable")
    students = {}
    for name, layers in setting["students"]:
        if only and name != only:
            continue
        spec = backbones.fewer_layers(name, models.backbones_of(members[0])[0], layers) if layers else name
        label = f"{name} cut to {layers} layers" if layers else name
        for augmentation in setting["augmentations"]:
            recipe = dict(fit, augmentation=augmentation, seed=0, verbose=0)
            suffix = f", augmented ({augmentation:g})" if augmentation else ""
            if len(setting["augmentations"]) > 1 and not augmentation:
                suffix = ", not augmented"
            students[f"{label}, distilled{suffix}"] = timed(lambda: kft.distill(
                teacher, name, data, head=setting["student_head"], trainable=trainable, student_layers=layers,
                **setting["build"], **recipe))
            students[f"{label}, labels alone{suffix}"] = timed(lambda: labels_alone(spec, data, setting, trainable,
                                                                                    recipe))
    return students


def labels_alone(spec, data, setting, trainable, recipe):
    """The student built as `distill` builds it (seed 0), fine-tuned on the labels with the same recipe."""
    model = kft.build_classifier(spec, data=data, head=setting["student_head"], trainable=trainable, seed=0,
                                 **setting["build"])
    kft.fine_tune(model, data, **recipe)
    return model


def measure(models_by_label, data, rounds=5):
    """`{label: (parameters, latency at batch 32, latency at batch 1, test accuracy, seconds)}`.

    A latency is `median_latency` in its least disturbed of `rounds` rounds interleaved across the models: on
    this shared machine one model's median alone varied 2x from call to call (other jobs' bursts), and
    identical students measured 0.56x-0.85x the teacher in one run that took the median of the rounds.
    """
    batch, _ = raw_batch(data.test, data.modality, 32)
    times = {label: [] for label in models_by_label}
    for _ in range(rounds):
        for label, (model, _) in models_by_label.items():
            times[label].append((median_latency(model, batch, repeats=3), median_latency(model, batch[:1], repeats=3)))
    return {label: (model.count_params(), *np.min(times[label], axis=0), kft.evaluate(model, data)["accuracy"],
                    seconds)
            for label, (model, seconds) in models_by_label.items()}


def run(name, quick, fused=False, windows=0, only=None):
    setting = SETTINGS[name]
    data = setting["load"]()
    if quick:
        data = data.subset(**setting["quick_sizes"], seed=0)
    (teacher, members), seconds = timed(lambda: teacher_of(data, setting, quick, fused))
    student_data = data.with_text_windows(copies=windows) if windows else data
    teacher_label = f"teacher: mean of 3 {setting['teacher']} ({setting['member_fit']['trainable']})"
    if fused:
        teacher_label = (f"teacher: 3 {setting['teacher']} ({setting['member_fit']['trainable']}) and tfidf, weighted "
                         "on validation")
    figures = measure({teacher_label: (teacher, seconds),
                       **students_of(teacher, members, student_data, setting, quick, only)}, data)
    params, latency, latency_one, accuracy, _ = figures[teacher_label]
    rows = ["| model | parameters | latency, batch 32 | latency, batch 1 | test accuracy | training |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {label} | {p / 1e6:.2f}M ({p / params:.2f}x) | {t * 1000:.0f} ms ({t / latency:.2f}x) | "
             f"{t1 * 1000:.0f} ms ({t1 / latency_one:.2f}x) | {a:.4f} | {s:.0f} s |"
             for label, (p, t, t1, a, s) in figures.items()]
    rows += ["", f"Targets (<= {LATENCY_TARGET}x the teacher's latency at batch 32, within "
                 f"{100 * ACCURACY_TARGET:.1f} points of its test accuracy {accuracy:.4f}, better than the same "
                 "student on the labels alone):", ""]
    for label, (_, t, _, a, _) in figures.items():
        if ", distilled" not in label:
            continue
        alone = figures[label.replace(", distilled", ", labels alone")][3]
        checks = [(f"latency {t / latency:.2f}x", t / latency <= LATENCY_TARGET),
                  (f"{100 * (a - accuracy):+.1f} points vs the teacher", accuracy - a <= ACCURACY_TARGET),
                  (f"{100 * (a - alone):+.1f} points vs labels alone", a > alone)]
        rows.append(f"- {label}: " + "; ".join(f"{text} ({'hit' if ok else '**miss**'})" for text, ok in checks))
    body = "\n".join(rows)
    print(body, flush=True)
    if not quick:
        build = ", ".join(f"{k}={v}" for k, v in setting["build"].items())
        if setting["teacher_build"] != setting["build"]:
            build = "the teacher's " + ", ".join(f"{k}={v}" for k, v in setting["teacher_build"].items()) + (
                f", the students' {build}")
        flags = "".join([" --fused-teacher"] * fused + [f" --text-windows {windows}"] * bool(windows)
                        + [f" --student {only}"] * bool(only))
        source = ((" from a fused teacher" if fused else "") + (", students on window views" if windows else "")
                  + f" (bench/distillation.py{flags})")
        write_section(
            f"Distillation into smaller students: {setting['title']}{source}", body,
            f"{data.name}: {data.size('train')} train / {data.size('validation')} validation / {data.size('test')} "
            f"test, {build}; teacher members {setting['member_fit']}; every student {setting['student_fit']}, "
            f"head {setting['student_head']}, seed 0, distilled at temperature 2, alpha 0.5"
            + (f"; students on {student_data.size('train')} training texts: {student_data.report.notes[-1]}"
               if windows else ""))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", choices=sorted(SETTINGS), help="one data set (default: both)")
    parser.add_argument("--quick", action="store_true", help="a small subset, 1 epoch per phase; writes nothing")
    parser.add_argument("--fused-teacher", action="store_true",
                        help="text: the teacher also fuses a TF-IDF member (weighted on validation)")
    parser.add_argument("--text-windows", type=int, default=0, metavar="N",
                        help="text: students also train on N windows of each training article (with_text_windows)")
    parser.add_argument("--student", help="run this student alone (a name in the data's students)")
    args = parser.parse_args()
    if args.fused_teacher and args.data != "bbc_news":
        parser.error("--fused-teacher fuses a TF-IDF member: it needs --data bbc_news")
    if args.student and args.student not in [name for name, _ in SETTINGS[args.data or "bbc_news"]["students"]]:
        parser.error(f"--student {args.student}: not a student of {args.data or 'bbc_news'} (pass --data)")
    if args.text_windows < 0:
        parser.error(f"--text-windows is a number of windows per article >= 0. Received: {args.text_windows}")
    if args.text_windows and args.data != "bbc_news":
        parser.error("--text-windows cuts windows of texts: it needs --data bbc_news")
    for name in [args.data] if args.data else list(SETTINGS):
        run(name, args.quick, args.fused_teacher, args.text_windows, args.student)


if __name__ == "__main__":
    main()

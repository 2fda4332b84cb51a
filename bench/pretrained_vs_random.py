"""EfficientNet-Lite0 on Fashion-MNIST: ImageNet weights against random initialization, same data and budget.

Both runs use the image recipe's settings (a stratified 2000/500/2000 subset,
96x96, a 128-unit head, 10 head epochs on frozen features then 3 epochs with the
top 3 blocks unfrozen) and differ only in `pretrained=`. A second random-init
run unfreezes the whole network (`trainable="all"`), the most a from-scratch
model can get from the same budget. Writes a section of bench/BENCHMARKS.md.

Usage: .venv/bin/python bench/pretrained_vs_random.py
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kerasft as kft  # noqa: E402
from bench_report import write_section  # noqa: E402

IMAGE_SIZE = (96, 96)


def run(data, pretrained, trainable):
    start = time.perf_counter()
    model = kft.build_classifier("efficientnet_lite0", data=data, image_size=IMAGE_SIZE, trainable=trainable,
                                 pretrained=pretrained, head=kft.Head(units=(128,), dropout=0.2))
    kft.fine_tune(model, data, epochs=3, warmup_epochs=10, batch_size=32, fine_tune_learning_rate=3e-4, verbose=0)
    return kft.evaluate(model, data)["accuracy"], time.perf_counter() - start


def main():
    data = kft.samples.fashion_mnist(seed=0).subset(train=2000, validation=500, test=2000, seed=0)
    pretrained, t_pre = run(data, True, "top:3")
    random_top, t_top = run(data, False, "top:3")
    random_all, t_all = run(data, False, "all")
    rows = [
        "| initialization | trainable | test accuracy | seconds |",
        "|---|---|---|---|",
        f"| ImageNet (pretrained) | top:3 | **{pretrained:.4f}** | {t_pre:.0f} |",
        f"| random | top:3 | {random_top:.4f} | {t_top:.0f} |",
        f"| random | all | {random_all:.4f} | {t_all:.0f} |",
        "",
        f"Pretrained minus the better random run: **{100 * (pretrained - max(random_top, random_all)):+.1f} points**.",
    ]
    write_section("Pretrained vs random initialization (bench/pretrained_vs_random.py)", "\n".join(rows),
                  "EfficientNet-Lite0, Fashion-MNIST stratified subset 2000 train / 500 validation / 2000 test "
                  "(official test split), 28x28 upscaled to 96x96, BatchNorm frozen in every run")
    print("\n".join(rows))


if __name__ == "__main__":
    main()

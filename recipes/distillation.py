"""
Title: Distill a tuned ensemble into one fast student
Description: The teacher's softened probabilities train a cheaper model that keeps most of its accuracy.

An ensemble is accurate but costs several models at serving time. Knowledge
distillation (Hinton et al., 2015) trains a student on the teacher's
probabilities, softened by a temperature and mixed with the true labels.
Here the teacher is a mean ensemble of three MiniLM members fine-tuned at
256 tokens (each its own top block, so three backbones), and the student is
one frozen MiniLM reading 64 tokens.

Set `KERASFT_SMOKE=1` to run on a small subset in about a minute.
"""

import os
import time

import numpy as np

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
OUTPUT = os.environ.get("KERASFT_OUTPUT", "saved_models/bbc_news_student")
TEACHER_LENGTH, STUDENT_LENGTH = (32, 16) if SMOKE else (256, 64)

data = kft.samples.bbc_news(seed=0)
if SMOKE:
    data = data.subset(train=80, validation=40, test=40, seed=0)

"""
## The teacher: three members, averaged

Each member warms its own head up on the frozen features, then fine-tunes
the top transformer block; seeds make them differ.
"""

members = []
for seed in range(2 if SMOKE else 3):
    member = kft.build_classifier("minilm_l6", data=data, trainable="top:1", sequence_length=TEACHER_LENGTH,
                                  head=kft.Head(units=(128,), dropout=0.2))
    kft.fine_tune(member, data, epochs=1, warmup_epochs=5 if SMOKE else 10, seed=seed, verbose=0)
    members.append(member)
teacher = kft.ensemble(members, method="mean")

"""
## The student

`distill` builds the student and trains it through the same two-phase
`fine_tune`, on `alpha` x the true labels + `(1 - alpha)` x the teacher's
probabilities at temperature 2. The teacher runs once over each split.
"""

student = kft.distill(teacher, "minilm_l6", data, temperature=2.0, alpha=0.5, sequence_length=STUDENT_LENGTH,
                      epochs=10 if SMOKE else 30, verbose=0)

"""
## Teacher against student: size, latency, accuracy
"""

batch = np.array([x.numpy().decode() for x, _ in data.test.take(32)], dtype=object)


def latency(model):
    model.predict(batch, verbose=0)  # trace once
    start = time.perf_counter()
    model.predict(batch, verbose=0)
    return time.perf_counter() - start


for name, model in (("teacher", teacher), ("student", student)):
    print(f"{name}: {model.count_params() / 1e6:.1f}M parameters, {latency(model) * 1000:.0f} ms per 32 "
          f"articles, test accuracy {kft.evaluate(model, data)['accuracy']:.4f}")

result = kft.evaluate(student, data)
exported = kft.export(student, OUTPUT, data=data, metrics=result)
print(f"test accuracy {result['accuracy']:.4f}; exported {exported.path}")

"""Every Python snippet and `kerasft` command of README.md runs, top to bottom, on tiny backbones and tiny data.

` ```python ` blocks run in one namespace, in order, as a reader pastes them;
` ```sh ` blocks hold `kerasft` command lines, run in-process. Blocks in other
languages are not run: `bash` (make, docker, curl, the recipes' launch lines),
`py` (code for a device without kerasft), and unmarked ones (folder layouts).
The substitutions below swap the pretrained backbones and the sample data sets
for tiny ones, and the user's files the snippets name are written first.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kerasft as kft
from conftest import TINY_VOCAB, TONES, tone, write_tones
from kerasft import cli
from kerasft.cli import loading

README = Path(__file__).resolve().parents[1] / "README.md"
BACKBONES = {"minilm_l6": "tiny_bert", "minilm_l3": "tiny_bert", "efficientnet_lite0": "tiny_cnn"}
SAMPLES = {"kft.samples.bbc_news()": "tiny_text", "kft.samples.spoken_words()": "tiny_sound",
           'kft.samples.spoken_words(targets=("word", "speaker_sex"))':  # the two-target folder the README reads
           'kft.data.from_directory("commands/", labels_file="speakers.csv", label_column=["word", "speaker_sex"])'}
FEWER_TRIALS = {"max_trials=10": "max_trials=3", "--max-trials 10": "--max-trials 3"}
SHORTER = {"kft.auto(data, time_limit=300)": 'kft.auto(data, time_limit=90, backbones_to_try=["tfidf", "tiny_bert"])',
           "auto reviews.csv --time-limit 300": "auto reviews.csv --time-limit 90",
           # A layer cut keeps at least 2 layers: the README's 6-layer MiniLM teacher is, here, a 4-layer tiny BERT.
           'kft.distill(ens, "tiny_bert", data, student_layers=3':
           'kft.distill(kft.build_classifier("tiny_bert4", data=data), "tiny_bert4", data, student_layers=2',
           # tiny_cnn has 2 blocks (EfficientNet-Lite0 has 7).
           'data=voices, trainable="top:4")': 'data=voices, trainable="top:1")'}


def _blocks(text):
    """`(language, first line number, code)` of each fenced block."""
    return [(match.group(1), text.count("\n", 0, match.start(2)) + 1, match.group(2))
            for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, flags=re.M | re.S)]


def _substitute(code):
    for name, tiny in BACKBONES.items():
        code = code.replace(f'"{name}"', f'"{tiny}"')
    for before, after in {**SAMPLES, **FEWER_TRIALS, **SHORTER}.items():
        code = code.replace(before, after)
    return code


def _command_lines(code):
    """The `kerasft` command lines of an sh block as argument lists: continuations joined, comments dropped."""
    lines = _substitute(code).replace("\\\n", " ").splitlines()
    return [[BACKBONES.get(a, a) for a in shlex.split(line, comments=True)[1:]]
            for line in lines if line.startswith("kerasft ")]


def _write_user_files(root):
    """reviews.csv, holdout.csv, tickets.csv (topic, urgency), photos/ (cat, dog), commands/ (hum, hiss) and
    speakers.csv (their speaker_sex), as the snippets name them."""
    rng = np.random.default_rng(0)
    for name, count in (("reviews.csv", 60), ("holdout.csv", 12)):
        rows = [f'"the {("cat", "dog")[i % 2]}, {" ".join(rng.choice(TINY_VOCAB[13:], 3))} {i}",'
                f'{("good", "bad")[i % 2]}' for i in range(count)]
        (root / name).write_text("\n".join(["text,label", *rows]) + "\n")
    rows = [f'"the {("cat", "dog")[i % 2]} {" ".join(rng.choice(TINY_VOCAB[13:], 3))} {i}",{("cats", "dogs")[i % 2]},'
            f'{("high", "low")[i % 3 == 0]}' for i in range(60)]
    (root / "tickets.csv").write_text("\n".join(["text,topic,urgency", *rows]) + "\n")
    for name, level in (("cat", 60), ("dog", 180)):
        (root / "photos" / name).mkdir(parents=True)
        for i in range(1, 21):
            pixels = np.clip(level + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / "photos" / name / f"{i}.jpg")
    write_tones(root / "commands", per_class=12)
    (root / "speakers.csv").write_text("\n".join(["file,speaker_sex", *(
        f"{word}/{i}.wav,{('female', 'male')[i % 2]}" for word in TONES for i in range(12))]) + "\n")


@pytest.mark.extended  # ~10 minutes of tiny trainings and exports: make test-all
@pytest.mark.timeout(1500)
def test_every_snippet_of_the_readme_runs(tiny_bert, tiny_bert4, tiny_cnn, tiny_text_data, tmp_path, monkeypatch,
                                         capsys):
    monkeypatch.chdir(tmp_path)
    for modality, backbone in {"text": "tiny_bert", "image": "tiny_cnn", "audio": "tiny_cnn"}.items():
        monkeypatch.setitem(loading.DEFAULT_BACKBONES, modality, backbone)  # the dict the CLI reads
    _write_user_files(tmp_path)
    namespace = {"tiny_text": tiny_text_data,
                 "tiny_sound": kft.data.from_directory("commands", sample_rate=16000, duration=1.0),
                 # One-second clips with a word and a speaker_sex, as the multi-task snippet's `clips`.
                 "clips": np.stack([tone(TONES[word], seconds=1.0, seed=i)[:16000] for i in range(12)
                                    for word in TONES]),
                 "word_labels": np.array(list(TONES) * 12), "sex_labels": np.array(["female", "male"] * 12)}
    python_blocks, commands = 0, set()
    for language, line, code in _blocks(README.read_text()):
        if language == "python":
            # Padded so that a traceback names the README's own line.
            exec(compile("\n" * (line - 1) + _substitute(code), str(README), "exec"), namespace)
            python_blocks += 1
        elif language == "sh":
            for argv in _command_lines(code):
                code_ = cli.main(argv)
                assert code_ == 0, (f"README.md line {line}: kerasft {shlex.join(argv)}", capsys.readouterr().err)
                commands.add(argv[0])
    assert python_blocks >= 10
    assert commands == {"train", "predict", "evaluate", "tune", "ensemble", "auto", "export"}
    # What the snippets promise: the quickstart's reload, --keep, and the run folders kept.
    assert (tmp_path / "saved_models" / "bbc_news" / "labels.txt").read_text().splitlines() == ["cats", "dogs"]
    # saved_models/reviews: version 1 by `train`, 2 by `auto`, 3 by `export --keep 3`.
    assert sorted(p.name for p in (tmp_path / "saved_models" / "reviews").iterdir() if p.name.isdigit()) == ["1", "2",
                                                                                                          "3"]
    assert (tmp_path / "runs" / "reviews" / "report.html").exists()

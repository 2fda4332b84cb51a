"""Run reports: every section and image is there, and a real browser (headless Chromium) renders them all."""

import re
import shutil
import subprocess

import keras
import pytest
from PIL import Image

import kerasft as kft
from kerasft import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_folder(tiny_cnn, tiny_image_data, tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_cnn", data=tiny_image_data, trainable="top:1")
    history = kft.fine_tune(model, tiny_image_data, epochs=2, warmup_epochs=3, verbose=0)
    folder = tmp_path_factory.mktemp("run")
    report.write_report(folder, evaluation=kft.evaluate(model, tiny_image_data), history=history,
                        data=tiny_image_data, title="tiny CNN on brightness", details={"backbone": "tiny_cnn"})
    return folder


def test_report_has_every_section_in_html_and_markdown(run_folder):
    page, markdown = (run_folder / "report.html").read_text(), (run_folder / "report.md").read_text()
    for heading in ("Run", "Training curves", "Test metrics", "Per class", "Confusion matrix", "Calibration",
                    "Most confident"):
        assert f"<h2>{heading}" in page and f"## {heading}" in markdown
    for image in re.findall(r"src='([^']+)'", page):
        with Image.open(run_folder / image) as opened:  # every referenced file exists and decodes
            opened.verify()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make install adds it)")
def test_headless_chromium_renders_the_report_with_every_image_loaded(run_folder):
    url = (run_folder / "report.html").as_uri()
    flags = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    loaded, total = map(int, re.search(r'data-images="(\d+)/(\d+)"', dom).groups())
    assert total >= 3 and loaded == total
    screenshot = run_folder / "report_screenshot.png"
    subprocess.run(flags + ["--window-size=1200,2400", f"--screenshot={screenshot}", url], capture_output=True,
                   timeout=120, check=True)
    with Image.open(screenshot) as image:
        assert image.size == (1200, 2400)
        assert len(set(image.convert("L").resize((60, 120)).getdata())) > 10  # a page was drawn, not a blank


def test_an_audio_run_lets_you_listen_to_its_mistakes(tiny_cnn, tmp_path):
    import numpy as np
    import soundfile

    from conftest import write_tones

    data = kft.data.from_directory(write_tones(tmp_path / "clips", per_class=12), seed=0)
    model = kft.build_classifier("tiny_cnn", data=data, image_size=(32, 32), seed=0)  # untrained: it errs
    evaluation = kft.evaluate(model, data)
    report.write_report(tmp_path / "run", evaluation=evaluation, data=data)
    page, markdown = (tmp_path / "run" / "report.html").read_text(), (tmp_path / "run" / "report.md").read_text()
    clips = sorted((tmp_path / "run" / "misclassified").glob("*.wav"))
    assert len(clips) == int((evaluation.probabilities.argmax(-1) != evaluation.labels).sum()) > 0
    for clip in clips:
        assert f"<audio controls src='misclassified/{clip.name}'>" in page
        assert f"(misclassified/{clip.name})" in markdown
        index = int(clip.stem.split("_")[1])
        waveform, rate = soundfile.read(clip, dtype="float32")
        assert rate == 16000
        np.testing.assert_allclose(waveform, data.inputs("test")[index], atol=1 / 32767)

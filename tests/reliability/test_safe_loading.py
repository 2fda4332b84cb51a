"""Safe loading: what kerasft reads never runs code it did not expect (see also test_convert's pickles)."""

import json
import zipfile

import numpy as np
import pytest

import kerasft as kft
from kerasft.convert import read_torch_state_dict


@pytest.mark.parametrize("entry", ["../../evil.pkl", "/etc/evil", "archive/../../x", "C:/windows/x"])
def test_pth_archives_with_escaping_paths_are_refused(tmp_path, entry):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")  # an empty dict: harmless on its own
        archive.writestr(entry, b"x")
    with pytest.raises(ValueError, match=r"absolute or '\.\.' paths.*Nothing was loaded"):
        read_torch_state_dict(path)


def test_a_preset_folder_is_read_never_executed(tmp_path):
    victim = tmp_path / "pwned"
    preset = tmp_path / "preset"
    preset.mkdir()
    evil = {"module": "os", "class_name": "system", "registered_name": "system",
            "config": {"command": f"touch {victim}"}}
    for name in ("config.json", "tokenizer.json", "preprocessor.json", "image_converter.json"):
        (preset / name).write_text(json.dumps(evil))
    (preset / "metadata.json").write_text(json.dumps({"keras_version": "3.15.1", "keras_hub_version": "0.32.0"}))
    with pytest.raises(kft.backbones.BackboneError, match="neither a text nor an image KerasHub preset"):
        kft.build_classifier(str(preset), num_classes=2)
    assert not victim.exists()


@pytest.mark.parametrize("method", ["mean", "uniform_soup"])
def test_every_kind_of_kerasft_model_loads_in_safe_mode(method, tiny_cnn, tiny_image_data, tmp_path):
    import keras

    members = []
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        member = kft.build_classifier("tiny_cnn", data=tiny_image_data)
        kft.fine_tune(member, tiny_image_data, epochs=1, verbose=0, seed=seed)
        members.append(member)
    student = kft.distill(members[0], "tiny_cnn", tiny_image_data, epochs=1, verbose=0)
    for name, model in (("ensemble", kft.ensemble(members, method=method)), ("student", student)):
        exported = kft.export(model, tmp_path / name, formats=("keras",))
        reloaded = keras.models.load_model(exported.keras, safe_mode=True)  # no Lambda, no pickled code
        images = np.asarray(tiny_image_data.inputs("test")[:4])
        np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)

"""Load: one exported SavedModel served from 8 threads x 500 requests, as TF Serving would run it."""

import io
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kerasft as kft

THREADS, REQUESTS = 8, 500


def _serve_concurrently(signature, key, pool, seed=0):
    """Each thread sends REQUESTS requests of 1-8 examples drawn from `pool`; returns (results, errors, seconds)."""
    results, errors = [], []
    lock = threading.Lock()

    def client(index):
        rng = np.random.default_rng(seed + index)
        for _ in range(REQUESTS):
            picked = rng.integers(0, len(pool), size=int(rng.integers(1, 9)))
            try:
                out = signature(**{key: tf.constant(pool[picked])})
                with lock:
                    results.append((picked, out["probabilities"].numpy(), out["label"].numpy()))
            except Exception as error:  # collected: the assertion below names it
                with lock:
                    errors.append(repr(error))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results, errors, time.perf_counter() - start


@pytest.mark.parametrize("modality", ["text", "image"])
def test_8_threads_x_500_requests_match_single_threaded_outputs(modality, tiny_bert, tiny_cnn, tiny_text_data,
                                                                tiny_image_data, tmp_path):
    import keras

    data = tiny_text_data if modality == "text" else tiny_image_data
    keras.utils.set_random_seed(0)
    model = kft.build_classifier("tiny_bert" if modality == "text" else "tiny_cnn", data=data)
    kft.fine_tune(model, data, epochs=2, verbose=0)
    exported = kft.export(model, tmp_path / "export", data=data)
    if modality == "text":
        import tensorflow_text  # noqa: F401

        pool, key = np.array([str(t) for t in data.inputs("train")], dtype=object), "text"
    else:  # encoded PNG bytes of several sizes, as clients send them
        encoded = []
        for i, image in enumerate(data.inputs("train")):
            buffer = io.BytesIO()
            Image.fromarray(image).resize((32 + i % 3 * 8, 32)).save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        pool, key = np.array(encoded, dtype=object), "image_bytes"
    signature = tf.saved_model.load(exported.saved_model).signatures["serving_default"]
    reference = np.concatenate([signature(**{key: tf.constant(pool[i:i + 1])})["probabilities"].numpy()
                                for i in range(len(pool))])

    results, errors, seconds = _serve_concurrently(signature, key, pool)
    assert not errors, errors[:3]
    assert len(results) == THREADS * REQUESTS
    for picked, probabilities, labels in results:
        np.testing.assert_allclose(probabilities, reference[picked], atol=1e-5)
        assert [label.decode() for label in labels] == [data.class_names[i] for i in reference[picked].argmax(-1)]
    print(f"\n{modality}: {THREADS * REQUESTS} requests from {THREADS} threads in {seconds:.1f} s = "
          f"{THREADS * REQUESTS / seconds:.0f} requests/s")

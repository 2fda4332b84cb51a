"""
Title: Serve an exported classifier: Python, the SavedModel signatures, TF Serving
Description: Load both artefacts of `kft.export`, predict on raw input, and serve it over REST.

`kft.export` writes `model.keras` (for Keras users) and numbered SavedModel
versions (for TF Serving), whose signatures take raw strings or encoded image
bytes. This recipe exports a quick BBC News model if none is there yet, then
reads it back every way a user would.

Set `KERASFT_SMOKE=1` to run on a small subset in about a minute.
"""

import json
import os

import numpy as np

import kerasft as kft

SMOKE = os.environ.get("KERASFT_SMOKE") == "1"
EXPORT = os.environ.get("KERASFT_OUTPUT", "saved_models/bbc_news_serving")

"""
## An export to serve

A frozen MiniLM with a trained head, exported with its labels and model card.
"""

if not os.path.isdir(EXPORT):
    data = kft.samples.bbc_news(seed=0)
    if SMOKE:
        data = data.subset(train=60, validation=30, test=30, seed=0)
    model = kft.build_classifier("minilm_l6", data=data, sequence_length=64 if SMOKE else 128)
    kft.fine_tune(model, data, epochs=10 if SMOKE else 20, learning_rate=3e-3, verbose=0)
    kft.export(model, EXPORT, data=data, metrics=kft.evaluate(model, data))

texts = ["The striker scored twice as the league leaders won again.",
         "Shares in the bank fell after profits missed forecasts.",
         "The new handset runs the latest mobile chip and costs less."]

"""
## 1. Python: `kft.load`, from either artefact

The export folder loads through `model.keras`; a version folder through the
SavedModel. Both give the same predictions.
"""

from_keras = kft.load(EXPORT)
versions = sorted(int(v) for v in os.listdir(EXPORT) if v.isdigit())
from_saved_model = kft.load(os.path.join(EXPORT, str(versions[-1])))
labels, scores = from_keras.predict_labels(texts)
np.testing.assert_allclose(from_keras.predict(texts), from_saved_model.predict(texts), atol=1e-5)
for text, label, score in zip(texts, labels, scores):
    print(f"{label:>13} {score:.3f}  {text}")

"""
## 2. The SavedModel's own signature, with TensorFlow only

This is what TF Serving runs: raw strings in, `probabilities`, `label`,
`score` out. (`tensorflow_text` registers the tokenizer's ops.)
"""

import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401

serving = tf.saved_model.load(os.path.join(EXPORT, str(versions[-1]))).signatures["serving_default"]
outputs = serving(text=tf.constant(texts))
print({key: value.numpy().tolist()[:2] for key, value in outputs.items() if key != "probabilities"})

"""
## 3. TF Serving over REST

Start the server on the export folder (every numbered version is a model
version) and post raw text; images go as `{"b64": ...}` of the file bytes.
"""

absolute = os.path.abspath(EXPORT)
print(f"""
docker run -p 8501:8501 -v {absolute}:/models/bbc_news -e MODEL_NAME=bbc_news tensorflow/serving
curl -d '{json.dumps({"instances": texts[:1]})}' http://localhost:8501/v1/models/bbc_news:predict
""")
print(f"test accuracy (from the model card): "
      f"{json.load(open(os.path.join(EXPORT, 'model_card.json')))['metrics']['accuracy']:.4f}")

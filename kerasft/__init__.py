"""kerasft: transfer learning for Keras 3 — pretrained backbones, tuned heads, fine-tuning, exports.

Text, images and sound (spectrograms through image backbones, `kerasft.audio`).

```python
import kerasft as kft
data = kft.samples.bbc_news()
model = kft.build_classifier("minilm_l6", data=data, trainable="top:2")
kft.fine_tune(model, data, epochs=3)
print(kft.evaluate(model, data))
```
The public calls live in modules named after their job (`kft.fine_tune` in
`kerasft.training`, `kft.export` in `kerasft.exporting`, `kft.load` in
`kerasft.predictor`, ...); no call shares its name with a module. Each is
imported on first use, so `import kerasft` (and `kerasft --help`) does not
start TensorFlow.
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# Public call -> the module that defines it. Modules (kft.data, kft.heads, ...) load by their own name.
_CALLS = {
    "Head": "kerasft.heads", "auto": "kerasft.automl", "build_classifier": "kerasft.models",
    "calibrate": "kerasft.calibration", "distill": "kerasft.training", "ensemble": "kerasft.ensembling",
    "evaluate": "kerasft.evaluation", "export": "kerasft.exporting", "fine_tune": "kerasft.training",
    "load": "kerasft.predictor", "tune": "kerasft.tuning",
}

__all__ = sorted([*_CALLS, "audio", "backbones", "convert", "data", "distribute", "features", "heads", "models",
                  "report", "samples", "tfidf", "tokenizing", "tuning"])


def __getattr__(name):
    if name in _CALLS:
        value = getattr(importlib.import_module(_CALLS[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"kerasft.{name}") is not None:
        value = importlib.import_module(f"kerasft.{name}")
    else:
        raise AttributeError(f"module 'kerasft' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

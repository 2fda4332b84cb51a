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

__version__ = "0.1.0"

# Public name -> the module that defines it (modules themselves map to None).
_PUBLIC = {
    "Head": "kerasft.heads", "build_classifier": "kerasft.models", "distill": "kerasft.training",
    "ensemble": "kerasft.ensembling", "evaluate": "kerasft.evaluation", "export": "kerasft.exporting",
    "fine_tune": "kerasft.training", "load": "kerasft.predictor", "tune": "kerasft.tuning",
    **{module: None for module in ("audio", "backbones", "convert", "data", "distribute", "features", "heads",
                                   "models", "report", "samples", "tuning")},
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kerasft' has no attribute {name!r}")
    module = _PUBLIC[name]
    value = importlib.import_module(f"kerasft.{name}") if module is None else getattr(
        importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

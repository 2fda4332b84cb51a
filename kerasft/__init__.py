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
`kerasft.predictor`, ...); no call shares its name with a module.
"""

from kerasft import audio, backbones, convert, data, distribute, features, report, samples, tfidf, tokenizing, tuning
from kerasft.automl import auto
from kerasft.calibration import calibrate
from kerasft.ensembling import ensemble
from kerasft.evaluation import evaluate
from kerasft.exporting import export
from kerasft.heads import Head
from kerasft.models import build_classifier
from kerasft.predictor import load
from kerasft.training import distill, fine_tune
from kerasft.tuning import tune

__version__ = "0.1.0"

__all__ = ["Head", "audio", "auto", "backbones", "build_classifier", "calibrate", "convert", "data", "distill",
           "distribute", "ensemble", "evaluate", "export", "features", "fine_tune", "load", "report", "samples",
           "tfidf", "tokenizing", "tune", "tuning"]

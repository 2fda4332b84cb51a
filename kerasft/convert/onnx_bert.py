"""Reads a BERT encoder's weights from an ONNX file with the `onnx` protobuf parser alone: nothing in it runs."""

import collections
import os

import numpy as np

from kerasft.convert.tensor_names import check_tensor_names

# sentence-transformers' torch export names each BertModel weight `model.0.auto_model.<name>`.
SENTENCE_TRANSFORMERS_PREFIX = "model.0.auto_model."


def bert_weight_shapes(config):
    """The shape of every weight of a Hugging Face `BertModel` without its pooler, in torch's layout.

    Args:
        config: dict. A Hugging Face BERT config (`vocab_size`, `hidden_size`,
            `num_hidden_layers`, `intermediate_size`, `max_position_embeddings`,
            `type_vocab_size`).

    Returns:
        A dict from each weight's Hugging Face name (`embeddings.word_embeddings.weight`,
        `encoder.layer.0.attention.self.query.weight` ...) to its shape, in the model's order.
    """
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    # Each Linear as (name, output size, input size); each LayerNorm after the Linear before it.
    linears = [
        ("attention.self.query", hidden, hidden),
        ("attention.self.key", hidden, hidden),
        ("attention.self.value", hidden, hidden),
        ("attention.output.dense", hidden, hidden),
        ("attention.output.LayerNorm", hidden, None),
        ("intermediate.dense", intermediate, hidden),
        ("output.dense", hidden, intermediate),
        ("output.LayerNorm", hidden, None),
    ]
    for index in range(config["num_hidden_layers"]):
        for module, outputs, inputs in linears:
            name = f"encoder.layer.{index}.{module}"
            shapes[f"{name}.weight"] = (outputs,) if inputs is None else (outputs, inputs)
            shapes[f"{name}.bias"] = (outputs,)
    return shapes


def _onnx_bert_names(graph, prefix):
    """Maps each initializer of an exported BERT to its Hugging Face name, or to a description when it has none.

    The exporter names embeddings, LayerNorms and biases `<prefix><name>`; a
    Linear's weight is unnamed, but it feeds a MatMul whose output only an Add
    with the Linear's named bias takes.
    """
    initializers = {tensor.name for tensor in graph.initializer}
    consumers = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    names = {}
    for tensor in graph.initializer:
        if tensor.name.startswith(prefix):
            names[tensor.name] = tensor.name[len(prefix) :]
            continue
        names[tensor.name] = (
            f"{tensor.name} (neither named `{prefix}...` nor a MatMul weight whose output is added "
            "to a named bias)"
        )
        (matmul, *others) = consumers[tensor.name] or [None]
        if others or matmul is None or matmul.op_type != "MatMul" or list(matmul.input[1:]) != [tensor.name]:
            continue
        (add, *others) = consumers[matmul.output[0]] or [None]
        if others or add is None or add.op_type != "Add":
            continue
        biases = [name for name in add.input if name in initializers and name.startswith(prefix)]
        if len(biases) == 1 and biases[0].endswith(".bias"):
            names[tensor.name] = biases[0][len(prefix) : -len("bias")] + "weight"
    return names


def read_onnx_bert(path, config, prefix=SENTENCE_TRANSFORMERS_PREFIX):
    """Reads a BERT encoder's weights from an ONNX file, without running anything in it.

    Only the `onnx` package's protobuf parser reads the file. Named
    initializers `<prefix><Hugging Face name>` give the embeddings, LayerNorms
    and biases; each Linear weight is an unnamed initializer feeding a MatMul
    whose output is added to the Linear's named bias, which names it, and its
    ONNX `[in, out]` layout is transposed to torch's `[out, in]`. The file must
    hold exactly the weights of `config`'s BERT (pooler excluded), float32 and
    of the right shapes; anything else is refused with an error naming the
    first missing or unexpected tensor. Weights stored outside the file (ONNX
    external data) are refused, so no other file is ever opened.

    Args:
        path: str or path-like. An ONNX export of a Hugging Face `BertModel`, or
            of a sentence-transformers model around one.
        config: dict. The BERT's Hugging Face config (see `bert_weight_shapes`).
        prefix: str. What the exporter put before each Hugging Face name.

    Returns:
        A dict from Hugging Face `BertModel` names (`bert_weight_shapes` order)
        to float32 numpy arrays.

    Example:
    ```python
    weights = read_onnx_bert("paraphrase-MiniLM-L3-v2.onnx", MINILM_L3_CONFIG)
    weights["encoder.layer.2.output.dense.weight"].shape  # (384, 1536)
    ```
    """
    import onnx
    import onnx.numpy_helper
    from google.protobuf.message import DecodeError

    path = os.fspath(path)
    try:
        model = onnx.load(path, load_external_data=False)
    except DecodeError as err:
        raise ValueError(
            f"Cannot read {path}: expected an ONNX model (a serialized onnx.ModelProto). "
            f"Received bytes that do not parse as one: {err}"
        ) from err
    graph = model.graph
    names = _onnx_bert_names(graph, prefix)
    shapes = bert_weight_shapes(config)
    what = (
        f"a {config['num_hidden_layers']}-layer BERT of hidden size {config['hidden_size']} "
        f"(pooler excluded, named `{prefix}<Hugging Face name>`) in {path}"
    )
    check_tensor_names([names[tensor.name] for tensor in graph.initializer], shapes, what)
    weights = {}
    for tensor in graph.initializer:
        name = names[tensor.name]
        transposed = not tensor.name.startswith(prefix)
        expected_dims = shapes[name][::-1] if transposed else shapes[name]
        if tensor.data_type != onnx.TensorProto.FLOAT or tuple(tensor.dims) != expected_dims:
            raise ValueError(
                f"Cannot read {path}: expected tensor {tensor.name!r} ({name}) to be FLOAT of shape "
                f"{list(expected_dims)}. Received: {onnx.TensorProto.DataType.Name(tensor.data_type)} "
                f"of shape {list(tensor.dims)}."
            )
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(
                f"Refusing to read {path}: tensor {tensor.name!r} ({name}) is stored in an external "
                "file; expected every weight inside the ONNX file. No other file was opened."
            )
        try:
            array = onnx.numpy_helper.to_array(tensor)
        except ValueError as err:
            raise ValueError(
                f"Cannot read {path}: tensor {tensor.name!r} ({name}) holds data that does not "
                f"fill its shape {list(tensor.dims)}: {err}"
            ) from err
        weights[name] = np.ascontiguousarray(array.T) if transposed else array
    return {name: weights[name] for name in shapes}

"""Writes dense MLPs as ONNX graphs (Gemm/Relu/Sigmoid) and runs ONNX Runtime.

Shared by the training script and the test-model script so that every model
lineguard ships or tests against is built and evaluated the same way.
"""

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8


def dense_graph(name, input_name, input_shape, layers, heads, extra_nodes=()):
    """Build a model: `layers` is a list of (W, b) with ReLU after each,
    `heads` maps output name -> (W, b, activation or None).

    `input_shape` may start with a string (a symbolic batch) or an int (fixed
    batch). A rank-3 input ([batch, window, features]) is flattened first,
    which is what a `layout = "sequence"` model exported from PyTorch does.
    """
    nodes, inits = [], []
    x = input_name
    batch = input_shape[0]
    if len(input_shape) == 3:
        inits.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", [x, "flat_shape"], ["flat"]))
        x = "flat"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [f"z{i}"]))
        nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
        x = f"h{i}"
    outputs = []
    for out, (w, b, act) in heads.items():
        inits += [numpy_helper.from_array(w.astype(np.float32), f"W_{out}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b_{out}")]
        pre = f"{out}_pre" if act else out
        nodes.append(helper.make_node("Gemm", [x, f"W_{out}", f"b_{out}"], [pre]))
        if act:
            nodes.append(helper.make_node(act, [pre], [out]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, w.shape[1]]))
    nodes += list(extra_nodes)
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="lineguard/models")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def adam_step(params, grads, m, v, step, lr):
    """One Adam update (beta 0.9 / 0.999), in place; `step` counts from 1."""
    for i, g in enumerate(grads):
        m[i] = 0.9 * m[i] + 0.1 * g
        v[i] = 0.999 * v[i] + 0.001 * g * g
        mh = m[i] / (1 - 0.9 ** step)
        vh = v[i] / (1 - 0.999 ** step)
        params[i] -= lr * mh / (np.sqrt(vh) + 1e-8)


def card_header(name, version, description, script, features, window, mean, std):
    """A flat-layout card's text up to its scores: identity, input, normalization."""
    return f"""\
# Model card for {name}.onnx (written by models/{script}).
name = "{name}"
version = "{version}"
description = "{description}"
features = {json.dumps(features)}
window = {window}
layout = "flat"

[normalize]
mean = {json.dumps(mean)}
std = {json.dumps(std)}
"""


def run_ort(path, inputs):
    """Run ONNX Runtime single-threaded; returns {output name: array}."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = sess.run(None, {name: inputs})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def normalize(raw, mean, std):
    """The card's z-score, in float64, then rounded to float32 (as lineguard does)."""
    x = np.asarray(raw, dtype=np.float64)
    if mean is not None:
        x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    return x.astype(np.float32)


def golden_stream(model_path, card, devices, ts0=1732400000000, step_ms=100):
    """Score every full window (hop 1) of each device's sample stream with ORT.

    `devices` maps device key -> raw samples [n, features]. Returns the JSON
    fixture: the telemetry to publish and ORT's outputs for every window.
    """
    features, window = card["features"], card["window"]
    mean = card.get("normalize", {}).get("mean")
    std = card.get("normalize", {}).get("std")
    seq = card.get("layout", "flat") == "sequence"
    fixture = {"features": features, "window": window, "devices": {}, "windows": []}
    inputs, keys = [], []
    for device, raw in devices.items():
        raw = np.round(np.asarray(raw, dtype=np.float64), 4)
        ts = [ts0 + i * step_ms for i in range(len(raw))]
        fixture["devices"][device] = [
            {"ts": t, "values": {f: float(v) for f, v in zip(features, row)}}
            for t, row in zip(ts, raw)]
        for end in range(window, len(raw) + 1):
            x = normalize(raw[end - window:end], mean, std)
            inputs.append(x if seq else x.reshape(-1))
            keys.append((device, end - 1, ts[end - 1]))
    batch = np.stack(inputs)
    fixed = card.get("_fixed_batch")
    if fixed:  # a fixed-batch model: run one window at a time
        outs = [run_ort(model_path, batch[i:i + 1]) for i in range(len(batch))]
        results = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    else:
        results = run_ort(model_path, batch)
    for i, (device, index, ts) in enumerate(keys):
        fixture["windows"].append({
            "device": device, "index": index, "ts": ts,
            "input": [float(v) for v in batch[i].reshape(-1)],
            "outputs": {k: [float(v) for v in np.asarray(r[i]).reshape(-1)]
                        for k, r in results.items()},
        })
    return fixture

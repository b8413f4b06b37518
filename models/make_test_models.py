"""Models the Rust tests use to prove lineguard serves any MLP, not just its own.

    python3 models/make_test_models.py

Writes to tests/fixtures/models/: ONNX files, their cards, ONNX Runtime golden
streams (`*.golden.json`), and deliberately broken models for check-model.
Weights are random (fixed seeds): these test plumbing and numerics, not skill.
"""

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnx_export import dense_graph, golden_stream

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"


def layer(rng, n_in, n_out):
    return rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), rng.normal(size=n_out) * 0.1


def write(name, model, card_text, card, devices, rng_stream):
    path = OUT / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    (OUT / f"{name}.toml").write_text(card_text)
    fixture = golden_stream(path, card, devices, ts0=1732500000000, step_ms=250)
    fixture["model"] = f"tests/fixtures/models/{name}.onnx"
    (OUT / f"{name}.golden.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"{name}: {len(fixture['windows'])} golden windows")


def seq_risk(rng):
    """Sequence layout [N, 5, 3], z-score, softmax head `risk` [N, 2] and a
    second head `aux` [N, 3]; the card scores risk[1] and aux[2]."""
    features = ["temp", "pressure", "flow"]
    mean, std = [80.0, 2.5, 12.0], [5.0, 0.25, 3.0]
    model = dense_graph("seq-risk", "input", ["N", 5, 3],
                        [layer(rng, 15, 24), layer(rng, 24, 12)],
                        {"risk": (*layer(rng, 12, 2), "Softmax"), "aux": (*layer(rng, 12, 3), None)})
    card_text = f"""name = "seq-risk"
version = "2024.11-b"
features = {json.dumps(features)}
window = 5
layout = "sequence"

[normalize]
mean = {json.dumps(mean)}
std = {json.dumps(std)}

[scores.risk]
output = "risk"
index = 1
warn = 0.5
alarm = 0.8

[scores.flow_dev]
output = "aux"
index = 2
"""
    card = {"features": features, "window": 5, "layout": "sequence",
            "normalize": {"mean": mean, "std": std}}
    devices = {f"site{s}/pump{p}": np.array(mean) + rng.normal(size=(12, 3)) * np.array(std) * 1.5
               for s, p in [(1, 1), (1, 2), (2, 7)]}
    write("seq-risk", model, card_text, card, devices, rng)


def fixed_batch(rng):
    """Flat [1, 8] with a fixed batch of 1 and no normalization: output `y` [1, 1]."""
    features = ["a", "b"]
    model = dense_graph("fixed1", "x", [1, 8], [layer(rng, 8, 6)], {"y": (*layer(rng, 6, 1), "Tanh")})
    card_text = f"""name = "fixed1"
version = "1"
features = {json.dumps(features)}
window = 4

[scores.y]
warn = 0.2
alarm = 0.6
"""
    card = {"features": features, "window": 4, "layout": "flat", "_fixed_batch": 1}
    devices = {f"cell/{i}": rng.normal(size=(9, 2)) for i in range(2)}
    write("fixed1", model, card_text, card, devices, rng)


def sklearn_mlp(rng):
    """A scikit-learn MLPRegressor exported with skl2onnx, as a data scientist would."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    features = ["x", "y"]
    x = rng.normal(size=(400, 6)).astype(np.float32)
    target = np.tanh(x @ rng.normal(size=6))
    reg = MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(x, target)
    model = to_onnx(reg, x[:1], target_opset=13)
    card_text = f"""name = "sk-mlp"
version = "0.1"
features = {json.dumps(features)}
window = 3

[scores.estimate]
output = "variable"
"""
    card = {"features": features, "window": 3, "layout": "flat"}
    devices = {"bench/1": rng.normal(size=(8, 2))}
    write("sk-mlp", model, card_text, card, devices, rng)


def broken(rng):
    """Models check-model must refuse, each for one clear reason."""
    w, b = layer(rng, 4, 1)
    # Two inputs.
    two = dense_graph("two-inputs", "x", ["N", 4], [], {"y": (w, b, None)})
    two.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 4]))
    (OUT / "two-inputs.onnx").write_bytes(two.SerializeToString())
    # Integer input.
    ints = helper.make_model(helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("Identity", ["xf"], ["y"])], "int-input",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])]),
        opset_imports=[helper.make_opsetid("", 13)])
    ints.ir_version = 8
    onnx.checker.check_model(ints)
    (OUT / "int-input.onnx").write_bytes(ints.SerializeToString())
    # A rank-3 output ([N, 2, 2]) where a score needs [batch, k].
    rank3 = dense_graph("rank3-output", "x", ["N", 4], [], {"y": (rng.normal(size=(4, 4)), np.zeros(4), None)},
                        extra_nodes=[])
    shape = onnx.numpy_helper.from_array(np.array([0, 2, 2], dtype=np.int64), "to3")
    rank3.graph.initializer.append(shape)
    rank3.graph.node.append(helper.make_node("Reshape", ["y", "to3"], ["y3"]))
    rank3.graph.output.append(helper.make_tensor_value_info("y3", TensorProto.FLOAT, ["N", 2, 2]))
    (OUT / "rank3-output.onnx").write_bytes(rank3.SerializeToString())
    print("broken models written")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    seq_risk(rng)
    fixed_batch(rng)
    sklearn_mlp(rng)
    broken(rng)


if __name__ == "__main__":
    main()

"""Train the example autoencoder `line-ae.onnx` and write its card and golden fixture.

    python3 models/train_line_autoencoder.py

An autoencoder over the shipped model's 8 process features and 16-sample
window, trained on healthy windows only: it learns to reproduce normal
operation, so a window it reconstructs badly does not look like training
data. lineguard scores it with `kind = "reconstruction"`: the mean of
(normalized input - output)^2 over the window, each feature's own mean
squared error as its explanation. The golden fixture holds ONNX Runtime's
outputs for a healthy machine and three developing faults, and the score and
per-feature errors computed here from them (numpy, float64).
"""

import json
import pathlib

import numpy as np

import linesim
from onnx_export import adam_step, card_header, dense_graph, golden_stream, normalize
from train_line_mlp import fixture_devices

HERE = pathlib.Path(__file__).resolve().parent
WINDOW = 16
F = len(linesim.FEATURES)
SEED = 20261202
SIZES = [WINDOW * F, 48, 12, 48, WINDOW * F]


def healthy_windows(rng, n):
    return np.stack([linesim.samples(rng, WINDOW, rng.uniform(-1.0, 1.0), None, 0.0) for _ in range(n)])


def forward(params, x):
    acts, zs = [x], []
    for i in range(0, len(params), 2):
        z = acts[-1] @ params[i] + params[i + 1]
        zs.append(z)
        acts.append(z if i == len(params) - 2 else np.maximum(z, 0))
    return acts, zs


def train(x, rng, epochs=40, batch=256, lr=2e-3):
    params = []
    for a, b in zip(SIZES, SIZES[1:]):
        params += [rng.normal(size=(a, b)) * np.sqrt(2.0 / a), np.zeros(b)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            xb = x[order[start:start + batch]]
            acts, zs = forward(params, xb)
            err = acts[-1] - xb
            total += np.sum(err ** 2) / xb.shape[1]
            d = 2.0 * err / err.size
            grads = [None] * len(params)
            for layer in range(len(zs) - 1, -1, -1):
                grads[2 * layer] = acts[layer].T @ d
                grads[2 * layer + 1] = d.sum(0)
                if layer > 0:
                    d = d @ params[2 * layer].T * (zs[layer - 1] > 0)
            step += 1
            adam_step(params, grads, m, v, step, lr)
        print(f"epoch {epoch + 1:2d}  reconstruction mse {total / len(x):.4f}")
    return params


def errors(x, y):
    """Per window: the score (mean squared error) and each feature's mean squared error."""
    e = (np.asarray(x, np.float64).reshape(len(x), WINDOW, F) - np.asarray(y, np.float64).reshape(len(y), WINDOW, F)) ** 2
    return e.mean(axis=(1, 2)), e.mean(axis=1)


def main():
    rng = np.random.default_rng(SEED)
    raw = healthy_windows(rng, 20000)
    flat = raw.reshape(-1, F)
    mean = [float(f"{v:.5g}") for v in flat.mean(0)]
    std = [float(f"{v:.4g}") for v in flat.std(0)]
    x = normalize(raw, mean, std).astype(np.float64).reshape(len(raw), -1)
    split = 18000
    params = train(x[:split], rng)
    held, _ = errors(x[split:], forward(params, x[split:])[0][-1])
    warn = float(f"{np.quantile(held, 0.995) * 1.5:.2g}")
    alarm = float(f"{warn * 3:.2g}")
    print(f"held-out healthy mse: median {np.median(held):.4f}, p99.5 {np.quantile(held, 0.995):.4f}; "
          f"warn {warn}, alarm {alarm}")

    layers = [(params[i], params[i + 1]) for i in range(0, len(params) - 2, 2)]
    model = dense_graph("line-ae", "window", ["batch", WINDOW * F], layers,
                        {"reconstruction": (params[-2], params[-1], None)})
    onnx_path = HERE / "line-ae.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    header = card_header("line-ae", "1",
                         "Line process autoencoder: 16 x 8 process features, trained on healthy operation only",
                         "train_line_autoencoder.py", linesim.FEATURES, WINDOW, mean, std)
    (HERE / "line-ae.toml").write_text(header + f"""
[scores.novelty]
kind = "reconstruction"   # mean of (normalized input - output)^2 over the window
output = "reconstruction"
warn = {warn}
alarm = {alarm}
""")

    card = {"features": linesim.FEATURES, "window": WINDOW, "layout": "flat",
            "normalize": {"mean": mean, "std": std}}
    fixture = golden_stream(onnx_path, card, fixture_devices(np.random.default_rng(SEED + 1)))
    fixture["model"] = "models/line-ae.onnx"
    for w in fixture["windows"]:
        score, per_feature = errors([w["input"]], [w["outputs"]["reconstruction"]])
        w["reconstruction"] = {"score": float(score[0]), "features": [float(v) for v in per_feature[0]]}
    (HERE / "fixtures" / "line-ae.golden.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"line-ae: {len(fixture['windows'])} golden windows")


if __name__ == "__main__":
    main()

"""Train and export the shipped model: models/line-mlp.onnx + models/line-mlp.toml.

    pip install -r models/requirements.txt
    python3 models/train_line_mlp.py

An MLP over a window of 16 samples x 8 process features (flat, time-major):
Dense 64 ReLU -> Dense 32 ReLU -> heads `anomaly` (sigmoid, 0..1, trained
on the fault's graded severity, so it rises through warn before alarm) and
`quality` (linear). Trained with numpy (Adam, fixed seeds) on the simulated
line of linesim.py, so the run is reproducible bit for bit on one machine.
Also writes models/fixtures/line-mlp.golden.json: telemetry streams and
ONNX Runtime's outputs for every window, which the Rust tests compare against.
"""

import json
import pathlib

import numpy as np

import linesim
from onnx_export import adam_step, card_header, dense_graph, golden_stream, normalize

HERE = pathlib.Path(__file__).resolve().parent
WINDOW = 16
F = len(linesim.FEATURES)
SEED = 20241123


def make_dataset(rng, n):
    xs, ys = [], []
    for _ in range(n):
        x, y = linesim.random_window(rng, WINDOW)
        xs.append(x)
        ys.append(y)
    return np.stack(xs), np.array(ys)


def train(x, y, rng, epochs=30, batch=256, lr=2e-3):
    sizes = [x.shape[1], 64, 32]
    params = []
    for i in range(2):
        params.append(rng.normal(size=(sizes[i], sizes[i + 1])) * np.sqrt(2.0 / sizes[i]))
        params.append(np.zeros(sizes[i + 1]))
    params.append(rng.normal(size=(32, 2)) * np.sqrt(1.0 / 32))
    params.append(np.zeros(2))
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            w1, b1, w2, b2, w3, b3 = params
            z1 = xb @ w1 + b1
            h1 = np.maximum(z1, 0)
            z2 = h1 @ w2 + b2
            h2 = np.maximum(z2, 0)
            out = h2 @ w3 + b3
            p = 1.0 / (1.0 + np.exp(-out[:, 0]))
            q = out[:, 1]
            n = len(idx)
            # Loss: binary cross-entropy on anomaly (soft, graded targets) + 10 x
            # squared error on quality.
            eps = 1e-7
            loss = -np.mean(yb[:, 0] * np.log(p + eps) + (1 - yb[:, 0]) * np.log(1 - p + eps))
            loss += 10.0 * np.mean((q - yb[:, 1]) ** 2)
            total += loss * n
            d_out = np.stack([(p - yb[:, 0]) / n, 20.0 * (q - yb[:, 1]) / n], axis=1)
            g_w3, g_b3 = h2.T @ d_out, d_out.sum(0)
            d_h2 = d_out @ w3.T * (z2 > 0)
            g_w2, g_b2 = h1.T @ d_h2, d_h2.sum(0)
            d_h1 = d_h2 @ w2.T * (z1 > 0)
            g_w1, g_b1 = xb.T @ d_h1, d_h1.sum(0)
            grads = [g_w1, g_b1, g_w2, g_b2, g_w3, g_b3]
            step += 1
            adam_step(params, grads, m, v, step, lr)
        print(f"epoch {epoch + 1:2d}  loss {total / len(x):.4f}")
    return params


def evaluate(params, x, y):
    w1, b1, w2, b2, w3, b3 = params
    out = np.maximum(np.maximum(x @ w1 + b1, 0) @ w2 + b2, 0) @ w3 + b3
    p = 1.0 / (1.0 + np.exp(-out[:, 0]))
    acc = np.mean((p >= 0.5) == (y[:, 0] >= 0.5))
    anomaly_mae = np.mean(np.abs(p - y[:, 0]))
    mae = np.mean(np.abs(out[:, 1] - y[:, 1]))
    print(f"held-out: anomaly accuracy {acc:.3f}, anomaly MAE {anomaly_mae:.4f}, quality MAE {mae:.4f}")


def fixture_devices(rng):
    """Four machines for the golden stream: healthy, and three faults ramping up."""
    n = 40
    ramp = np.linspace(0.0, 1.0, n)
    devices = {}
    devices["line1/press1"] = linesim.samples(rng, n, 0.2, None, 0.0)
    for device, fault in [("line1/press2", "bearing_wear"), ("line1/press3", "coolant_loss"),
                          ("line2/lathe1", "tool_wear")]:
        devices[device] = np.concatenate(
            [linesim.samples(rng, 1, -0.3, fault, s) for s in ramp])
    return devices


def main():
    rng = np.random.default_rng(SEED)
    raw, y = make_dataset(rng, 30000)
    # Normalization constants, rounded so that the card is readable; the model
    # is trained on exactly what lineguard will compute from the card.
    flat = raw.reshape(-1, F)
    mean = [float(f"{v:.5g}") for v in flat.mean(0)]
    std = [float(f"{v:.4g}") for v in flat.std(0)]
    x = normalize(raw, mean, std).astype(np.float64).reshape(len(raw), -1)
    split = 27000
    params = train(x[:split], y[:split], rng)
    evaluate(params, x[split:], y[split:])

    w1, b1, w2, b2, w3, b3 = params
    model = dense_graph(
        "line-mlp", "window", ["batch", WINDOW * F],
        [(w1, b1), (w2, b2)],
        {"anomaly": (w3[:, :1], b3[:1], "Sigmoid"), "quality": (w3[:, 1:], b3[1:], None)})
    onnx_path = HERE / "line-mlp.onnx"
    onnx_path.write_bytes(model.SerializeToString())

    card = {"name": "line-mlp", "version": "4", "features": linesim.FEATURES, "window": WINDOW,
            "layout": "flat", "normalize": {"mean": mean, "std": std}}
    header = card_header("line-mlp", "4",
                         "Line process MLP: 16 x 8 process features -> anomaly probability and predicted quality",
                         "train_line_mlp.py", linesim.FEATURES, WINDOW, mean, std)
    (HERE / "line-mlp.toml").write_text(header + f"""
[scores.anomaly]
output = "anomaly"
index = 0
warn = 0.6
alarm = 0.9
# The simulated line's faults develop over ~20 s: the trend of the last 16 s
# says when a machine will reach warn and alarm (a real line: its faults' own
# time scale, e.g. 600).
forecast_secs = 16

[scores.quality]
output = "quality"
index = 0
direction = "below"   # low quality is bad
warn = 0.8
alarm = 0.65
forecast_secs = 16
""")
    fixture = golden_stream(onnx_path, card, fixture_devices(rng))
    fixture["model"] = "models/line-mlp.onnx"
    out = HERE / "fixtures" / "line-mlp.golden.json"
    out.write_text(json.dumps(fixture, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {onnx_path.name}, line-mlp.toml and {len(fixture['windows'])} golden windows")


if __name__ == "__main__":
    main()

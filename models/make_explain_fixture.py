"""Occlusion explanations of the shipped model, computed with ONNX Runtime.

    python3 models/make_explain_fixture.py

For every window of models/fixtures/line-mlp.golden.json (its inputs are in
the model's units already), each feature in turn is replaced at every time
step by the baseline (0: the normalization's mean) and the window scored
again; delta = score(window) - score(occluded). Writes
models/fixtures/line-mlp.explain.golden.json with every delta, per window and
score, for the test that runs the daemon with `explain = "always"`
(tests/explain.rs). Nothing here uses lineguard's code.
"""

import json
import pathlib

import numpy as np
import onnxruntime as ort

HERE = pathlib.Path(__file__).resolve().parent
SCORES = {"anomaly": ("anomaly", 0), "quality": ("quality", 0)}


def main():
    golden = json.loads((HERE / "fixtures" / "line-mlp.golden.json").read_text())
    features = golden["features"]
    f = len(features)
    window = golden["window"]
    session = ort.InferenceSession(str(HERE / "line-mlp.onnx"), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    out_names = [o.name for o in session.get_outputs()]

    def run(batch):
        outs = session.run(None, {input_name: np.asarray(batch, dtype=np.float32)})
        by_name = dict(zip(out_names, outs))
        return {s: by_name[o][:, i] for s, (o, i) in SCORES.items()}

    windows = []
    for w in golden["windows"]:
        x = np.asarray(w["input"], dtype=np.float32)
        occluded = np.repeat(x[None, :], f, axis=0)
        for feature in range(f):
            occluded[feature, feature::f] = 0.0
        base = run(x[None, :])
        occ = run(occluded)
        deltas = {s: [float(base[s][0] - occ[s][feature]) for feature in range(f)] for s in SCORES}
        windows.append({"device": w["device"], "ts": w["ts"], "deltas": deltas})
    out = {"features": features, "window": window, "baseline": "normalization mean (0)", "windows": windows}
    path = HERE / "fixtures" / "line-mlp.explain.golden.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {path.name}: {len(windows)} windows x {f} features")


if __name__ == "__main__":
    main()

"""Golden fixture for the sampling clock: a tag-per-topic stream (one value
per message, each tag at its own jittered times, some reporting by
exception, one falling silent) and ONNX Runtime's scores for the samples
that the grid rule of the README gives, computed here from the raw stream
without lineguard.

    python3 models/make_tag_fixture.py

Writes models/fixtures/line-mlp.tags.golden.json.
"""

import json
import pathlib
import tomllib

import numpy as np

import linesim
from onnx_export import normalize, run_ort

HERE = pathlib.Path(__file__).parent
PERIOD, STALE = 100, 300  # the card's sample_period_ms and (default) stale_after_ms
T0 = 1732400000000
N = 48  # grid points per machine
SILENT = ("line1/press2", "motor_temp", range(20, 25))  # 500 ms without a report


def tag_stream(rng, features):
    """[(ts, device, feature, value)] in publishing order (by ts)."""
    machines = {"line1/press1": (0.2, None, 0.0), "line1/press2": (-0.3, "bearing_wear", 0.6),
                "line2/lathe1": (0.0, "tool_wear", 0.5)}
    out = []
    for device, (load, fault, severity) in machines.items():
        raw = np.round(linesim.samples(rng, N, load, fault, severity), 4)
        for f, name in enumerate(features):
            skipped = False
            for k in range(N):
                if device == SILENT[0] and name == SILENT[1] and k in SILENT[2]:
                    continue
                # Report by exception: now and then no report for a period
                # (never twice running, so only the silent tag goes stale).
                if k > 0 and not skipped and rng.random() < 0.2:
                    skipped = True
                    continue
                skipped = False
                ts = T0 + k * PERIOD - int(rng.integers(0, 60))
                out.append((ts, device, name, float(raw[k, f])))
    out.sort(key=lambda m: m[0])
    return out


def grid_samples(stream, features):
    """Per device, {t_k: values or None (stale)} for every final grid point."""
    result = {}
    for device in sorted({m[1] for m in stream}):
        values = [m for m in stream if m[1] == device]
        first, newest = values[0][0], max(m[0] for m in values)
        k0 = -(-first // PERIOD)  # the first grid point at or after the first value
        points = {}
        t = k0 * PERIOD
        while t < newest:  # final: some value came after it
            row = []
            for name in features:
                seen = [(ts, v) for ts, d, f, v in values if f == name and ts <= t]
                if not seen or max(seen)[0] <= t - STALE:
                    row = None
                    break
                row.append(max(seen)[1])
            points[t] = row
            t += PERIOD
        result[device] = points
    return result


def main():
    rng = np.random.default_rng(20261202)
    card = tomllib.loads((HERE / "line-mlp.toml").read_text())
    features, window = card["features"], card["window"]
    mean, std = card["normalize"]["mean"], card["normalize"]["std"]
    stream = tag_stream(rng, features)
    inputs, keys, resets = [], [], {}
    for device, points in grid_samples(stream, features).items():
        run, resets[device] = [], 0
        for t in sorted(points):
            row = points[t]
            if row is None:
                resets[device] += 1 if run else 0
                run = []
                continue
            run.append(row)
            if len(run) >= window:
                inputs.append(normalize(np.array(run[-window:]), mean, std).reshape(-1))
                keys.append((device, t))
    assert resets == {"line1/press1": 0, "line1/press2": 1, "line2/lathe1": 0}, resets
    outputs = run_ort(HERE / "line-mlp.onnx", np.stack(inputs))
    fixture = {
        "sample_period_ms": PERIOD,
        "stale_after_ms": STALE,
        "resets": resets,
        "messages": [{"ts": ts, "device": d, "feature": f, "value": v} for ts, d, f, v in stream],
        "windows": [{"device": d, "ts": t, "outputs": {k: [float(v) for v in np.asarray(o[i]).reshape(-1)]
                                                    for k, o in outputs.items()}}
                    for i, (d, t) in enumerate(keys)],
    }
    out = HERE / "fixtures" / "line-mlp.tags.golden.json"
    out.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    print(f"wrote {out.name}: {len(stream)} tag messages, {len(keys)} windows, resets {resets}")


if __name__ == "__main__":
    main()

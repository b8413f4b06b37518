"""ONNX Runtime's time per window on the same inputs as lineguard's benchmark.

    python3 bench/ort_bench.py MODEL.onnx INPUTS.f32 WINDOW_LEN

INPUTS.f32 holds N windows of WINDOW_LEN little-endian f32 values, written by
`cargo bench --bench inference`. One intra-op thread (a fair peer to tract on
one core). Prints one JSON object: {"batch": us_per_window, ...} (medians).
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    model, inputs, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    x = np.fromfile(inputs, dtype="<f4").reshape(-1, length)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = {}
    for batch in (1, 16, 32, 64, 128, 256):
        chunks = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]
        for c in chunks[:20]:
            sess.run(None, {name: c})  # warm up
        samples = []
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline:
            for c in chunks:
                t = time.perf_counter()
                sess.run(None, {name: c})
                samples.append((time.perf_counter() - t) / batch)
        samples.sort()
        out[str(batch)] = samples[len(samples) // 2] * 1e6
    print(json.dumps(out))


if __name__ == "__main__":
    main()

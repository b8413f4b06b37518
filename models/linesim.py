"""Simulated production-line telemetry with injected faults.

This is the fault model the shipped MLP is trained on. `src/tools/sim.rs` is its Rust
twin (used by `lineguard demo`); the constants below and there must stay equal.

Each sample has 8 process features. A machine runs at a load level L in
[-1, 1] (setpoint changes shift speed, current, torque and temperature
together) and may carry one fault of severity s in [0, 1]:

- bearing wear   -> vibration rises (and gets noisier), temperature and current creep up
- coolant loss   -> motor temperature rises strongly
- tool wear      -> torque and current rise, spindle speed sags, quality falls
- hydraulic leak -> hydraulic pressure and feed rate fall

Labels: anomaly is graded with the fault's severity: 0 up to ANOMALY_ONSET,
rising linearly to 1 at ANOMALY_FULL, so that a developing fault passes
through the card's warn level (0.6, severity 0.51) before its alarm level
(0.9, severity 0.69); quality falls with the severity of each fault (tool
wear most).
"""

import numpy as np

FEATURES = [
    "spindle_speed",
    "feed_rate",
    "motor_temp",
    "vibration_rms",
    "motor_current",
    "hydraulic_pressure",
    "torque",
    "ambient_humidity",
]
NOMINAL = np.array([1200.0, 350.0, 60.0, 2.0, 12.0, 150.0, 45.0, 45.0])
NOISE = np.array([8.0, 3.0, 0.5, 0.12, 0.25, 1.5, 1.0, 1.5])
# Effect of load level L (per unit of L).
LOAD = np.array([60.0, 10.0, 1.5, 0.1, 0.8, 0.0, 3.0, 0.0])

FAULTS = ["bearing_wear", "coolant_loss", "tool_wear", "hydraulic_leak"]
# Effect of each fault at severity 1 (per unit of s), in FEATURES order.
FAULT_EFFECT = {
    "bearing_wear": np.array([0.0, 0.0, 4.0, 3.0, 0.6, 0.0, 0.0, 0.0]),
    "coolant_loss": np.array([0.0, 0.0, 20.0, 0.0, 0.8, 0.0, 2.0, 0.0]),
    "tool_wear": np.array([-30.0, 0.0, 0.0, 0.6, 2.0, 0.0, 9.0, 0.0]),
    "hydraulic_leak": np.array([0.0, -15.0, 0.0, 0.0, 0.0, -35.0, 0.0, 0.0]),
}
# Bearing wear also makes vibration noisier: sd * (1 + 2 s).
BEARING_VIBRATION_NOISE = 2.0
# Quality loss per unit severity.
QUALITY_LOSS = {"bearing_wear": 0.10, "coolant_loss": 0.25, "tool_wear": 0.45, "hydraulic_leak": 0.20}
QUALITY_NOMINAL = 0.97
QUALITY_HUMIDITY = 0.002  # per % relative humidity above nominal
ANOMALY_ONSET = 0.15
ANOMALY_FULL = 0.75


def samples(rng, n, load, fault, severity):
    """n consecutive samples at one load level with one fault (or None)."""
    mean = NOMINAL + LOAD * load
    sd = NOISE.copy()
    if fault is not None:
        mean = mean + FAULT_EFFECT[fault] * severity
        if fault == "bearing_wear":
            sd[3] *= 1.0 + BEARING_VIBRATION_NOISE * severity
    return mean + rng.normal(size=(n, len(FEATURES))) * sd


def labels(fault, severity, humidity):
    """(anomaly, quality) targets for a window."""
    anomaly = 0.0
    if fault is not None:
        anomaly = float(np.clip((severity - ANOMALY_ONSET) / (ANOMALY_FULL - ANOMALY_ONSET), 0.0, 1.0))
    quality = QUALITY_NOMINAL - QUALITY_HUMIDITY * (humidity - NOMINAL[7])
    if fault is not None:
        quality -= QUALITY_LOSS[fault] * severity
    return anomaly, float(np.clip(quality, 0.0, 1.0))


def random_window(rng, window):
    """A training window: random load, 40% healthy, else a random fault and severity."""
    load = rng.uniform(-1.0, 1.0)
    if rng.uniform() < 0.4:
        fault, severity = None, 0.0
    else:
        fault, severity = FAULTS[rng.integers(len(FAULTS))], rng.uniform()
    x = samples(rng, window, load, fault, severity)
    return x, labels(fault, severity, x[:, 7].mean())

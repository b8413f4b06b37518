//! Forecasts and roll-ups through a real broker: machines whose faults ramp
//! and machines that run flat, on the shipped model with a card that asks
//! for forecasts of both scores, and two roll-ups per line. Every published
//! forecast and every roll-up equals the one computed here, independently,
//! from the published scores by the README's definitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;

use crate::support::broker::Broker;
use crate::support::daemon::{config, now_ms, Daemon, PipelineSpec};
use crate::support::line::{line_topic, wait_online, LINE_IN, LINE_OUT};
use crate::support::mqtt::{Message, Publisher, Subscriber};

/// The shipped card's scores, asking for forecasts over 32 s of data time
/// (buckets of 0.5 s).
const FORECAST_SECS: f64 = 32.0;

/// A copy of the shipped model whose card forecasts both scores.
fn forecasting_model(dir: &std::path::Path) -> std::path::PathBuf {
    let card = std::fs::read_to_string(crate::support::repo_path("models/line-mlp.toml")).unwrap();
    let card = card
        .lines()
        .filter(|l| !l.starts_with("forecast"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("alarm = 0.9\n", "alarm = 0.9\nforecast_secs = 32\n")
        .replace("alarm = 0.65", "alarm = 0.65\nforecast_secs = 32\nforecast_horizon_secs = 3600");
    assert_eq!(card.matches("forecast_secs = 32").count(), 2, "{card}");
    let model = dir.join("line-mlp.onnx");
    std::fs::copy(crate::support::repo_path("models/line-mlp.onnx"), &model).unwrap();
    std::fs::write(dir.join("line-mlp.toml"), card + "\n").unwrap();
    model
}

const ROLLUPS: &str = r#"
[[rollups]]
name = "line-health"
pipeline = "press-line"
group = "{line}"
output_topic = "plant/{line}/lineguard/health"
inputs = { anomaly = 1.0, quality = 0.5 }
weights = { "line1/m2" = 3.0, "line1/*" = 2.0 }
method = "weighted"
interval_secs = 5
stale_secs = 10

[[rollups]]
name = "line-worst"
pipeline = "press-line"
group = "{line}"
output_topic = "plant/{line}/lineguard/worst"
inputs = { anomaly = 1.0 }
method = "worst"
interval_secs = 5
stale_secs = 10
"#;

/// Training means and stds of the shipped card (features in card order).
const MEAN: [f64; 8] = [1197.9, 348.91, 61.809, 2.2727, 12.259, 147.39, 45.841, 45.001];
const STD: [f64; 8] = [36.23, 7.238, 4.314, 0.6523, 0.6803, 7.477, 2.757, 1.504];
const FEATURES: [&str; 8] = [
    "spindle_speed",
    "feed_rate",
    "motor_temp",
    "vibration_rms",
    "motor_current",
    "hydraulic_pressure",
    "torque",
    "ambient_humidity",
];

/// Sample `i` of a machine: noise around the training means, and for a
/// faulty machine vibration, current and temperature ramping up from sample 60.
fn sample(seed: u64, i: usize, ramp: f64, ts: i64) -> String {
    let mut x =
        seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407) + 1);
    let mut values = serde_json::Map::new();
    for (f, name) in FEATURES.iter().enumerate() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.6;
        let fault = if [2, 3, 4].contains(&f) { ramp * (i.saturating_sub(60)) as f64 / 60.0 } else { 0.0 };
        values.insert(name.to_string(), Value::from(MEAN[f] + (noise + fault) * STD[f]));
    }
    serde_json::json!({ "ts": ts, "values": values }).to_string()
}

/// f32 as the model gave it, from its JSON digits.
fn f32_of(v: &Value) -> f64 {
    v.as_f64().map(|x| f64::from(x as f32)).expect("a number")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The forecast the README defines over `points`, for thresholds (warn,
/// alarm), `above` the bad side, and the horizon.
fn expected_forecast(points: &[(f64, f64)], warn: f64, alarm: f64, above: bool, horizon: f64) -> Value {
    let n = points.len();
    let mut slopes = Vec::new();
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            slopes.push((points[j].1 - points[i].1) / (points[j].0 - points[i].0));
            s += (points[j].1 - points[i].1).partial_cmp(&0.0).map_or(0, |o| o as i64);
        }
    }
    let m = median(slopes);
    let c = median(points.iter().map(|(x, y)| y - m * x).collect());
    let var = (n * (n - 1) * (2 * n + 5)) as f64 / 18.0;
    let z = if s > 0 {
        (s - 1) as f64 / var.sqrt()
    } else if s < 0 {
        (s + 1) as f64 / var.sqrt()
    } else {
        0.0
    };
    let counts = if above { m > 0.0 && z > 2.326 } else { m < 0.0 && z < -2.326 };
    let t = points[n - 1].0;
    let fit = m * t + c;
    let to = |th: f64| {
        if (above && fit >= th) || (!above && fit <= th) {
            return Value::from(0.0);
        }
        let secs = (th - fit) / m;
        if counts && secs <= horizon {
            Value::from(secs)
        } else {
            Value::Null
        }
    };
    serde_json::json!({ "slope_per_hour": m * 3600.0, "z": z, "to_warn_s": to(warn), "to_alarm_s": to(alarm) })
}

/// Whether two JSON values agree: numbers to 1e-6 relative (1e-9 absolute), the rest exactly.
fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 + 1e-6 * x.abs().max(y.abs())
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}

/// A score's bucket being filled (number, sum, count) and the complete ones (number, mean).
type Buckets = (Option<(i64, f64, u32)>, Vec<(i64, f64)>);

/// The forecasts the README defines, per score message (by device and ts).
fn expected_forecasts(scores: &[&Message]) -> BTreeMap<(String, i64), Value> {
    let b = FORECAST_SECS / 64.0;
    // (name, warn, alarm, above, horizon)
    let specs = [("anomaly", 0.6, 0.9, true, 86_400.0), ("quality", 0.8, 0.65, false, 3600.0)];
    let mut out = BTreeMap::new();
    let mut by_device: BTreeMap<String, Vec<(i64, Value)>> = BTreeMap::new();
    for m in scores {
        let j = m.json();
        by_device
            .entry(j["device"].as_str().unwrap().into())
            .or_default()
            .push((j["ts"].as_i64().unwrap(), j));
    }
    for (device, windows) in by_device {
        let mut per_score: Vec<Buckets> = vec![(None, Vec::new()); 2];
        for (ts, j) in windows {
            let mut made = serde_json::Map::new();
            for (s, (name, warn, alarm, above, horizon)) in specs.iter().enumerate() {
                let v = f32_of(&j["scores"][name]);
                let k = (ts as f64 / (b * 1000.0)).floor() as i64;
                let (current, complete) = &mut per_score[s];
                match current {
                    None => *current = Some((k, v, 1)),
                    Some((ck, sum, n)) if *ck == k => {
                        *sum += v;
                        *n += 1;
                    }
                    Some((ck, sum, n)) => {
                        complete.push((*ck, *sum / f64::from(*n)));
                        *current = Some((k, v, 1));
                        let points: Vec<(f64, f64)> = complete
                            .iter()
                            .filter(|(bk, _)| *bk >= k - 64)
                            .map(|(bk, y)| ((*bk as f64 + 0.5) * b, *y))
                            .collect();
                        if points.len() >= 16 {
                            made.insert(
                                name.to_string(),
                                expected_forecast(&points, *warn, *alarm, *above, *horizon),
                            );
                        }
                    }
                }
            }
            if !made.is_empty() {
                out.insert((device.clone(), ts), Value::Object(made));
            }
        }
    }
    out
}

struct Roll {
    name: &'static str,
    inputs: &'static [(&'static str, f64, f64, f64)], // score, weight, warn, alarm
    worst: bool,
}

fn device_weight(r: &Roll, device: &str) -> f64 {
    if r.name != "line-health" {
        return 1.0;
    }
    match device {
        "line1/m2" => 3.0,
        d if d.starts_with("line1/") && d.matches('/').count() == 1 => 2.0,
        _ => 1.0,
    }
}

/// The roll-ups the README defines, in the order they are due, from the
/// score messages in the order they were published.
fn expected_rollups(scores: &[&Message]) -> Vec<(String, Value)> {
    let rolls = [
        Roll {
            name: "line-health",
            inputs: &[("anomaly", 1.0, 0.6, 0.9), ("quality", 0.5, 0.8, 0.65)],
            worst: false,
        },
        Roll { name: "line-worst", inputs: &[("anomaly", 1.0, 0.6, 0.9)], worst: true },
    ];
    let (interval, stale) = (5_000i64, 10_000i64);
    let mut latest: HashMap<String, Value> = HashMap::new();
    let mut groups: Vec<BTreeMap<String, (i64, BTreeSet<String>)>> = vec![BTreeMap::new(), BTreeMap::new()];
    let mut out = Vec::new();
    for m in scores {
        let j = m.json();
        let (device, ts) = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
        let line = device.split('/').next().unwrap().to_string();
        for (r, roll) in rolls.iter().enumerate() {
            let k = ts.div_euclid(interval);
            let g = groups[r].entry(line.clone()).or_insert((k, BTreeSet::new()));
            if k > g.0 {
                let stamp = k * interval;
                let (mut n_stale, mut states) = (0, BTreeMap::from([("ok", 0), ("warn", 0), ("alarm", 0)]));
                let (mut wsum, mut wv, mut worst) = (0.0, 0.0, f64::NEG_INFINITY);
                let mut driver: Option<(String, f64, f64)> = None;
                for d in &g.1 {
                    let l = &latest[d];
                    if stamp - l["ts"].as_i64().unwrap() > stale {
                        n_stale += 1;
                        continue;
                    }
                    *states.get_mut(l["state"].as_str().unwrap()).unwrap() += 1;
                    let value = roll
                        .inputs
                        .iter()
                        .map(|(s, w, warn, alarm)| w * (f32_of(&l["scores"][s]) - warn) / (alarm - warn))
                        .sum::<f64>()
                        / roll.inputs.iter().map(|i| i.1).sum::<f64>();
                    let w = device_weight(roll, d);
                    wsum += w;
                    wv += w * value;
                    worst = worst.max(value);
                    if driver.as_ref().is_none_or(|(_, _, p)| w * value > *p) {
                        driver = Some((d.clone(), value, w * value));
                    }
                }
                let devices: i64 = states.values().sum();
                let index = match (roll.worst, devices) {
                    (_, 0) => Value::Null,
                    (true, _) => Value::from(worst),
                    (false, _) => Value::from(wv / wsum),
                };
                let driver = driver.map_or(Value::Null, |(d, value, p)| {
                    serde_json::json!({"device": d, "value": value, "share": if wv > 0.0 { Value::from(p / wv) } else { Value::Null }})
                });
                let topic = format!("plant/{line}/lineguard/{}", if roll.worst { "worst" } else { "health" });
                out.push((
                    topic,
                    serde_json::json!({
                        "ts": stamp, "group": line, "rollup": roll.name,
                        "method": if roll.worst { "worst" } else { "weighted" },
                        "index": index, "devices": devices, "stale": n_stale, "states": states, "driver": driver,
                    }),
                ));
                g.0 = k;
            }
            g.1.insert(device.clone());
        }
        latest.insert(device, j);
    }
    out
}

#[test]
fn forecasts_and_rollups_equal_their_definitions_over_the_published_scores() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let model = forecasting_model(dir.path());
    let pipeline = PipelineSpec::new("press-line", model.to_str().unwrap(), LINE_IN, LINE_OUT);
    let state = crate::support::daemon::own_state();
    let text = config(broker.port, "lg-forecast", state, &[pipeline], "") + ROLLUPS;
    let outputs = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores", "plant/+/lineguard/+"]);
    let mut daemon = Daemon::start(&text);
    wait_online(&broker, "lg-forecast");

    // Four machines on two lines, two with faults ramping at different
    // rates; one that goes quiet early (stale in the roll-ups that follow).
    let machines: [(&str, f64, usize); 5] = [
        ("line1/m1", 0.0, 240),
        ("line1/m2", 3.0, 240),
        ("line1/m3", 0.0, 240),
        ("line2/m1", 1.5, 240),
        ("line2/m9", 0.0, 40),
    ];
    let ts0 = now_ms() - 120_000;
    let mut p = Publisher::new(broker.port);
    let mut sent = 0;
    let mut publish = |p: &mut Publisher, rounds: std::ops::Range<usize>| {
        for i in rounds {
            for (k, (device, ramp, n)) in machines.iter().enumerate() {
                if i < *n {
                    p.publish(&line_topic(device), sample(k as u64 + 1, i, *ramp, ts0 + i as i64 * 250));
                    sent += 1;
                }
            }
        }
        p.flush(Duration::from_secs(30));
    };
    // Half the stream, a restart (the buckets and latest scores come back
    // from the state store), then the rest: one definition over it all.
    let windows_by =
        |rounds: usize| -> usize { machines.iter().map(|(_, _, n)| rounds.min(*n).saturating_sub(15)).sum() };
    publish(&mut p, 0..120);
    let mut got = outputs.collect(windows_by(120), Duration::from_secs(60), Duration::from_secs(1), |_| true);
    daemon.sigterm(Duration::from_secs(20));
    daemon.spawn();
    wait_online(&broker, "lg-forecast");
    publish(&mut p, 120..240);
    let windows = windows_by(240);
    let scored_before = got.iter().filter(|m| m.topic.ends_with("/scores")).count();
    got.extend(outputs.collect(
        windows - scored_before,
        Duration::from_secs(60),
        Duration::from_secs(3),
        |_| true,
    ));
    // Once each (a copy must equal its first: determinism).
    let mut first: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    got.retain(|m| {
        let key = (m.topic.clone(), m.json()["ts"].to_string() + m.json()["device"].as_str().unwrap_or(""));
        match first.get(&key) {
            Some(p) => {
                assert_eq!(p, &m.payload, "a copy differs from the first on {}", m.topic);
                false
            }
            None => {
                first.insert(key, m.payload.clone());
                true
            }
        }
    });
    let scores: Vec<&Message> = got.iter().filter(|m| m.topic.ends_with("/scores")).collect();
    assert_eq!(scores.len(), windows, "every window of {sent} samples scored\n{}", daemon.log());
    assert!(daemon.log().contains("windows restored from the state store"), "{}", daemon.log());

    // Forecasts: on exactly the windows the definition says, equal to it.
    let want = expected_forecasts(&scores);
    assert!(want.len() > 100, "the stream makes forecasts: {}", want.len());
    let mut counting = BTreeSet::new();
    for m in &scores {
        let j = m.json();
        let key = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
        match (want.get(&key), j.get("forecast")) {
            (None, None) => {}
            (Some(w), Some(g)) => assert!(close(w, g), "{key:?}: want {w}\ngot {g}"),
            (w, g) => panic!("{key:?}: want {w:?}, got {g:?}"),
        }
        if j["forecast"]["anomaly"]["to_alarm_s"].is_number() {
            counting.insert(key.0);
        }
    }
    // The faulty machines' anomaly trends count; the flat ones' do not.
    assert!(counting.contains("line1/m2"), "{counting:?}");
    for flat in ["line1/m1", "line1/m3"] {
        let made: Vec<Value> = scores
            .iter()
            .map(|m| m.json())
            .filter(|j| j["device"] == flat)
            .filter_map(|j| j.get("forecast").map(|f| f["anomaly"]["to_alarm_s"].clone()))
            .collect();
        let late: Vec<&Value> = made.iter().filter(|v| v.is_number()).collect();
        assert!(
            late.len() * 10 <= made.len(),
            "{flat}: a flat machine's anomaly mostly has no counting trend: {late:?}"
        );
    }

    // Roll-ups: in order, equal to the definition, retained.
    let want = expected_rollups(&scores);
    let rolled: Vec<(String, Value)> =
        got.iter().filter(|m| !m.topic.ends_with("/scores")).map(|m| (m.topic.clone(), m.json())).collect();
    assert!(want.len() >= 40, "the stream makes roll-ups: {}", want.len());
    assert!(want.iter().any(|(_, v)| v["stale"].as_i64() > Some(0)), "line2/m9 goes stale");
    assert_eq!(rolled.len(), want.len(), "as many roll-ups\nwant {want:?}\ngot {rolled:?}");
    for (i, ((wt, w), (gt, g))) in want.iter().zip(&rolled).enumerate() {
        assert_eq!(wt, gt, "roll-up {i}");
        assert!(close(w, g), "roll-up {i} on {wt}: want {w}\ngot {g}");
    }
    let retained = Subscriber::new(broker.port, &["plant/line1/lineguard/health"]);
    let last = retained.next(Duration::from_secs(5)).expect("the roll-up is retained");
    assert!(last.retain, "{last:?}");

    // The gauge and /devices.
    let metrics = daemon.http_get("/metrics").1;
    assert!(
        metrics.lines().any(|l| l.starts_with("lineguard_rollup_index{")
            && l.contains("rollup=\"line-worst\"")
            && l.contains("group=\"line2\"")),
        "{metrics}"
    );
    let (_, body) = daemon.http_get("/devices");
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(all["rollups"].as_array().unwrap().len(), 4, "two roll-ups of two lines: {}", all["rollups"]);
    let m2 = all["devices"].as_array().unwrap().iter().find(|d| d["device"] == "line1/m2").unwrap();
    assert!(m2["forecast"]["anomaly"]["ts"].as_i64().is_some(), "{m2}");
}

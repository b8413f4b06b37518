//! Input formats other than lineguard's own, gaps in a device's data and the
//! sampling clock, through a real mosquitto: every window scored must equal
//! ONNX Runtime's fixture for the same samples, nothing missing, nothing
//! extra.

use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, own_state, Daemon};
use crate::support::golden::{card_scores, check_scores_at_least_once, Expected, Golden, Sample};
use crate::support::line::{
    collect_every_window, copy_model, expect_exactly, line_pipeline, line_topic, score_topic, wait_online,
    LINE_CARD, LINE_GOLDEN,
};
use crate::support::mqtt::{Publisher, Subscriber};
use crate::support::tags::{
    model_on_a_clock, tag_expected, tag_fixture, tag_message, TagFixture, TagMessage,
};

/// A config for the line pipeline with `keys` added to it.
fn line_config(broker: &Broker, client_id: &str, model: Option<&str>, keys: &str) -> String {
    let mut spec = line_pipeline();
    if let Some(m) = model {
        spec.model = m;
    }
    config(broker.port, client_id, own_state(), &[spec], "").replace("hop = 1\n", &format!("hop = 1\n{keys}"))
}

/// One golden sample as a Telegraf JSON metric: fields are the features,
/// `timestamp` in (fractional) seconds, as `json_timestamp_units = "1s"`
/// writes whole ones.
fn telegraf_metric(device: &str, s: &Sample) -> serde_json::Value {
    serde_json::json!({
        "fields": s.values,
        "name": "press",
        "tags": {"host": "gw01", "machine": device},
        "timestamp": s.ts as f64 / 1000.0,
    })
}

#[test]
fn telegraf_metrics_score_as_onnx_runtime() {
    let broker = Broker::start();
    let golden = Golden::load(LINE_GOLDEN);
    let _daemon = Daemon::start(&line_config(&broker, "lg-telegraf", None, "input_format = \"telegraf\"\n"));
    wait_online(&broker, "lg-telegraf");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    // Two devices send one metric per message; two send the batch form,
    // two metrics per message.
    let mut batched: std::collections::BTreeMap<&str, Vec<serde_json::Value>> = Default::default();
    for (device, sample) in golden.interleaved() {
        let metric = telegraf_metric(device, sample);
        if device == "line1/press1" || device == "line1/press2" {
            let pending = batched.entry(device).or_default();
            pending.push(metric);
            if pending.len() == 2 {
                let metrics = std::mem::take(pending);
                p.publish(&line_topic(device), serde_json::json!({ "metrics": metrics }).to_string());
            }
        } else {
            p.publish(&line_topic(device), metric.to_string());
        }
    }
    for (device, rest) in batched.into_iter().filter(|(_, m)| !m.is_empty()) {
        p.publish(&line_topic(device), serde_json::json!({ "metrics": rest }).to_string());
    }
    p.flush(Duration::from_secs(10));
    expect_exactly(&sub, &golden.expected(&card_scores(LINE_CARD), 1));
}

#[test]
fn a_gap_longer_than_max_gap_ms_starts_the_window_again() {
    let broker = Broker::start();
    let golden = Golden::load(LINE_GOLDEN);
    let models = tempfile::tempdir().unwrap();
    let model = copy_model(models.path());
    let card = models.path().join("line-mlp.toml");
    let text = std::fs::read_to_string(&card).unwrap();
    std::fs::write(&card, format!("max_gap_ms = 5000\n{text}")).unwrap();

    let (device, gap_at, shift) = ("line1/press1", 20usize, 60_000i64);
    let daemon = Daemon::start(&line_config(&broker, "lg-gap", Some(&model.display().to_string()), ""));
    wait_online(&broker, "lg-gap");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    // The machine stops for a minute after its 20th sample; the other
    // devices send on without a gap.
    let samples: Vec<(&str, Sample)> = golden
        .interleaved()
        .into_iter()
        .map(|(d, s)| {
            let index = golden.devices[d].iter().position(|x| x.ts == s.ts).unwrap();
            let mut s = s.clone();
            if d == device && index >= gap_at {
                s.ts += shift;
            }
            (d, s)
        })
        .collect();
    for (d, s) in &samples {
        p.publish(&line_topic(d), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));

    // Of the stopped machine, the windows before the gap and those made
    // wholly of samples after it (their values are the fixture's; only the
    // clock moved); none that straddles it.
    let window = golden.window;
    let expected: Vec<Expected> = golden
        .windows
        .iter()
        .zip(golden.expected(&card_scores(LINE_CARD), 1))
        .filter_map(|(w, mut e)| {
            if w.device != device {
                return Some(e);
            }
            if w.index < gap_at {
                Some(e)
            } else if w.index + 1 >= gap_at + window {
                e.ts += shift;
                Some(e)
            } else {
                None
            }
        })
        .collect();
    let straddling = golden.windows.iter().filter(|w| w.device == device).count()
        - expected.iter().filter(|e| e.device == device).count();
    assert_eq!(straddling, window - 1, "the test removes exactly the windows across the gap");
    expect_exactly(&sub, &expected);
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(
        metrics.contains("lineguard_window_resets_total{pipeline=\"press-line\",reason=\"gap\"} 1"),
        "one reset counted:\n{metrics}"
    );
}

#[test]
fn timestamps_in_seconds_need_ts_unit() {
    let broker = Broker::start();
    let golden = Golden::load(LINE_GOLDEN);
    let _daemon = Daemon::start(&line_config(&broker, "lg-ts-unit", None, "ts_unit = \"us\"\n"));
    wait_online(&broker, "lg-ts-unit");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    for (device, s) in golden.interleaved() {
        let us = serde_json::json!({"ts": s.ts * 1000 + 999, "values": s.values});
        p.publish(&line_topic(device), us.to_string());
    }
    p.flush(Duration::from_secs(10));
    // Microseconds, truncated to the millisecond: the fixture's own ts.
    expect_exactly(&sub, &golden.expected(&card_scores(LINE_CARD), 1));
}

/// A daemon for the line model on the fixture's clock, reading
/// `input_topic` with the pipeline `keys`; the models' directory must
/// outlive it.
fn clocked_daemon(
    broker: &Broker,
    client_id: &str,
    fixture: &TagFixture,
    input_topic: &str,
    keys: &str,
) -> (Daemon, tempfile::TempDir) {
    let models = tempfile::tempdir().unwrap();
    let model = model_on_a_clock(models.path(), fixture.sample_period_ms);
    let config = line_config(broker, client_id, Some(&model), keys)
        .replace("\"plant/{line}/{machine}/telemetry\"", &format!("\"{input_topic}\""));
    let daemon = Daemon::start(&config);
    wait_online(broker, client_id);
    (daemon, models)
}

/// [`clocked_daemon`] reading tags (`uns/{line}/{machine}/{feature}`).
fn tag_daemon(broker: &Broker, client_id: &str, fixture: &TagFixture) -> (Daemon, tempfile::TempDir) {
    clocked_daemon(broker, client_id, fixture, "uns/{line}/{machine}/{feature}", "input_format = \"tag\"\n")
}

/// The fixture's values gathered per device into messages of at most `max`
/// values, each feature at most once per message (a message of data points
/// names each once), in publishing order: a device's message goes out when
/// its next value would not fit.
fn gathered(fixture: &TagFixture, max: usize) -> Vec<(&str, Vec<&TagMessage>)> {
    let mut pending: std::collections::BTreeMap<&str, Vec<&TagMessage>> = Default::default();
    let mut out = Vec::new();
    for m in &fixture.messages {
        let points = pending.entry(m.device.as_str()).or_default();
        if points.iter().any(|q| q.feature == m.feature) || points.len() == max {
            out.push((m.device.as_str(), std::mem::take(points)));
        }
        points.push(m);
    }
    out.extend(pending.into_iter().filter(|(_, points)| !points.is_empty()));
    out
}

/// One value per topic (`uns/{line}/{machine}/{feature}`), each tag at its
/// own jittered times, some by exception, one falling silent longer than
/// `stale_after_ms`: the fixture (models/make_tag_fixture.py) forms the grid
/// samples from the raw stream on its own and scores them with ONNX Runtime.
#[test]
fn tags_on_a_sampling_clock_score_as_onnx_runtime() {
    let fixture = tag_fixture();
    let broker = Broker::start();
    let (daemon, _models) = tag_daemon(&broker, "lg-tags", &fixture);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    for (i, m) in fixture.messages.iter().enumerate() {
        let (topic, payload) = tag_message(i, m);
        p.publish(&topic, payload);
    }
    p.flush(Duration::from_secs(20));
    let expected = tag_expected(&fixture);
    assert_eq!(expected.len(), 78, "the fixture's windows");
    expect_exactly(&sub, &expected);
    let resets: u64 = fixture.resets.values().sum();
    assert_eq!(fixture.resets["line1/press2"], 1, "only the machine whose tag fell silent resets");
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(
        metrics.contains(&format!(
            "lineguard_window_resets_total{{pipeline=\"press-line\",reason=\"stale\"}} {resets}"
        )),
        "the silent tag's reset is counted:\n{metrics}"
    );
    assert!(
        metrics.contains("lineguard_rejected_total{pipeline=\"press-line\",reason=\"late\"} 0"),
        "in ts order, nothing is late:\n{metrics}"
    );
}

/// kill -9 mid-stream: the partly formed samples come back with the
/// windows, and every window is scored, as ONNX Runtime scores it.
#[test]
fn tags_on_a_sampling_clock_survive_kill_9() {
    let fixture = tag_fixture();
    let broker = Broker::start();
    let (mut daemon, _models) = tag_daemon(&broker, "lg-tags-kill9", &fixture);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    let half = fixture.messages.len() / 2;
    for (i, m) in fixture.messages.iter().enumerate() {
        let (topic, payload) = tag_message(i, m);
        p.publish(&topic, payload);
        std::thread::sleep(Duration::from_micros(500));
        if i == half {
            daemon.kill9();
        }
        if i == half + 40 {
            // Tags published while it was down wait in its persistent session.
            daemon.spawn();
        }
    }
    p.flush(Duration::from_secs(20));
    let expected = tag_expected(&fixture);
    let got = collect_every_window(&sub, &expected, Duration::from_secs(30));
    // A missing window: the daemon's log says why (a store rolled back after
    // the kill drops the windows it cannot trust, and says so).
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        check_scores_at_least_once(&got, &expected, "press-line", "line-mlp", score_topic)
    }));
    let dups = checked.unwrap_or_else(|e| {
        eprintln!("the daemon's log:\n{}", daemon.log());
        std::panic::resume_unwind(e)
    });
    eprintln!("kill -9 on a sampling clock: {} windows, {dups} identical duplicates", expected.len());
    assert!(daemon.log().contains("windows restored from the state store"), "{}", daemon.log());
}

/// The same tag stream as KEPServerEX's IoT Gateway sends it: one topic,
/// several records per message, each naming its device and feature by its
/// id (`line1.press1.motor_temp` through `tag_id = "{line}.{machine}.{feature}"`),
/// with records of bad quality and of tags the model does not use in
/// between: every window as ONNX Runtime scores the fixture's samples.
#[test]
fn kepware_records_on_a_sampling_clock_score_as_onnx_runtime() {
    let fixture = tag_fixture();
    let broker = Broker::start();
    let keys = "input_format = \"kepware\"\ntag_id = \"{line}.{machine}.{feature}\"\n";
    let (daemon, _models) = clocked_daemon(&broker, "lg-kepware", &fixture, "iotgateway", keys);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    let mut bad_quality = 0;
    for (n, chunk) in fixture.messages.chunks(7).enumerate() {
        let mut records = Vec::new();
        for m in chunk {
            let id = format!("{}.{}", m.device.replace('/', "."), m.feature);
            if n % 3 == 0 {
                // A value the server marks bad: rejected, and the held value stays.
                records.push(serde_json::json!({"id": id, "v": -1e6, "q": false, "t": m.ts}));
                bad_quality += 1;
            }
            records.push(serde_json::json!({"id": id, "v": m.value, "q": true, "t": m.ts}));
        }
        let last = chunk.last().unwrap();
        records.push(serde_json::json!({"id": format!("{}._System._Error", last.device.replace('/', ".")), "v": false, "q": true, "t": last.ts}));
        let message = serde_json::json!({"timestamp": last.ts, "values": records});
        p.publish("iotgateway", message.to_string());
    }
    p.flush(Duration::from_secs(20));
    expect_exactly(&sub, &tag_expected(&fixture));
    let (_, metrics) = daemon.http_get("/metrics");
    assert!(
        metrics.contains(&format!(
            "lineguard_rejected_total{{pipeline=\"press-line\",reason=\"bad_quality\"}} {bad_quality}"
        )),
        "every record of bad quality is counted:\n{metrics}"
    );
}

/// The tag stream as Azure IoT Operations' connector for OPC UA publishes it:
/// per asset topic, objects of data points, each with its own
/// `SourceTimestamp` (RFC 3339, seven fractional digits). Every window as
/// ONNX Runtime scores the fixture's samples.
#[test]
fn opcua_json_data_points_on_a_sampling_clock_score_as_onnx_runtime() {
    let fixture = tag_fixture();
    let broker = Broker::start();
    let topic = "azure-iot-operations/data/{line}/{machine}";
    let _daemon = clocked_daemon(&broker, "lg-opcua", &fixture, topic, "input_format = \"opcua-json\"\n");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    let rfc3339 = |ms: i64| {
        // 100 ns past the millisecond: seven digits, as the connector writes them.
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000 + 100).unwrap();
        t.format(&time::format_description::well_known::Rfc3339).unwrap()
    };
    // Each message lists its data points newest first: lineguard takes them
    // in time order whatever the order of the object's names.
    for (device, points) in gathered(&fixture, 4) {
        let body: Vec<String> = points
            .iter()
            .rev()
            .map(|m| {
                format!("{:?}:{{\"SourceTimestamp\":{:?},\"Value\":{}}}", m.feature, rfc3339(m.ts), m.value)
            })
            .collect();
        p.publish(&format!("azure-iot-operations/data/{device}"), format!("{{{}}}", body.join(",")));
    }
    p.flush(Duration::from_secs(20));
    expect_exactly(&sub, &tag_expected(&fixture));
}

/// A Sparkplug B edge node reporting by exception: one DBIRTH per device
/// (names, aliases, no values yet), then DDATA by alias carrying the
/// metrics that changed, each with its own timestamp. On the card's clock,
/// every metric is a value at its timestamp: every window as ONNX Runtime
/// scores the fixture's samples.
#[test]
fn sparkplug_by_exception_on_a_sampling_clock_scores_as_onnx_runtime() {
    use crate::support::sparkplug::{self as sp, Val};
    let fixture = tag_fixture();
    let broker = Broker::start();
    let _daemon =
        clocked_daemon(&broker, "lg-spb-clock", &fixture, "spBv1.0/{line}/DDATA/cell7/{machine}", "");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    let features = Golden::load(LINE_GOLDEN).features;
    let alias = |f: &str| 10 + features.iter().position(|x| x == f).unwrap() as u64;
    let topic = |kind: &str, device: &str| {
        let (line, machine) = device.split_once('/').unwrap();
        format!("spBv1.0/{line}/{kind}/cell7/{machine}")
    };
    let mut seq: std::collections::BTreeMap<String, u64> = Default::default();
    for device in fixture.resets.keys() {
        let metrics = features
            .iter()
            .map(|f| sp::Metric {
                name: Some(f.clone()),
                alias: Some(alias(f)),
                timestamp: None,
                datatype: Some(sp::DOUBLE),
                value: Val::None,
            })
            .collect();
        p.publish(
            &topic("DBIRTH", device),
            sp::encode(&sp::Payload { timestamp: Some(1), seq: Some(0), metrics }),
        );
        seq.insert(device.clone(), 0);
    }
    for (device, points) in gathered(&fixture, 3) {
        let metrics = points
            .iter()
            .map(|m| sp::Metric {
                name: None,
                alias: Some(alias(&m.feature)),
                timestamp: Some(m.ts as u64),
                datatype: None,
                value: Val::Double(m.value),
            })
            .collect();
        let n = seq.get_mut(device).unwrap();
        *n += 1;
        let payload =
            sp::Payload { timestamp: points.last().map(|m| m.ts as u64), seq: Some(*n % 256), metrics };
        p.publish(&topic("DDATA", device), sp::encode(&payload));
    }
    p.flush(Duration::from_secs(20));
    expect_exactly(&sub, &tag_expected(&fixture));
}

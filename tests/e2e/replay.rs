//! `lineguard record` and `lineguard replay`: a stream recorded off a real
//! broker while the daemon scores it, then replayed offline, gives the same
//! bytes the daemon published — scores, alarm states, explanations, a
//! shadow model's scores and dead letters, in the same order. A CSV table of the same
//! samples replays to the same bytes too, and a recording of tags on a
//! sampling clock replays to ONNX Runtime's scores.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::Golden;
use crate::support::line::{line_topic, wait_online, LINE_GOLDEN, LINE_IN, LINE_MODEL, LINE_OUT};
use crate::support::mqtt::{Message, Publisher, Subscriber};

/// Alarm states (with explanations of warn and alarm windows), an
/// autoencoder shadowing the live model, forecasts of both scores (over 3 s
/// of data time: the golden stream's 2.4 s make some) and a roll-up per line
/// each second: every kind of message a JSON pipeline publishes.
fn pipeline_keys() -> String {
    format!(
        "card = \"{}\"\nalarm_topic = \"plant/{{line}}/{{machine}}/lineguard/alarm\"\n\
         shadow_model = \"{}\"\nshadow_topic = \"plant/{{line}}/{{machine}}/lineguard/shadow\"\n\n\
         [[rollups]]\nname = \"line-health\"\npipeline = \"press-line\"\ngroup = \"{{line}}\"\n\
         output_topic = \"plant/{{line}}/lineguard/health\"\ninputs = {{ anomaly = 1.0, quality = 1.0 }}\n\
         method = \"worst\"\ninterval_secs = 1\nstale_secs = 1\n",
        forecasting_card().display(),
        crate::support::repo_path("models/line-ae.onnx").display()
    )
}

/// The shipped card, forecasting both scores over 3 s (written once per test run).
fn forecasting_card() -> &'static Path {
    static CARD: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CARD.get_or_init(|| {
        let card =
            std::fs::read_to_string(crate::support::repo_path(crate::support::line::LINE_CARD)).unwrap();
        let card: String =
            card.lines().filter(|l| !l.starts_with("forecast")).map(|l| format!("{l}\n")).collect();
        let card = card
            .replace("alarm = 0.9\n", "alarm = 0.9\nforecast_secs = 3\n")
            .replace("alarm = 0.65\n", "alarm = 0.65\nforecast_secs = 3\nforecast_horizon_secs = 60\n");
        let dir = std::env::temp_dir().join(format!("lineguard-replay-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("line-mlp-forecast.toml");
        std::fs::write(&path, card).unwrap();
        path
    })
}

/// `dir/replay.toml`: the pipeline for replay (no broker; a `state.dir`,
/// `dir/never-made`, that replay must not create), with `extra` keys.
fn replay_config(dir: &Path, client_id: &str, extra: &str) -> std::path::PathBuf {
    let cfg = dir.join("replay.toml");
    std::fs::write(&cfg, config_with(1, client_id, &dir.join("never-made"), extra)).unwrap();
    cfg
}

fn config_for(port: u16, client_id: &str, state: &Path) -> String {
    config_with(port, client_id, state, "")
}

/// Rejected messages, with the reason, on this topic (`limits.dead_letter_topic`).
const DEAD: &str = "lineguard/parity/dead";

fn config_with(port: u16, client_id: &str, state: &Path, extra: &str) -> String {
    let pipeline = PipelineSpec::new("press-line", LINE_MODEL, LINE_IN, LINE_OUT);
    config(port, client_id, state, &[pipeline], extra) + &pipeline_keys()
}

/// `lineguard replay --config CFG --input INPUT --output OUT [extra...]`.
fn replay(cfg: &Path, input: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .arg("replay")
        .arg("--config")
        .arg(cfg)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .expect("run lineguard")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A published message: `(topic, payload)`.
type Said = (String, String);

/// `(topic, payload)` of each line `replay` wrote.
fn replayed(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let keys: Vec<&String> = v.as_object().expect("an object").keys().collect();
            assert_eq!(keys, ["payload", "topic"], "each line is {{topic, payload}}: {l}");
            (v["topic"].as_str().unwrap().to_string(), v["payload"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The golden stream with what a plant adds: a payload that is not JSON, a
/// sample missing a feature, and a sample sent twice.
fn the_stream(golden: &Golden) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        golden.interleaved().iter().map(|(d, s)| (line_topic(d), Golden::payload(s))).collect();
    out.insert(7, (line_topic("line1/press1"), "not json".into()));
    out.insert(20, (line_topic("line1/press2"), r#"{"ts":1732400000000,"values":{"torque":1}}"#.into()));
    let again = out[30].clone();
    out.insert(31, again);
    out
}

#[test]
fn a_recording_replays_to_the_bytes_the_daemon_published() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("[limits]\ndead_letter_topic = \"{DEAD}\"\n");
    let config_text = config_with(broker.port, "parity", crate::support::daemon::own_state(), &dead);
    let outputs = Subscriber::new(broker.port, &["plant/+/+/lineguard/#", "plant/+/lineguard/#", DEAD]);
    let daemon = Daemon::start(&config_text);
    wait_online(&broker, "parity");

    // The recorder, beside the daemon, on the same configuration.
    let record_config = dir.path().join("record.toml");
    std::fs::write(&record_config, config_for(broker.port, "parity", &dir.path().join("unused"))).unwrap();
    let recording = dir.path().join("recording.jsonl");
    let recorder = Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["record", "--config", record_config.to_str().unwrap(), "--output"])
        .arg(&recording)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Subscribed once a message it was sent is on file (the daemon rejects
    // these probes: they are not JSON, and replay rejects them the same way).
    let mut p = Publisher::new(broker.port);
    crate::support::wait_until("the recorder subscribed", Duration::from_secs(10), || {
        p.publish(&line_topic("probe/m0"), "probe");
        p.flush(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(1200));
        std::fs::read_to_string(&recording).is_ok_and(|t| t.contains("probe"))
    });

    let golden = Golden::load(LINE_GOLDEN);
    for (topic, payload) in the_stream(&golden) {
        p.publish(&topic, payload);
    }
    p.flush(Duration::from_secs(10));
    // Every window scored (and shadowed); a second of quiet for the rest.
    let published = outputs.collect(
        2 * golden.windows.len(),
        Duration::from_secs(30),
        Duration::from_millis(1500),
        |m: &Message| !m.topic.is_empty(),
    );
    crate::support::broker::signal(recorder.id(), "INT");
    let recorded = recorder.wait_with_output().unwrap();
    assert!(recorded.status.success(), "{}", text(&recorded));

    let cfg = replay_config(dir.path(), "parity", &dead);
    let out = dir.path().join("replayed.jsonl");
    let run = replay(&cfg, &recording, &out, &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(!dir.path().join("never-made").exists(), "replay made a state directory");

    let daemon_all: Vec<(String, String)> = published
        .iter()
        .map(|m| (m.topic.clone(), String::from_utf8(m.payload.clone()).expect("JSON is UTF-8")))
        .collect();
    let replay_all = replayed(&out);
    // Dead letters go out on a queue of their own: compared apart, in their
    // own order, without the probes the recorder may have missed.
    let split = |all: &[Said]| -> (Vec<Said>, Vec<Said>) {
        let (dead, said): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|(t, _)| t == DEAD);
        (dead.into_iter().filter(|(_, p)| !p.contains("probe")).collect(), said)
    };
    let ((daemon_dead, daemon_said), (replay_dead, replay_said)) = (split(&daemon_all), split(&replay_all));
    assert!(daemon_dead.len() >= 2, "the stream's bad messages as dead letters: {daemon_dead:?}");
    assert_eq!(daemon_dead, replay_dead, "dead letters: the daemon's, then replay's");
    let kinds = |v: &[(String, String)], end: &str| v.iter().filter(|(t, _)| t.ends_with(end)).count();
    assert_eq!(kinds(&daemon_said, "/scores"), golden.windows.len(), "{}", daemon.log());
    assert_eq!(kinds(&daemon_said, "/shadow"), golden.windows.len(), "{}", daemon.log());
    assert!(kinds(&daemon_said, "/alarm") >= 3, "alarm states: {daemon_said:?}");
    assert!(daemon_said.iter().any(|(_, p)| p.contains("\"explain\"")), "no explanation was published");
    assert!(daemon_said.iter().any(|(_, p)| p.contains("\"forecast\"")), "no forecast was published");
    assert!(kinds(&daemon_said, "/health") >= 2, "roll-ups: {daemon_said:?}");
    for (i, (d, r)) in daemon_said.iter().zip(&replay_said).enumerate() {
        assert_eq!(d, r, "message {i}: the daemon published the first, replay wrote the second");
    }
    assert_eq!(daemon_said.len(), replay_said.len(), "as many messages");

    // The summary: messages, windows, rejections by reason, states.
    let summary = String::from_utf8_lossy(&run.stdout).to_string();
    let windows = golden.windows.len();
    assert!(summary.contains(&format!("{windows} windows (ok ")), "{summary}");
    assert!(summary.contains("invalid_json"), "{summary}");
    assert!(summary.contains("missing_feature 1"), "{summary}");
    assert!(summary.contains(&format!("wrote {} messages", replay_all.len())), "{summary}");
    // The shadow's disagreements: windows whose shadow state is not the live one's.
    let state_of = |end: &str| -> std::collections::BTreeMap<(String, i64), String> {
        (replay_said.iter().filter(|(t, _)| t.ends_with(end)))
            .map(|(_, p)| {
                let v: serde_json::Value = serde_json::from_str(p).unwrap();
                (
                    (v["device"].as_str().unwrap().to_string(), v["ts"].as_i64().unwrap()),
                    v["state"].to_string(),
                )
            })
            .collect()
    };
    let (live, shadow) = (state_of("/scores"), state_of("/shadow"));
    let differ = live.iter().filter(|(k, s)| shadow.get(*k) != Some(*s)).count();
    assert!(
        summary.contains(&format!("shadow line-ae v1: {windows} windows, {differ} in another state")),
        "{summary}"
    );
}

/// The golden stream as a recording (JSON lines, `received_ms` = each
/// sample's `ts`) and as a table with the feature columns in `features`' order.
fn recording_and_table(golden: &Golden, features: &[String]) -> (String, String) {
    let mut recording = String::new();
    let mut table = format!("device,ts,{}\n", features.join(","));
    for (device, s) in golden.interleaved() {
        let line = serde_json::json!({"topic": line_topic(device), "payload": Golden::payload(s), "received_ms": s.ts});
        recording.push_str(&format!("{line}\n"));
        let cells: Vec<String> = features.iter().map(|f| format!("{:?}", s.values[f])).collect();
        table.push_str(&format!("{device},{},{}\n", s.ts, cells.join(",")));
    }
    (recording, table)
}

/// The same samples as a table: `device,ts,<features...>`, in any column
/// order, the device key filling the input template's placeholders.
#[test]
fn a_csv_table_replays_like_the_recording_of_the_same_samples() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Golden::load(LINE_GOLDEN);
    let cfg = replay_config(dir.path(), "csv", "");
    let mut features = golden.features.clone();
    features.reverse();
    let (recording, mut table) = recording_and_table(&golden, &features);
    // One row a table can get wrong: a cell that is not a number.
    table.push_str("line1/press1,1732400099000,x,1,1,1,1,1,1,1\n");
    // And a cell left empty: without a sampling clock, a missing feature.
    table.push_str("line1/press1,1732400099100,,1,1,1,1,1,1,1\n");
    let (rec, csv) = (dir.path().join("r.jsonl"), dir.path().join("t.csv"));
    std::fs::write(&rec, recording).unwrap();
    std::fs::write(&csv, &table).unwrap();
    // As a spreadsheet exports it in many locales: a byte-order mark, `;`
    // between cells and a decimal comma.
    let euro = dir.path().join("euro.csv");
    std::fs::write(&euro, format!("\u{feff}{}", table.replace(',', ";").replace('.', ","))).unwrap();
    let replay_to = |input: &Path, out: &str| {
        let out = dir.path().join(out);
        let run = replay(&cfg, input, &out, &[]);
        assert!(run.status.success(), "{}", text(&run));
        (replayed(&out), String::from_utf8_lossy(&run.stdout).to_string())
    };
    let (from_recording, _) = replay_to(&rec, "a.jsonl");
    let (from_table, summary) = replay_to(&csv, "b.jsonl");
    assert_eq!(from_recording.iter().filter(|(t, _)| t.ends_with("/scores")).count(), golden.windows.len());
    assert!(from_recording == from_table, "the table's replay differs from the recording's");
    let (from_euro, _) = replay_to(&euro, "c.jsonl");
    assert!(from_recording == from_euro, "the `;` table's replay differs from the recording's");
    assert!(summary.contains("non_numeric 1"), "{summary}");
    assert!(summary.contains("missing_feature 1"), "{summary}");
}

#[test]
fn replay_says_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = replay_config(dir.path(), "bad", "");
    let out = dir.path().join("o.jsonl");
    let run_on = |name: &str, content: &str, extra: &[&str]| {
        let input = dir.path().join(name);
        std::fs::write(&input, content).unwrap();
        replay(&cfg, &input, &out, extra)
    };
    // A table without a feature the model reads: refused, naming it.
    let run = run_on("t.csv", "device,ts,torque\nline1/press1,1,2\n", &[]);
    assert!(!run.status.success());
    assert!(text(&run).contains("missing for the model's features"), "{}", text(&run));
    // A table for a pipeline that is not there.
    let run = run_on("t.csv", "device,ts\n", &["--pipeline", "nope"]);
    assert!(!run.status.success() && text(&run).contains("no pipeline `nope`"), "{}", text(&run));
    // A pipeline publishing Sparkplug B: refused, saying why and what to do.
    let spb = dir.path().join("spb.toml");
    let mut spb_text = config(
        1,
        "spb",
        &dir.path().join("never-made"),
        &[],
        "[sparkplug]\ngroup_id = \"g\"\nedge_node_id = \"n\"\n",
    );
    spb_text.push_str(&format!(
        "\n[[pipelines]]\nname = \"press-line\"\nmodel = \"{}\"\ninput_topic = \"{LINE_IN}\"\nformat = \"sparkplug\"\n",
        crate::support::repo_path(LINE_MODEL).display()
    ));
    std::fs::write(&spb, spb_text).unwrap();
    let input = dir.path().join("r.jsonl");
    std::fs::write(&input, "").unwrap();
    let run = replay(&spb, &input, &out, &[]);
    assert!(!run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("publishes Sparkplug B") && text(&run).contains("output_topic"),
        "{}",
        text(&run)
    );
    // Lines that are not recorded messages: skipped, counted, the first shown.
    let run = run_on("r.jsonl", "{\"topic\":\"plant/l1/m1/telemetry\"}\nnot json\n", &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("line 1: not a recorded message"), "{}", text(&run));
    assert!(text(&run).contains("skipped: 2 unreadable lines"), "{}", text(&run));
}

/// Several pipelines: each message goes to every pipeline that takes its
/// topic, as the router sends it, and the output is in input order;
/// `--pipeline` replays one of them.
#[test]
fn a_recording_feeds_every_pipeline_or_the_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Golden::load(LINE_GOLDEN);
    let pipelines = [
        PipelineSpec::new("a", LINE_MODEL, LINE_IN, "plant/{line}/{machine}/a"),
        PipelineSpec::new("b", LINE_MODEL, LINE_IN, "plant/{line}/{machine}/b"),
    ];
    let cfg = dir.path().join("two.toml");
    std::fs::write(&cfg, config(1, "two", &dir.path().join("never-made"), &pipelines, "")).unwrap();
    let rec = dir.path().join("r.jsonl");
    std::fs::write(&rec, recording_and_table(&golden, &golden.features).0).unwrap();
    let out = dir.path().join("o.jsonl");
    let count = |v: &[(String, String)], end: &str| v.iter().filter(|(t, _)| t.ends_with(end)).count();
    let run = replay(&cfg, &rec, &out, &[]);
    assert!(run.status.success(), "{}", text(&run));
    let both = replayed(&out);
    assert_eq!((count(&both, "/a"), count(&both, "/b")), (golden.windows.len(), golden.windows.len()));
    // In input order: what one message causes, pipeline by pipeline.
    for pair in both.chunks(2) {
        let device = |m: &(String, String)| m.0.rsplit_once('/').unwrap().0.to_string();
        assert!(pair[0].0.ends_with("/a") && pair[1].0.ends_with("/b"), "{pair:?}");
        assert_eq!(device(&pair[0]), device(&pair[1]), "{pair:?}");
    }
    let run = replay(&cfg, &rec, &out, &["--pipeline", "b"]);
    assert!(run.status.success(), "{}", text(&run));
    let only_b = replayed(&out);
    assert_eq!((count(&only_b, "/a"), count(&only_b, "/b")), (0, golden.windows.len()));
    let b_of_both: Vec<&(String, String)> = both.iter().filter(|(t, _)| t.ends_with("/b")).collect();
    assert!(only_b.iter().eq(b_of_both), "pipeline b alone publishes what it publishes beside a");
}

/// `-` for standard input and output, for pipes (`zcat rec.jsonl.gz |
/// lineguard replay --input - --output - | jq ...`): the same lines, the
/// summary on stderr; a table is told from a recording by its first byte.
#[test]
fn replay_reads_standard_input_and_writes_standard_output() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let golden = Golden::load(LINE_GOLDEN);
    let cfg = replay_config(dir.path(), "pipe", "");
    let (recording, table) = recording_and_table(&golden, &golden.features);
    let rec = dir.path().join("r.jsonl");
    std::fs::write(&rec, &recording).unwrap();
    let file_out = dir.path().join("o.jsonl");
    let run = replay(&cfg, &rec, &file_out, &[]);
    assert!(run.status.success(), "{}", text(&run));
    let from_file = std::fs::read_to_string(&file_out).unwrap();
    for input in [recording, table] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lineguard"))
            .args(["replay", "--config", cfg.to_str().unwrap(), "--input", "-", "--output", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), from_file, "stdout is the output, and only it");
        assert!(String::from_utf8_lossy(&out.stderr).contains("windows (ok "), "{}", text(&out));
    }
}

/// A recording of one value per message on a sampling clock (tags at their
/// own jittered times, one falling silent): replay forms the grid samples
/// and scores each window as ONNX Runtime scores the fixture's
/// (`models/make_tag_fixture.py`), nothing missing, nothing extra.
#[test]
fn a_recording_on_a_sampling_clock_replays_to_onnx_runtime_scores() {
    use crate::support::tags::{model_on_a_clock, tag_expected, tag_fixture, tag_message};
    let fixture = tag_fixture();
    let dir = tempfile::tempdir().unwrap();
    let model = model_on_a_clock(dir.path(), fixture.sample_period_ms);
    let mut spec = PipelineSpec::new("press-line", LINE_MODEL, "uns/{line}/{machine}/{feature}", LINE_OUT);
    spec.model = &model;
    let cfg = dir.path().join("tags.toml");
    let cfg_text = config(1, "tags", &dir.path().join("never-made"), &[spec], "")
        .replace("hop = 1\n", "hop = 1\ninput_format = \"tag\"\n");
    std::fs::write(&cfg, cfg_text).unwrap();
    let lines: Vec<String> = (fixture.messages.iter().enumerate())
        .map(|(i, m)| {
            let (topic, payload) = tag_message(i, m);
            serde_json::json!({"topic": topic, "payload": payload, "received_ms": m.ts}).to_string()
        })
        .collect();
    let rec = dir.path().join("tags.jsonl");
    std::fs::write(&rec, lines.join("\n")).unwrap();
    let out = dir.path().join("o.jsonl");
    let run = replay(&cfg, &rec, &out, &[]);
    assert!(run.status.success(), "{}", text(&run));
    let scores: Vec<Message> = replayed(&out)
        .into_iter()
        .map(|(topic, payload)| Message {
            topic,
            payload: payload.into_bytes(),
            retain: false,
            received: std::time::Instant::now(),
        })
        .collect();
    let expected = tag_expected(&fixture);
    assert_eq!(scores.len(), expected.len(), "{}", text(&run));
    crate::support::golden::check_scores(
        &scores,
        &expected,
        "press-line",
        "line-mlp",
        crate::support::line::score_topic,
    );
}

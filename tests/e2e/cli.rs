//! The commands a data scientist and a controls engineer run by hand:
//! `check-model` and `check-config`, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::repo_path;

fn lineguard(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lineguard"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lineguard")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn p(rel: &str) -> String {
    repo_path(rel).display().to_string()
}

#[test]
fn check_model_describes_good_models() {
    let o = lineguard(&["check-model", &p("models/line-mlp.onnx")], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "line-mlp (version 4)",
        "`window` f32 [batch, 128]",
        "16 samples x 8 features",
        "spindle_speed, feed_rate, motor_temp",
        "anomaly [batch, 1], quality [batch, 1]",
        "anomaly          <- anomaly[0]  warn >= 0.6  alarm >= 0.9",
        "quality          <- quality[0]  warn <= 0.8  alarm <= 0.65",
        "us per window",
        "OK",
    ] {
        assert!(out.contains(needle), "missing `{needle}` in:\n{out}");
    }
    for (model, needle) in
        [("seq-risk", "[batch, 5, 3]"), ("fixed1", "fixed at 1"), ("sk-mlp", "`X` f32 [batch, 6]")]
    {
        let o = lineguard(&["check-model", &p(&format!("tests/fixtures/models/{model}.onnx"))], &[]);
        assert!(o.status.success() && text(&o).contains(needle), "{model}: {}", text(&o));
    }
}

/// Run check-model on `model` with card text `card`; it must fail saying `needle`.
fn refused(model: &Path, card: &str, needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let card_path = dir.path().join("card.toml");
    std::fs::write(&card_path, card).unwrap();
    let o = lineguard(
        &["check-model", &model.display().to_string(), "--card", &card_path.display().to_string()],
        &[],
    );
    let out = text(&o);
    assert!(!o.status.success(), "accepted a broken model/card ({needle}):\n{out}");
    assert!(out.contains(needle), "message should say `{needle}`:\n{out}");
    assert!(!out.contains("panicked"), "{out}");
}

#[test]
fn check_model_refuses_broken_models_and_cards_saying_why() {
    let line = repo_path("models/line-mlp.onnx");
    let card = std::fs::read_to_string(repo_path("models/line-mlp.toml")).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(card.contains(from), "{from}");
        card.replacen(from, to, 1)
    };
    refused(&line, &edit("window = 16", "window = 12"), "layout \"flat\" needs [batch, 96]");
    refused(&line, &edit("layout = \"flat\"", "layout = \"sequence\""), "needs [batch, 16, 8]");
    refused(
        &line,
        &edit("output = \"quality\"", "output = \"qualty\""),
        "does not have (outputs: anomaly, quality)",
    );
    refused(
        &line,
        &edit("index = 0\nwarn = 0.6", "index = 3\nwarn = 0.6"),
        "reads column 3 of output `anomaly`, which has 1 column",
    );
    refused(&line, &edit("std = [36.23,", "std = [0.0,"), "normalize.std[0] (spindle_speed)");
    refused(&line, &edit("mean = [1197.9, ", "mean = ["), "one mean and one std per feature");
    refused(&line, &edit("\"ambient_humidity\"]", "\"ambient_humidity\", \"extra\"]"), "9 features, 8 means");
    refused(&line, &edit("alarm = 0.9", "alarm = 0.5"), "wrong order");
    refused(&line, &edit("warn = 0.6", "warning = 0.6"), "warning");
    refused(&line, "name = \"x\"\nversion = \"1\"\nfeatures = [\"a\"]\nwindow = 1\n", "scores");
    refused(&line, "this is not toml = [", "card.toml");

    let minimal = "name = \"x\"\nversion = \"1\"\nfeatures = [\"a\", \"b\"]\nwindow = 2\n[scores.y]\n";
    let fixtures = repo_path("tests/fixtures/models");
    refused(&fixtures.join("two-inputs.onnx"), minimal, "one input tensor, the graph has 2 (x, extra)");
    refused(&fixtures.join("int-input.onnx"), minimal, "input `x` is I64; lineguard feeds f32");
    refused(
        &fixtures.join("rank3-output.onnx"),
        &minimal.replace("[scores.y]", "[scores.y3]"),
        "a score output must be [batch, k]",
    );
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"definitely not protobuf").unwrap();
    refused(&junk, minimal, "is not a usable ONNX model");
    refused(&dir.path().join("absent.onnx"), minimal, "cannot read model");
    // No card beside the model.
    std::fs::copy(&line, dir.path().join("orphan.onnx")).unwrap();
    let o = lineguard(&["check-model", &dir.path().join("orphan.onnx").display().to_string()], &[]);
    assert!(!o.status.success() && text(&o).contains("orphan.toml"), "{}", text(&o));
}

const CONFIG: &str = r#"
[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "lineguard-gw01"
username = "lineguard"
password = "hunter2-secret"

[state]
dir = "/tmp/lineguard-state"

[[pipelines]]
name = "press-line"
model = "MODEL"
input_topic = "plant/{line}/{machine}/telemetry"
output_topic = "plant/{line}/{machine}/lineguard/scores"
"#;

fn write_config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineguard.toml");
    std::fs::write(&path, text.replace("MODEL", &p("models/line-mlp.onnx"))).unwrap();
    (dir, path.display().to_string())
}

#[test]
fn check_config_prints_effective_settings_with_secrets_masked() {
    let (_d, path) = write_config(CONFIG);
    let o = lineguard(&["check-config", "--config", &path], &[("LINEGUARD__MQTT__PORT", "2883")]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("hunter2"), "password leaked:\n{out}");
    assert!(out.contains("********"), "{out}");
    assert!(out.contains("port = 2883"), "environment override not applied:\n{out}");
    assert!(out.contains("subscribes `plant/+/+/telemetry` (lineguard payloads, timestamps in ms)"), "{out}");
    assert!(out.contains("hop = 1"), "defaults shown:\n{out}");
}

#[test]
fn check_config_fails_clearly() {
    let cases = [
        (CONFIG.replace("port = 1883", "prot = 1883"), "prot"),
        (
            CONFIG.replace(
                "input_topic = \"plant/{line}/{machine}/telemetry\"",
                "input_topic = \"plant/+/telemetry\"",
            ),
            "pipelines[0].input_topic",
        ),
        (
            CONFIG.replace("\"plant/{line}/{machine}/lineguard/scores\"", "\"plant/{line}/{cell}/scores\""),
            "`{cell}` is not in the input topic",
        ),
        (CONFIG.replace("model = \"MODEL\"", "model = \"/nonexistent/m.onnx\""), "/nonexistent/m.toml"),
        (CONFIG.replace("[mqtt]", "[mqt]"), "mqt"),
        (
            CONFIG.replace("input_topic = ", "input_format = \"sparkplug\"\ninput_topic = "),
            "pipelines[0].input_format",
        ),
        (CONFIG.replace("input_topic = ", "input_format = \"kepwar\"\ninput_topic = "), "kepwar"),
        (CONFIG.replace("input_topic = ", "ts_unit = \"minutes\"\ninput_topic = "), "minutes"),
        // The unit's ExecStartPre: a state.dir the daemon cannot create or write.
        (CONFIG.replace("/tmp/lineguard-state", "/dev/null/state"), "`state.dir`"),
        // A pair needs another instance, and something to replay on a takeover.
        (format!("{CONFIG}\n[redundancy]\nrole = \"backup\"\npeer = \"lineguard-gw01\"\n"), "this instance's own mqtt.client_id"),
        (
            format!("{CONFIG}\n[redundancy]\nrole = \"backup\"\npeer = \"lineguard-gw02\"\ntakeover_replay_secs = 0\n"),
            "redundancy.takeover_replay_secs",
        ),
        (format!("{CONFIG}\n[redundancy]\nrole = \"master\"\npeer = \"lineguard-gw02\"\n"), "master"),
    ];
    for (text_, needle) in cases {
        let (_d, path) = write_config(&text_);
        let o = lineguard(&["check-config", "--config", &path], &[]);
        let out = text(&o);
        assert!(!o.status.success(), "accepted a bad config ({needle}):\n{out}");
        assert!(
            out.contains(needle) && out.contains("lineguard.toml") || needle.starts_with('/'),
            "should name `{needle}` and the file:\n{out}"
        );
        assert!(out.contains(needle), "should name `{needle}`:\n{out}");
    }
    // One value per message needs a `{feature}` level and the card's sampling clock.
    let tags = CONFIG.replace("input_topic = ", "input_format = \"tag\"\ninput_topic = ");
    let (_d, path) = write_config(&tags);
    let o = lineguard(&["check-config", "--config", &path], &[]);
    assert!(!o.status.success() && text(&o).contains("needs a `{feature}` level"), "{}", text(&o));
    let (_d, path) =
        write_config(&tags.replace("plant/{line}/{machine}/telemetry", "uns/{line}/{machine}/{feature}"));
    let o = lineguard(&["check-config", "--config", &path], &[]);
    assert!(
        !o.status.success()
            && text(&o).contains("must set `sample_period_ms`")
            && text(&o).contains("line-mlp.toml"),
        "{}",
        text(&o)
    );
    let (_d, path) = write_config(CONFIG);
    let o = lineguard(&["check-config", "--config", &path], &[("LINEGUARD__MQTT__PORT", "many")]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = lineguard(&["check-config", "--config", "/nonexistent/lineguard.toml"], &[]);
    assert!(!o.status.success() && text(&o).contains("not found"), "{}", text(&o));
}

#[test]
fn check_config_prints_the_redundancy_settings() {
    let (_d, path) =
        write_config(&format!("{CONFIG}\n[redundancy]\nrole = \"backup\"\npeer = \"lineguard-gw02\"\n"));
    let o = lineguard(&["check-config", "--config", &path], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("# redundancy: backup of a pair with `lineguard-gw02` (its status: lineguard/lineguard-gw02/status)")
            && out.contains("keeps 30 s of data time")
            && out.contains("without their own `ts` are refused (no_ts)"),
        "{out}"
    );
}

const ROLLUP: &str = r#"
[[rollups]]
name = "line-health"
pipeline = "press-line"
group = "{line}"
output_topic = "plant/{line}/lineguard/health"
inputs = { anomaly = 1.0 }
weights = { "line1/*" = 2.0 }
method = "worst"
"#;

#[test]
fn check_config_shows_each_rollup_with_the_group_of_an_example_device_and_refuses_bad_ones() {
    let (_d, path) = write_config(&format!("{CONFIG}{ROLLUP}"));
    let o = lineguard(&["check-config", "--config", &path], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("#   rollup `line-health`: groups devices by `{line}`, worst over anomaly×1, every 10 s of data time (stale after 60 s), publishes `plant/{line}/lineguard/health` retained")
            && out.contains("e.g. device `line1/machine1` (of `plant/line1/machine1/telemetry`) -> group `line1` on `plant/line1/lineguard/health`, weight 2"),
        "{out}"
    );
    let cases = [
        (
            ROLLUP.replace("anomaly = 1.0", "anomaly = 1.0, vibes = 1.0"),
            "score `vibes`, which the card does not have",
        ),
        (ROLLUP.replace("\"{line}\"\n", "\"{cell}\"\n"), "rollups[0].group"),
        (
            ROLLUP.replace("plant/{line}/lineguard/health", "plant/{machine}/health"),
            "rollups[0].output_topic",
        ),
        (ROLLUP.replace("pipeline = \"press-line\"", "pipeline = \"other\""), "rollups[0].pipeline"),
        (ROLLUP.replace("anomaly = 1.0", "anomaly = 0.0"), "rollups[0].inputs.anomaly"),
        (ROLLUP.replace("method = \"worst\"", "method = \"mean\""), "mean"),
    ];
    for (rollup, needle) in cases {
        let (_d, path) = write_config(&format!("{CONFIG}{rollup}"));
        let o = lineguard(&["check-config", "--config", &path], &[]);
        assert!(
            !o.status.success() && text(&o).contains(needle),
            "should refuse, naming {needle}:\n{}",
            text(&o)
        );
    }
    // A score without both thresholds cannot be put on the warn..alarm scale.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(p("models/line-mlp.onnx"), dir.path().join("m.onnx")).unwrap();
    let card = std::fs::read_to_string(p("models/line-mlp.toml")).unwrap().replacen("alarm = 0.9\n", "", 1);
    std::fs::write(dir.path().join("m.toml"), card).unwrap();
    let model = dir.path().join("m.onnx").display().to_string();
    let (_d, path) = write_config(&format!("{CONFIG}{ROLLUP}").replace("MODEL", &model));
    let o = lineguard(&["check-config", "--config", &path], &[]);
    assert!(!o.status.success() && text(&o).contains("needs both `warn` and `alarm`"), "{}", text(&o));
}

#[test]
fn check_config_checks_that_http_listen_can_be_bound() {
    let (_d, path) = write_config(CONFIG);
    // Taken by another process (a running daemon, say).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = lineguard(&["check-config", "--config", &path], &[("LINEGUARD__HTTP__LISTEN", &addr)]);
    let out = text(&o);
    assert!(!o.status.success(), "accepted an address in use:\n{out}");
    assert!(out.contains("`http.listen`") && out.contains(&addr) && out.contains("in use"), "{out}");
    // An address this host does not have.
    let o = lineguard(&["check-config", "--config", &path], &[("LINEGUARD__HTTP__LISTEN", "192.0.2.1:9898")]);
    assert!(!o.status.success() && text(&o).contains("cannot listen on 192.0.2.1:9898"), "{}", text(&o));
    drop(taken);
    let o = lineguard(&["check-config", "--config", &path], &[("LINEGUARD__HTTP__LISTEN", &addr)]);
    assert!(
        o.status.success() && text(&o).contains(&format!("# http.listen {addr}: can be bound")),
        "{}",
        text(&o)
    );
}

#[test]
fn every_command_and_option_has_help_text() {
    for cmd in [
        &[][..],
        &["run"],
        &["check-config"],
        &["check-model"],
        &["demo"],
        &["simulate"],
        &["record"],
        &["replay"],
    ] {
        let mut args: Vec<&str> = cmd.to_vec();
        args.push("-h");
        let o = lineguard(&args, &[]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        // clap prints an option without help as its bare name on a line.
        for line in out.lines().filter(|l| l.trim_start().starts_with('-')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            let described = words
                .iter()
                .any(|w| w.chars().next().is_some_and(char::is_alphabetic) && !w.starts_with('<'));
            assert!(described, "`lineguard {} --help`: an option without help: {line}\n{out}", cmd.join(" "));
        }
    }
    let o = lineguard(&["run", "--help"], &[]);
    assert!(text(&o).contains("The configuration file"), "{}", text(&o));
}

#[test]
fn the_shipped_example_config_is_valid_and_matches_the_spec_defaults() {
    let shipped = std::fs::read_to_string(repo_path("deploy/lineguard.toml")).unwrap();
    let shipped = shipped.replace("/usr/share/lineguard/models/line-mlp.onnx", &p("models/line-mlp.onnx"));
    let (_d, path) = write_config(&shipped);
    let o = lineguard(&["check-config", "--config", &path], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for needle in [
        "host = \"127.0.0.1\"",
        "port = 1883",
        "dir = \"/var/lib/lineguard\"",
        "listen = \"127.0.0.1:9898\"",
        "subscribes `plant/+/+/telemetry` (lineguard payloads, timestamps in ms), publishes `plant/{line}/{machine}/lineguard/scores`",
    ] {
        assert!(out.contains(needle), "missing `{needle}`:\n{out}");
    }
}

#[test]
fn check_config_shows_what_an_example_message_turns_into() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_path("models/line-mlp.onnx"), dir.path().join("m.onnx")).unwrap();
    let card = std::fs::read_to_string(repo_path("models/line-mlp.toml")).unwrap();
    std::fs::write(dir.path().join("m.toml"), format!("sample_period_ms = 100\n{card}")).unwrap();
    let model = dir.path().join("m.onnx").display().to_string();
    for (keys, topic, needles) in [
        (
            "input_format = \"telegraf\"\n",
            "plant/{line}/{machine}/telemetry",
            vec![
                "example: `plant/line1/machine1/telemetry` {\"fields\":",
                "-> device `line1/machine1`, ts 1732400000123: spindle_speed=1 feed_rate=2",
            ],
        ),
        (
            "input_format = \"tag\"\n",
            "uns/{line}/{machine}/{feature}",
            vec![
                "example: `uns/line1/machine1/spindle_speed` {\"value\":1,\"timestamp\":1732400000123}",
                "-> device `line1/machine1`, ts 1732400000123: spindle_speed=1\n",
            ],
        ),
        (
            "input_format = \"kepware\"\ntag_id = \"{line}.{machine}.{feature}\"\n",
            "iotgateway",
            vec![
                "{\"id\":\"line1.machine1.torque\",\"v\":7",
                "-> device `line1/machine1`, ts 1732400000123: torque=7",
            ],
        ),
    ] {
        let config = CONFIG
            .replace("plant/{line}/{machine}/telemetry", topic)
            .replace("input_topic = ", &format!("{keys}input_topic = "));
        let path = dir.path().join("lineguard.toml");
        std::fs::write(&path, config.replace("MODEL", &model)).unwrap();
        let o = lineguard(&["check-config", "--config", &path.display().to_string()], &[]);
        let out = text(&o);
        assert!(o.status.success(), "{out}");
        for needle in needles {
            assert!(out.contains(needle), "missing `{needle}`:\n{out}");
        }
    }
}

/// `lineguard demo --format X`: the simulated line publishes in each shape,
/// and every machine is scored end to end (the embedded broker, the daemon,
/// the view), the card on a sampling clock for all but lineguard's own.
#[test]
fn the_demo_scores_every_machine_in_every_format() {
    let runs: Vec<_> = ["lineguard", "telegraf", "tag", "kepware", "opcua-json", "sparkplug"]
        .into_iter()
        .map(|format| {
            std::thread::spawn(move || {
                (format, lineguard(&["demo", "--duration", "3", "--machines", "3", "--format", format], &[]))
            })
        })
        .collect();
    for run in runs {
        let (format, o) = run.join().unwrap();
        let out = text(&o);
        assert!(o.status.success(), "demo --format {format}:\n{out}");
        assert!(out.contains(&format!("{format} payloads")), "{out}");
        let summary = out
            .split("summary:")
            .nth(1)
            .unwrap_or_else(|| panic!("demo --format {format}: no summary:\n{out}"));
        let machines: Vec<&str> =
            summary.lines().filter(|l| l.contains(" fault ") && l.contains(" windows ")).collect();
        assert_eq!(machines.len(), 3, "demo --format {format}: a summary line per machine:\n{out}");
        for line in machines {
            let windows: u64 =
                line.split("windows").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
            assert!(windows > 0, "demo --format {format}: {line}");
        }
    }
}

/// `lineguard demo`: as each injected fault ramps up, its machine is seen
/// in `warn` for a stretch before `alarm` (the shipped model's anomaly head
/// is calibrated to the fault's severity), the first repaired machine comes
/// back to `ok`, and the healthy machine never alarms.
#[test]
fn the_demo_shows_each_fault_developing_warn_before_alarm() {
    let o = lineguard(&["demo", "--duration", "45"], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("watch it from another terminal: mosquitto_sub"), "{out}");
    assert!(out.contains("status page: http://127.0.0.1:"), "{out}");
    let summary = out.split("summary:").nth(1).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let field = |line: &str, name: &str| -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let i = words.iter().position(|w| *w == name).unwrap_or_else(|| panic!("no `{name}` in {line}"));
        words[i + 1].to_string()
    };
    let lines: Vec<&str> = summary.lines().filter(|l| l.contains(" fault ")).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for line in lines {
        let device = line.split_whitespace().next().unwrap();
        let alarms: u64 = field(line, "alarm").parse().unwrap();
        if field(line, "fault") == "none" {
            assert_eq!(alarms, 0, "the healthy machine alarmed: {line}");
            assert_eq!(field(line, "worst"), "ok", "{line}");
            continue;
        }
        assert!(alarms > 0, "{device}: its fault never raised an alarm: {line}\n{out}");
        let before: u64 = field(line, "warn-before-alarm").parse().unwrap();
        assert!(before >= 5, "{device}: only {before} warn windows before the alarm: {line}\n{out}");
        if device == "line1/press2" {
            // Its fault is repaired 38 s in.
            assert_eq!(
                field(line, "ok-after-alarm"),
                "yes",
                "{device}: not back to ok after the repair: {line}"
            );
        }
    }
    // The shipped card forecasts: the table counts down to the alarm, each
    // line has its health index and driver, and the summary says how early
    // the first forecast of each fault's alarm came.
    assert!(out.contains("alarm in  state"), "{out}");
    assert!(
        out.contains("line1 health ") && out.contains("line2 health ") && out.contains("driven by line"),
        "{out}"
    );
    let forecasts = out.split("forecasts:").nth(1).unwrap_or_else(|| panic!("no forecast summary:\n{out}"));
    let early: Vec<&str> = forecasts.lines().filter(|l| l.contains("s before the alarm: said in")).collect();
    assert!(early.len() >= 4, "most faults forecast before their alarm:\n{forecasts}");
}

/// `lineguard demo --redundant`: the primary is killed and brought back,
/// the backup covers the gap and hands back, and every window of every
/// machine is published at least once, each duplicate equal to its first
/// copy; the summary says so and the run exits 0.
#[test]
fn the_redundant_demo_scores_every_window_through_a_failover_and_back() {
    let o = lineguard(&["demo", "--redundant", "--duration", "30", "--machines", "3"], &[]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("lineguard-demo-primary: killed (kill -9)"), "{out}");
    assert!(out.contains("lineguard-demo-backup: active: publishing"), "the backup never took over:\n{out}");
    assert!(out.contains("lineguard-demo-primary: started again"), "{out}");
    let summary = out.split("summary:").nth(1).unwrap_or_else(|| panic!("no summary:\n{out}"));
    let first = summary.lines().next().unwrap();
    assert!(first.contains("(3 machines, every window of each: yes)"), "{first}");
    assert!(first.contains("(0 differing from the first copy)"), "{first}");
    assert!(first.contains(", 2 failovers, gaps: 0"), "a failover and a handback:\n{out}");
    let duplicates: u64 =
        first.split(" duplicates").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(duplicates > 0, "the backup replayed nothing it kept: {first}");
    for line in summary.lines().skip(1).filter(|l| l.contains(" windows of ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (n, of): (u64, u64) =
            (words[1].parse().unwrap(), words[4].trim_end_matches(',').parse().unwrap());
        // 30 s at 10 Hz, less the first window's 15 samples.
        assert!(of >= 250 && n == of, "{line}");
    }
}

/// `lineguard record`: every pipeline's telemetry, as it arrives, one JSON
/// line per message (text as text, anything else as base64), under its own
/// client id, so the daemon's session is not touched.
#[test]
fn record_writes_each_telemetry_message_as_a_json_line() {
    use std::time::Duration;
    let broker = crate::support::broker::Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("port = 1883", &format!("port = {}", broker.port));
    let (_d, path) = write_config(&config);
    let output = dir.path().join("recording.jsonl");
    let before = crate::support::daemon::now_ms();
    let child = Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["record", "--config", &path, "--output", output.to_str().unwrap(), "--duration", "6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its subscription is in place once a retained message comes back to it:
    // publish until one line is recorded.
    let mut p = crate::support::mqtt::Publisher::new(broker.port);
    crate::support::wait_until("the recorder subscribed", Duration::from_secs(5), || {
        p.publish("plant/l1/m1/telemetry", "probe");
        p.flush(Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&output).is_ok_and(|t| t.contains("probe"))
            || std::fs::metadata(&output).is_ok_and(|m| m.len() > 0)
    });
    p.publish("plant/l1/m2/telemetry", r#"{"ts":1,"values":{"torque":1}}"#);
    p.publish("plant/l1/m2/telemetry", vec![0xff, 0x00, 0x10]);
    p.publish("other/topic", "not recorded");
    p.flush(Duration::from_secs(5));
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("recorded"), "{text}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let after = crate::support::daemon::now_ms();
    assert!(lines.iter().all(|l| l["topic"].as_str().unwrap().starts_with("plant/")), "{lines:?}");
    let m2: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["topic"] == "plant/l1/m2/telemetry").collect();
    assert_eq!(m2.len(), 2, "{lines:?}");
    assert_eq!(m2[0]["payload"], r#"{"ts":1,"values":{"torque":1}}"#);
    assert_eq!(m2[1]["payload_b64"], "/wAQ");
    assert!(m2[1].get("payload").is_none());
    for l in &lines {
        let t = l["received_ms"].as_i64().unwrap();
        assert!(before <= t && t <= after, "{l}");
    }
}

/// `GET path` on `addr`: the body.
fn http_body(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the status page");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: lineguard\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// What a new user sees on the demo's status page: an input is named as
/// drifting only once an injected fault that moves it has begun (the line
/// runs steadier than the training set, which is not drift).
#[test]
fn the_demo_names_no_drifting_input_that_no_fault_has_moved() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["demo", "--duration", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("the demo prints its status page").unwrap();
        if let Some(rest) = line.split("status page: http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    // Which faults move which inputs, and when each begins (src/tools/sim.rs:
    // machine i > 0 develops fault i - 1 from 3 + 5(i - 1) s).
    let moved_from = |feature: &str| -> f64 {
        match feature {
            "motor_temp" | "vibration_rms" | "motor_current" => 3.0, // bearing wear, press2
            "torque" => 8.0,                                         // coolant loss, press3
            "spindle_speed" => 13.0,                                 // tool wear, lathe1
            "feed_rate" | "hydraulic_pressure" => 18.0,              // hydraulic leak, lathe2
            _ => f64::INFINITY,
        }
    };
    let mut seen = Vec::new();
    while started.elapsed() < std::time::Duration::from_secs(28) {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let body = http_body(&addr, "/devices");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
        let t = started.elapsed().as_secs_f64();
        for f in v["pipelines"][0]["drifting"].as_array().into_iter().flatten() {
            let f = f.as_str().unwrap();
            assert!(
                moved_from(f) < t,
                "at {t:.0} s the page names {f} as drifting; no fault has moved it yet"
            );
        }
        seen.push(v["pipelines"][0]["drifting"].clone());
    }
    assert!(seen.len() >= 10, "the status page answered: {seen:?}");
    assert!(child.wait().unwrap().success());
}

/// Whether this test runs as root (who writes any file, whatever its mode).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap()
}

/// `lineguard args` as a service user would run it: as `nobody` (through
/// util-linux's `setpriv`) when the test runs as root, else as this user.
fn as_service_user(args: &[&str], env: &[(&str, &str)]) -> Output {
    let bin = env!("CARGO_BIN_EXE_lineguard");
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
        c
    } else {
        Command::new(bin)
    };
    let mut child = c
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run lineguard through setpriv (util-linux): {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "lineguard {args:?} still running after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// State the service user cannot write is refused by `check-config` and by
/// `run` alike, naming the path and what to change: a `state.redb` of mode
/// 0444 in a writable `state.dir`, and a read-only `state.dir` holding a
/// writable `state.redb`.
#[test]
fn state_the_service_user_cannot_write_is_refused_naming_the_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("lineguard.toml");
    std::fs::write(&config, CONFIG.replace("MODEL", &p("models/line-mlp.onnx"))).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let give = |path: &Path, mode: u32| {
        if is_root() {
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let cases = [("read-only-file", 0o755, 0o444), ("read-only-dir", 0o555, 0o666)];
    for (name, dir_mode, file_mode) in cases {
        let state = dir.path().join(name);
        std::fs::create_dir(&state).unwrap();
        let store = state.join("state.redb");
        std::fs::write(&store, b"").unwrap();
        give(&store, file_mode);
        give(&state, dir_mode);
        let listen = format!("127.0.0.1:{}", lineguard::tools::broker::free_port().unwrap());
        let env = [
            ("LINEGUARD__STATE__DIR", state.to_str().unwrap()),
            ("LINEGUARD__HTTP__LISTEN", listen.as_str()),
        ];
        let named =
            if file_mode == 0o444 { store.display().to_string() } else { state.display().to_string() };
        for command in ["check-config", "run"] {
            let o = as_service_user(&[command, "--config", config.to_str().unwrap()], &env);
            let out = text(&o);
            assert!(!o.status.success(), "{name}: {command} accepted state it cannot write:\n{out}");
            assert!(
                out.contains(&named) && (out.contains("chown") || out.contains("chmod")),
                "{name}: {command} should name {named} and what to change:\n{out}"
            );
        }
    }
}

//! Running it like plant equipment: /metrics and /healthz, the systemd
//! notify protocol (READY, WATCHDOG, STATUS), and the unit file.

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::Golden;
use crate::support::line::line_pipeline;
use crate::support::mqtt::{Publisher, Subscriber};
use crate::support::wait_until;

#[test]
fn metrics_and_healthz_tell_an_operator_what_is_going_on() {
    let mut broker = Broker::mosquitto().start();
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(broker.port, "lg-metrics", state.path(), &[line_pipeline()], ""));
    let status = Subscriber::new(broker.port, &["lineguard/lg-metrics/status"]);
    status.wait_for("lineguard/lg-metrics/status", "\"online\"", Duration::from_secs(30));
    wait_until("healthz 200", Duration::from_secs(10), || daemon.http_get("/healthz").0 == 200);
    assert_eq!(daemon.http_get("/healthz").1, "ok\n");

    let golden = Golden::load("models/fixtures/line-mlp.golden.json");
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    for (device, s) in golden.interleaved() {
        p.publish(&format!("plant/{device}/telemetry"), Golden::payload(s));
    }
    p.publish("plant/line9/m1/telemetry", "not json");
    p.flush(Duration::from_secs(10));
    let got = scores.collect(100, Duration::from_secs(30), Duration::ZERO, |_| true);
    assert_eq!(got.len(), 100);

    let (code, body) = daemon.http_get("/metrics");
    assert_eq!(code, 200);
    let sha = {
        use sha2::Digest;
        format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(crate::support::repo_path("models/line-mlp.onnx")).unwrap())
        )
    };
    let has = |needle: &str| assert!(body.contains(needle), "/metrics lacks `{needle}`:\n{body}");
    has("lineguard_messages_total{pipeline=\"press-line\"} 161");
    has("lineguard_rejected_total{pipeline=\"press-line\",reason=\"invalid_json\"} 1");
    has("lineguard_windows_scored_total{pipeline=\"press-line\"} 100");
    has("lineguard_inference_seconds_bucket{pipeline=\"press-line\",le=");
    has("lineguard_batch_size_bucket{pipeline=\"press-line\",le=");
    has("lineguard_outbox_scores");
    has("lineguard_connection_up{connection=\"telemetry\"} 1");
    has("lineguard_connection_up{connection=\"scores\"} 1");
    has("lineguard_devices{pipeline=\"press-line\"} 4");
    has(&format!(
        "lineguard_model_info{{pipeline=\"press-line\",model=\"line-mlp\",version=\"4\",sha256=\"{sha}\"}} 1"
    ));
    has("lineguard_scores_total{pipeline=\"press-line\",state=\"alarm\"}");
    has("lineguard_scores_total{pipeline=\"press-line\",state=\"ok\"}");
    has("lineguard_scores_published_total");

    // Broker gone: 503 with the reason, and reconnects counted.
    broker.kill();
    wait_until("healthz 503", Duration::from_secs(20), || daemon.http_get("/healthz").0 == 503);
    assert!(daemon.http_get("/healthz").1.contains("broker not connected"));
    wait_until("reconnects counted", Duration::from_secs(10), || {
        !daemon
            .http_get("/metrics")
            .1
            .contains("lineguard_connection_reconnects_total{connection=\"telemetry\"} 0")
    });
    assert!(daemon.http_get("/metrics").1.contains("lineguard_connection_up{connection=\"telemetry\"} 0"));
}

/// `# TYPE` lines of a Prometheus text exposition: family -> type.
fn families(body: &str) -> std::collections::BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

/// The families the README's metric table lists: family -> type.
fn readme_families() -> std::collections::BTreeMap<String, String> {
    let readme = std::fs::read_to_string(crate::support::repo_path("README.md")).unwrap();
    let table =
        readme.split("| metric | type | labels | meaning |").nth(1).expect("README has the metric table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

#[test]
fn metrics_pass_promtool_and_match_the_readme() {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(broker.port, "lg-promtool", state.path(), &[line_pipeline()], ""));
    crate::support::line::wait_online(&broker, "lg-promtool");
    // Scores, so that the histograms have samples too.
    let golden = Golden::load("models/fixtures/line-mlp.golden.json");
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    crate::support::line::publish_interleaved(&mut Publisher::new(broker.port), &golden);
    assert!(!scores.collect(1, Duration::from_secs(30), Duration::ZERO, |_| true).is_empty());
    let body = daemon.http_get("/metrics").1;

    // promtool: every family has HELP and a TYPE, names follow the conventions.
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test (Debian: package prometheus; `tests/run` installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let lint = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && lint.trim().is_empty(), "promtool check metrics:\n{lint}\n{body}");

    // Labelled counters exist at 0 before their first event.
    for zero in [
        "lineguard_outbox_dropped_total{reason=\"bytes\"} 0",
        "lineguard_devices_evicted_total{pipeline=\"press-line\",reason=\"capacity\"} 0",
        "lineguard_model_reloads_total{pipeline=\"press-line\",result=\"refused\"} 0",
        "lineguard_inference_errors_total{pipeline=\"press-line\"} 0",
        "lineguard_rejected_total{pipeline=\"press-line\",reason=\"late\"} 0",
        "lineguard_publishes_refused_total{reason=\"not authorized\"} 0",
        "lineguard_alarms_published_total 0",
    ] {
        assert!(body.contains(zero), "/metrics lacks `{zero}`:\n{body}");
    }
    let version = format!("lineguard_build_info{{version=\"{}\",", env!("CARGO_PKG_VERSION"));
    assert!(body.lines().any(|l| l.starts_with(&version) && l.ends_with(" 1")), "{body}");
    let rss = body
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no process_resident_memory_bytes:\n{body}"));
    assert!(rss > 1e6, "resident memory {rss}");
    for c in ["telemetry", "scores"] {
        assert!(body.contains(&format!("lineguard_connection_up{{connection=\"{c}\"}} 1")), "{body}");
    }

    // The README's table is what is exported, with the same types (the
    // shadow model's families exist only with a shadow_model, the roll-up
    // index with [[rollups]]: the forecast test reads it from its daemon).
    let mut readme = readme_families();
    readme.retain(|name, _| !name.starts_with("lineguard_shadow_") && name != "lineguard_rollup_index");
    assert_eq!(readme, families(&body), "README's metric table vs /metrics");

    dashboard_queries_parse_and_are_exported(&body);
}

/// The shipped Grafana dashboard: importable (asks for the Prometheus data
/// source), an `instance` variable, a unit on every panel, instant queries
/// for tables and stats; every expression parses (`promtool check rules`)
/// and every metric it reads is in `body`.
fn dashboard_queries_parse_and_are_exported(body: &str) {
    let text = std::fs::read_to_string(crate::support::repo_path("deploy/grafana-lineguard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus", "no Prometheus input to ask for on import");
    let input = format!("${{{}}}", d["__inputs"][0]["name"].as_str().unwrap());
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["name"] == "instance"), "no instance variable");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], input.as_str(), "{title}: data source is not the import's input");
        assert!(p["fieldConfig"]["defaults"]["unit"].is_string(), "{title}: no unit");
        for t in p["targets"].as_array().unwrap() {
            if matches!(p["type"].as_str(), Some("table" | "stat")) {
                assert_eq!(t["instant"], true, "{title}: a table or stat needs an instant query");
            }
            let expr = t["expr"].as_str().unwrap();
            exprs.push(expr.to_string());
            let concrete = expr.replace("$instance", ".*").replace("$__rate_interval", "5m");
            rules.push_str(&format!(
                "      - record: dashboard:{}\n        expr: {}\n",
                exprs.len(),
                serde_json::to_string(&concrete).unwrap()
            ));
        }
    }
    assert!(exprs.iter().any(|e| e.contains("lineguard_connection_up")), "connections are not shown");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new("promtool").args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "a dashboard expression does not parse:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut queried: Vec<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("lineguard_") || w.starts_with("process_"))
        .collect();
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 15, "{queried:?}");
    assert!(queried.contains(&"lineguard_feature_mean_z"), "input drift is not shown");
    // The shadow model's families exist only with a shadow_model (as in
    // the README check above); the shadow test reads them from its daemon.
    for m in queried.into_iter().filter(|m| !m.starts_with("lineguard_shadow_")) {
        assert!(
            body.contains(&format!("{m}{{")) || body.contains(&format!("{m} ")),
            "dashboard queries {m}, not exported"
        );
    }
}

#[test]
fn systemd_notify_ready_watchdog_status_and_stopping() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut daemon = Daemon::start_with_env(
        &config(broker.port, "lg-notify", dir.path(), &[line_pipeline()], ""),
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")],
    );
    let mut seen: Vec<String> = Vec::new();
    let mut read_until = |want: &str, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let found = msg.lines().any(|l| l.starts_with(want));
                seen.push(msg);
                if found {
                    return;
                }
            }
        }
        panic!("no `{want}` from the daemon; got {seen:?}");
    };
    read_until("READY=1", Duration::from_secs(30));
    read_until("WATCHDOG=1", Duration::from_secs(3));
    read_until("WATCHDOG=1", Duration::from_secs(3));
    read_until("STATUS=connected", Duration::from_secs(3));
    let status = daemon.sigterm(Duration::from_secs(20));
    assert!(status.success());
    read_until("STOPPING=1", Duration::from_secs(3));
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(crate::support::repo_path("systemd/lineguard.service")).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "User=lineguard",
        "StateDirectory=lineguard",
        "ConfigurationDirectory=lineguard",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "MemoryMax=",
        "LoadCredential=mqtt-password:",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lineguard.service");
    // Point ExecStart at the binary under test: verify checks that it exists.
    std::fs::write(&path, unit.replace("/usr/bin/lineguard", env!("CARGO_BIN_EXE_lineguard"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze is needed for this test (Debian: package systemd)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify failed:\n{text}");
    assert!(!text.contains("lineguard.service:"), "warnings about the unit:\n{text}");
}

#[test]
fn alarm_states_are_debounced_and_retained_per_device() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // The shipped model with a card asking for hysteresis and a 3-window debounce.
    let model = dir.path().join("line-mlp.onnx");
    std::fs::copy(crate::support::repo_path("models/line-mlp.onnx"), &model).unwrap();
    let card = std::fs::read_to_string(crate::support::repo_path("models/line-mlp.toml")).unwrap();
    let card = card.replacen("warn = 0.6\n", "warn = 0.6\nclear = 0.3\ndebounce = 3\n", 1);
    std::fs::write(dir.path().join("line-mlp.toml"), card).unwrap();
    let text = config(
        broker.port,
        "lg-alarm",
        &dir.path().join("state"),
        &[PipelineSpec::new(
            "press-line",
            model.to_str().unwrap(),
            "plant/{line}/{machine}/telemetry",
            "plant/{line}/{machine}/lineguard/scores",
        )],
        "",
    )
    .replace("hop = 1\n", "hop = 1\nalarm_topic = \"plant/{line}/{machine}/lineguard/alarm\"\n");
    let daemon = Daemon::start(&text);
    Subscriber::new(broker.port, &["lineguard/lg-alarm/status"]).wait_for(
        "lineguard/lg-alarm/status",
        "\"online\"",
        Duration::from_secs(30),
    );
    let live = Subscriber::new(broker.port, &["plant/+/+/lineguard/alarm"]);
    let golden = Golden::load("models/fixtures/line-mlp.golden.json");
    let mut p = Publisher::new(broker.port);
    for (device, s) in golden.interleaved() {
        p.publish(&format!("plant/{device}/telemetry"), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let transitions = live.collect(usize::MAX, Duration::from_secs(3), Duration::ZERO, |_| true);

    // Per device: the first message has no previous state, each later one
    // starts where the last ended, and anomaly alarms need 3 windows in a row.
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    for m in &transitions {
        let j = m.json();
        let device = j["device"].as_str().unwrap().to_string();
        match last.get(&device) {
            None => assert!(j["previous"].is_null(), "first state of {device}: {j}"),
            Some(prev) => assert_eq!(j["previous"], prev.as_str(), "{j}"),
        }
        assert_ne!(j["previous"], j["state"], "only changes are published: {j}");
        last.insert(device, j["state"].as_str().unwrap().to_string());
    }
    assert_eq!(last.len(), 4, "every device reports its state: {last:?}");
    assert_eq!(last["line1/press1"], "ok", "healthy reference");
    assert_eq!(last["line1/press2"], "alarm", "bearing wear");
    // A dashboard that connects later sees each device's current state, retained.
    let late = Subscriber::new(broker.port, &["plant/+/+/lineguard/alarm"]);
    let retained = late.collect(4, Duration::from_secs(5), Duration::from_millis(300), |m| m.retain);
    assert_eq!(retained.len(), 4);
    for m in retained {
        let j = m.json();
        assert_eq!(j["state"], last[j["device"].as_str().unwrap()].as_str(), "{j}");
    }
    drop(daemon);
}

/// Under systemd, stderr is the journal and `JOURNAL_STREAM` names it: each
/// line carries its priority (sd-daemon(3) `<N>` prefix, which journald's
/// stream reader turns into PRIORITY=), so `journalctl -p warning` finds
/// the warnings. Anywhere else the same variable changes nothing.
#[test]
fn under_journald_every_line_carries_its_priority() {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // No broker on this port: the connection warns (priority 4) while the
    // start-up logs at info (6) and debug (7).
    let port = lineguard::tools::broker::free_port().unwrap();
    let path = dir.path().join("lineguard.toml");
    std::fs::write(&path, config(port, "lg-journal", dir.path(), &[line_pipeline()], "")).unwrap();
    let run = |journal_stream: Option<&dyn Fn(&std::fs::Metadata) -> String>| {
        let (mut reader, writer) = std::io::pipe().unwrap();
        let meta = std::fs::File::from(writer.as_fd().try_clone_to_owned().unwrap()).metadata().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lineguard"));
        cmd.args(["run", "--config"]).arg(&path).stderr(writer).stdout(std::process::Stdio::null());
        cmd.env_remove("JOURNAL_STREAM");
        if let Some(value) = journal_stream {
            cmd.env("JOURNAL_STREAM", value(&meta));
        }
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut log = String::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline && !log.contains("broker connection lost or refused") {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => log.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        log
    };
    let journal = run(Some(&|m: &std::fs::Metadata| format!("{}:{}", m.dev(), m.ino())));
    let warn = journal
        .lines()
        .find(|l| l.contains("broker connection lost or refused"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(warn.starts_with("<4>"), "a warning without priority 4: {warn}\n{journal}");
    assert!(journal.lines().any(|l| l.starts_with("<6>")), "no info at priority 6:\n{journal}");
    assert!(journal.lines().any(|l| l.starts_with("<7>")), "no debug at priority 7:\n{journal}");
    assert!(journal.lines().all(|l| l.starts_with('<')), "a line without priority:\n{journal}");
    // Inherited, but naming another stream: plain lines.
    let elsewhere = run(Some(&|m: &std::fs::Metadata| format!("{}:{}", m.dev(), m.ino() + 1)));
    assert!(elsewhere.contains("broker connection lost or refused"), "{elsewhere}");
    assert!(!elsewhere.lines().any(|l| l.starts_with("<")), "{elsewhere}");
}

/// Input drift: a stream whose motor temperature runs 5 training standard
/// deviations high (every other feature as trained: mean 0, deviation 1 in
/// the model's units) is named in the retained drift summary, alone, and in
/// the drift gauges.
#[test]
fn a_feature_that_drifts_is_named_in_the_retained_summary_and_no_other() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let extra_pipeline_keys = "drift_interval_secs = 1\ndrift_half_life = 1000\n";
    let text = config(broker.port, "lg-drift", dir.path(), &[line_pipeline()], "") + extra_pipeline_keys;
    let daemon = Daemon::start(&text);
    crate::support::line::wait_online(&broker, "lg-drift");
    let topic = "lineguard/lg-drift/drift/press-line";
    let summaries = Subscriber::new(broker.port, &[topic]);
    let card: toml::Value =
        toml::from_str(&std::fs::read_to_string(crate::support::repo_path("models/line-mlp.toml")).unwrap())
            .unwrap();
    let floats = |k: &str| -> Vec<f64> {
        card["normalize"][k].as_array().unwrap().iter().map(|v| v.as_float().unwrap()).collect()
    };
    let (mean, std) = (floats("mean"), floats("std"));
    let features: Vec<String> =
        card["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let hot = features.iter().position(|f| f == "motor_temp").unwrap();
    let mut p = Publisher::new(broker.port);
    for i in 0..100i64 {
        let u = if i % 2 == 0 { 1.0 } else { -1.0 };
        for d in 0..4 {
            let values: serde_json::Map<String, serde_json::Value> = features
                .iter()
                .enumerate()
                .map(|(f, name)| {
                    let z = u + if f == hot { 5.0 } else { 0.0 };
                    (name.clone(), (mean[f] + z * std[f]).into())
                })
                .collect();
            let payload = serde_json::json!({"ts": 1_732_400_000_000i64 + i * 100, "values": values});
            p.publish(&format!("plant/line1/m{d}/telemetry"), payload.to_string());
        }
    }
    p.flush(Duration::from_secs(10));
    // The summary once all 400 samples are in.
    let deadline = Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let m = summaries
            .next(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| panic!("no drift summary naming motor_temp; log:\n{}", daemon.log()));
        let v = m.json();
        if v["drifting"].as_array().is_some_and(|d| !d.is_empty())
            && (v["features"]["motor_temp"]["mean_z"].as_f64().unwrap_or(0.0) - 5.0).abs() < 0.05
        {
            break v;
        }
    };
    assert_eq!(summary["drifting"], serde_json::json!(["motor_temp"]), "{summary}");
    assert_eq!(summary["pipeline"], "press-line");
    for f in &features {
        let d = &summary["features"][f];
        let (m, s) = (d["mean_z"].as_f64().unwrap(), d["std_z"].as_f64().unwrap());
        let want = if f == "motor_temp" { 5.0 } else { 0.0 };
        assert!((m - want).abs() < 0.05 && (s - 1.0).abs() < 0.05, "{f}: mean {m}, std {s}: {summary}");
    }
    // Retained: a dashboard that subscribes later still gets it.
    let late = Subscriber::new(broker.port, &[topic]);
    let m = late.wait_for(topic, "\"drifting\":[\"motor_temp\"]", Duration::from_secs(10));
    assert!(m.retain, "the drift summary is retained");
    let metrics = daemon.http_get("/metrics").1;
    let gauge = |name: &str, feature: &str| -> f64 {
        let prefix = format!("{name}{{pipeline=\"press-line\",feature=\"{feature}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)
    };
    assert!((gauge("lineguard_feature_mean_z", "motor_temp") - 5.0).abs() < 0.05, "{metrics}");
    assert!(gauge("lineguard_feature_mean_z", "torque").abs() < 0.05, "{metrics}");
    assert!((gauge("lineguard_feature_std_z", "torque") - 1.0).abs() < 0.05, "{metrics}");
    assert!(metrics
        .contains("lineguard_feature_out_of_range_total{pipeline=\"press-line\",feature=\"torque\"} 0"));
}

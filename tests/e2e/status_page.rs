//! The status page and `/devices`, as an operator sees them: a running
//! daemon with devices in ok, warn and alarm, its page opened in a real
//! headless Chromium (no console errors, every device with its state, and
//! the page updating itself when a state changes, what drove a device's
//! alarm on its row), and `/devices` agreeing with the scores on MQTT,
//! explanations included.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::chromium::Page;
use crate::support::daemon::{config, Daemon, PipelineSpec};
use crate::support::golden::Golden;
use crate::support::line::{
    copy_model, is_score, line_topic, publish_interleaved, wait_online, LINE_GOLDEN, LINE_IN, LINE_OUT,
};
use crate::support::mqtt::{Publisher, Subscriber};
use serde_json::Value;

/// The shipped model with a card that grades only quality (warn below 0.8,
/// alarm below 0.65): the golden stream's last windows then leave
/// press1 and press2 ok, press3 warn and lathe1 in alarm.
fn graded_model(dir: &std::path::Path) -> String {
    let model = copy_model(dir);
    let card = std::fs::read_to_string(dir.join("line-mlp.toml")).unwrap();
    // Without thresholds, anomaly has nothing to forecast.
    let card = card.replacen("warn = 0.6\nalarm = 0.9\n", "", 1).replacen("\nforecast_secs = 16\n", "\n", 1);
    assert!(!card.contains("alarm = 0.9"), "the shipped card changed: adjust this test");
    std::fs::write(dir.join("line-mlp.toml"), card).unwrap();
    model.display().to_string()
}

/// Each device's newest score message on MQTT.
fn newest_scores(messages: &[crate::support::mqtt::Message]) -> BTreeMap<String, Value> {
    let mut newest: BTreeMap<String, Value> = BTreeMap::new();
    for m in messages {
        let v = m.json();
        let device = v["device"].as_str().unwrap().to_string();
        if newest.get(&device).is_none_or(|old| old["ts"].as_i64() < v["ts"].as_i64()) {
            newest.insert(device, v);
        }
    }
    newest
}

fn devices(daemon: &Daemon, query: &str) -> Value {
    let (code, body) = daemon.http_get(&format!("/devices{query}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/devices is not JSON ({e}): {body}"))
}

const STATES_JS: &str = "JSON.stringify(Object.fromEntries([...document.querySelectorAll('tr[data-device]')]\
    .map(r => [r.dataset.device, r.dataset.state])))";

#[test]
fn the_status_page_shows_every_device_with_its_state_and_follows_changes() {
    let broker = Broker::mosquitto().start();
    let dir = tempfile::tempdir().unwrap();
    let model = graded_model(dir.path());
    let pipeline = PipelineSpec::new("press-line", &model, LINE_IN, LINE_OUT);
    // A drift summary every second, to compare the page's drifting inputs with.
    let text = config(broker.port, "lg-page", dir.path(), &[pipeline], "")
        // The golden stream is short and its faults are few: with a mean
        // threshold of 0.3 training deviations, its two most moved inputs
        // drift (hydraulic_pressure and spindle_speed, mean_z 0.35 and -0.33).
        .replace("hop = 1\n", "hop = 1\ndrift_interval_secs = 1\ndrift_mean_z = 0.3\n");
    let daemon = Daemon::start(&text);
    wait_online(&broker, "lg-page");

    let golden = Golden::load(LINE_GOLDEN);
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    publish_interleaved(&mut p, &golden);
    let got =
        scores.collect(golden.windows.len(), Duration::from_secs(30), Duration::from_millis(300), is_score);
    assert_eq!(got.len(), golden.windows.len());
    let newest = newest_scores(&got);
    let want: BTreeMap<&str, &str> =
        [("line1/press1", "ok"), ("line1/press2", "ok"), ("line1/press3", "warn"), ("line2/lathe1", "alarm")]
            .into();
    for (d, s) in &want {
        assert_eq!(newest[*d]["state"], *s, "{d} on MQTT: {}", newest[*d]);
    }

    // /devices agrees with MQTT, worst first, and filters.
    let all = devices(&daemon, "");
    let listed = all["devices"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "{all}");
    assert_eq!(listed[0]["device"], "line2/lathe1", "worst first: {all}");
    assert_eq!(listed[1]["device"], "line1/press3", "worst first: {all}");
    for d in listed {
        let name = d["device"].as_str().unwrap();
        let mqtt = &newest[name];
        assert_eq!(d["state"], mqtt["state"], "{name}");
        assert_eq!(d["scored_ts"], mqtt["ts"], "{name}");
        assert_eq!(d["ts"], mqtt["ts"], "{name}: newest sample");
        for score in ["anomaly", "quality"] {
            let (a, b) = (d["scores"][score].as_f64().unwrap(), mqtt["scores"][score].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{name} {score}: /devices {a}, MQTT {b}");
        }
        assert_eq!((d["window_fill"].as_u64(), d["window"].as_u64()), (Some(16), Some(16)), "{name}");
        assert_eq!(
            d["trend"]["quality"].as_array().unwrap().len(),
            25,
            "{name}: one point per scored window"
        );
        assert!(d["last_seen_ms"].as_i64().unwrap() > 0, "{name}");
        // What drove it: the score payload's explanation, as published (by
        // default warn and alarm windows are explained, ok ones not).
        assert_eq!(d.get("explain"), mqtt.get("explain"), "{name}: /devices {d}\nMQTT {mqtt}");
        assert_eq!(d.get("explain").is_some(), mqtt["state"] != "ok", "{name}: {d}");
    }
    // The inputs that drift: what the retained drift summary names.
    let drift_topic = "lineguard/lg-page/drift/press-line";
    let after = crate::support::daemon::now_ms();
    let summary = Subscriber::new(broker.port, &[drift_topic]);
    let (named, features) = loop {
        let m = summary.next(Duration::from_secs(10)).expect("a drift summary every second");
        if m.json()["ts"].as_i64().unwrap() > after {
            break (m.json()["drifting"].clone(), m.json()["features"].clone());
        }
    };
    assert!(
        named.as_array().is_some_and(|a| !a.is_empty()),
        "the golden stream's faults move some inputs past drift_mean_z = 0.3: {named} {features}"
    );
    let drifting = devices(&daemon, "")["pipelines"][0]["drifting"].clone();
    assert_eq!(drifting, named, "/devices and the drift summary");
    assert_eq!(all["connections"]["telemetry"], true, "{all}");
    assert_eq!(all["connections"]["scores"], true, "{all}");
    assert_eq!(all["pipelines"][0]["model"], "line-mlp", "{all}");
    let warn = devices(&daemon, "?state=warn,alarm&pipeline=press-line");
    let names: Vec<&str> =
        warn["devices"].as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap()).collect();
    assert_eq!(names, ["line2/lathe1", "line1/press3"]);
    assert!(devices(&daemon, "?pipeline=other")["devices"].as_array().unwrap().is_empty());
    assert_eq!(daemon.http_get("/devices?state=purple").0, 400);

    // The page, in a real browser.
    let mut page = Page::open(&format!("http://{}/", daemon.http_addr()));
    let shown = page.wait_for("the page lists the devices", STATES_JS, Duration::from_secs(20), |v| {
        serde_json::from_str::<BTreeMap<String, String>>(v.as_str().unwrap_or("{}"))
            .is_ok_and(|m| m.len() == 4)
    });
    let shown: BTreeMap<String, String> = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown.iter().map(|(d, s)| (d.as_str(), s.as_str())).collect::<BTreeMap<_, _>>(), want);
    let fits = page.eval(
        "JSON.stringify([innerWidth, ...[...document.querySelectorAll('section')].map(s => s.scrollWidth - s.clientWidth)])",
    );
    let fits: Vec<i64> = serde_json::from_str(fits.as_str().unwrap()).unwrap();
    assert_eq!(fits[0], 1280, "the window is 1280 px wide");
    assert!(fits[1..].iter().all(|over| *over <= 0), "no section scrolls sideways at 1280 px: {fits:?}");
    let first = page.eval("document.querySelector('tr[data-device]').dataset.device");
    assert_eq!(first, "line2/lathe1", "worst first on the page");
    let colour = page.eval(
        "getComputedStyle(document.querySelector('tr[data-device=\"line2/lathe1\"] .badge')).backgroundColor",
    );
    assert_eq!(colour, "rgb(198, 40, 40)", "alarm in red");
    let lines = page.eval("document.querySelectorAll('tr[data-device] svg.trend polyline').length");
    assert_eq!(lines, 8, "a trend line per device and score");
    let connections = page.eval(
        "JSON.stringify([...document.querySelectorAll('[data-connection]')].map(b => b.dataset.connection + '=' + b.dataset.up))",
    );
    assert_eq!(connections, "[\"scores=true\",\"telemetry=true\"]");
    assert_eq!(page.eval("document.querySelector('#pipelines td').textContent"), "press-line");
    let names: Vec<&str> = named.as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(page.eval("document.querySelector('#pipelines td.drift').textContent"), names.join(", "));
    // Why lathe1 is in alarm, on its row: its explained scores' top features.
    let explain = newest["line2/lathe1"]["explain"].as_object().expect("lathe1's alarm is explained").clone();
    let why = page.eval("document.querySelector('tr[data-device=\"line2/lathe1\"] td.why').textContent");
    let mut want_why: Vec<String> = explain
        .iter()
        .map(|(score, top)| {
            let features: Vec<&str> =
                top.as_array().unwrap().iter().map(|c| c["feature"].as_str().unwrap()).collect();
            format!("{score}: {}", features.join(", "))
        })
        .collect();
    want_why.sort();
    assert_eq!(why, want_why.join("; "), "lathe1's reasons on the page");
    let ok_why = page.eval("document.querySelector('tr[data-device=\"line1/press2\"] td.why').textContent");
    assert_eq!(ok_why, "–", "an ok window has no reasons");

    // press1 goes into alarm: it sends what lathe1 sent, later. The page
    // follows by itself.
    let shifted = golden.devices["line2/lathe1"].iter().map(|s| {
        let mut s = s.clone();
        s.ts += 10_000;
        s
    });
    for s in shifted {
        p.publish(&line_topic("line1/press1"), Golden::payload(&s));
    }
    p.flush(Duration::from_secs(10));
    page.wait_for(
        "the page shows press1 in alarm",
        "document.querySelector('tr[data-device=\"line1/press1\"]').dataset.state",
        Duration::from_secs(20),
        |v| v == "alarm",
    );
    assert!(page.eval("Number(document.body.dataset.refreshes)").as_u64().unwrap() >= 2);
    assert!(page.problems.is_empty(), "the page reported problems: {:#?}", page.problems);
    assert_eq!(page.eval("document.getElementById('errors').style.display"), "");

    // The page is one file: nothing but itself and /devices.
    let (code, html) = daemon.http_get("/");
    assert_eq!(code, 200);
    for external in ["<script src", "rel=\"stylesheet\"", "@import", "url(", "src=\"http", "href=\"http"] {
        assert!(!html.contains(external), "the page loads something else: `{external}`");
    }
}

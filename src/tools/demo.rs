//! `lineguard demo`: zero set-up. An embedded broker on a loopback port, a
//! simulated line with injected faults, the daemon on the shipped model, and
//! a live view of every machine's scores — read from MQTT like a SCADA screen
//! would, so what it shows is what the line would see.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::tools::{broker, sim};
use crate::{config, daemon};

const SHIPPED_MODEL: &[u8] = include_bytes!("../../models/line-mlp.onnx");
const SHIPPED_CARD: &str = include_str!("../../models/line-mlp.toml");

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds and print a summary (default: until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Machines on the simulated line.
    #[arg(long, default_value_t = 6)]
    pub machines: usize,
    /// Samples per second per machine.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Serve this model (with its card beside it) instead of the shipped one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Broker port (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// The payload shape the simulated line publishes in; for any but
    /// `lineguard` the model's card is given a sampling clock at the line's
    /// rate (`sample_period_ms`), so lineguard forms the samples itself.
    #[arg(long, value_enum, default_value_t = sim::Format::Lineguard)]
    pub format: sim::Format,
    /// A primary and a backup lineguard (`[redundancy]`), each its own
    /// process: the primary is killed (`kill -9`) a third of the way in and
    /// started again halfway; the summary counts every window of every
    /// machine (scored, duplicates, failovers, gaps). 45 s unless
    /// `--duration` says otherwise.
    #[arg(long)]
    pub redundant: bool,
}

#[derive(Debug, Deserialize)]
struct ScoreMsg {
    device: String,
    ts: i64,
    scores: BTreeMap<String, f64>,
    state: String,
    /// Made once per bucket of data time (see the README's Forecasts).
    #[serde(default)]
    forecast: BTreeMap<String, ForecastMsg>,
}

#[derive(Debug, Deserialize)]
struct ForecastMsg {
    to_alarm_s: Option<f64>,
}

/// A line's health index (`[[rollups]]`), as the view reads it.
#[derive(Debug, Clone, Deserialize)]
struct HealthMsg {
    group: String,
    index: Option<f64>,
    driver: Option<Driver>,
}

#[derive(Debug, Clone, Deserialize)]
struct Driver {
    device: String,
    share: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct Seen {
    windows: u64,
    scores: BTreeMap<String, f64>,
    state: String,
    worst: String,
    alarms: u64,
    warns: u64,
    /// Warn windows before its first alarm: how long a fault was seen
    /// developing before it was called.
    warns_before_alarm: u64,
    /// An ok window after an alarm: the repair was seen.
    ok_after_alarm: bool,
    /// The latest forecast's soonest alarm (seconds; none: none in reach).
    alarm_in: Option<f64>,
    /// Before the first alarm: when (data time, ms) a forecast first named
    /// one, and in how many seconds.
    first_forecast: Option<(i64, f64)>,
    /// The data time of the first alarm window.
    first_alarm_ts: Option<i64>,
}

impl Seen {
    /// A score message's forecast, if it carries one.
    fn forecasted(&mut self, ts: i64, forecast: &BTreeMap<String, ForecastMsg>) {
        if forecast.is_empty() {
            return;
        }
        self.alarm_in = forecast.values().filter_map(|f| f.to_alarm_s).reduce(f64::min);
        if let (None, None, Some(s)) = (self.first_alarm_ts, self.first_forecast, self.alarm_in) {
            self.first_forecast = Some((ts, s));
        }
    }
}

#[derive(Debug, Default)]
struct View {
    machines: BTreeMap<String, Seen>,
    /// The latest health index per line.
    lines: BTreeMap<String, HealthMsg>,
}

type Board = Arc<Mutex<View>>;

/// A demo daemon's config, on the embedded broker, serving `model` as the
/// `press-line` pipeline with its scores on `plant/{line}/{machine}/lineguard/scores`.
pub(super) struct DaemonConfig<'a> {
    pub client_id: &'a str,
    pub state: PathBuf,
    pub model: &'a Path,
    /// More `[mqtt]` keys.
    pub mqtt: &'a str,
    /// Sections after `[http]`.
    pub sections: &'a str,
    /// The pipeline's input keys, and any more of its keys.
    pub pipeline: String,
    /// Tables after the pipeline (`[[rollups]]`).
    pub after: &'a str,
}

impl DaemonConfig<'_> {
    pub(super) fn write(&self, path: &Path, port: u16) -> anyhow::Result<()> {
        let text = format!(
            r#"[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{id}"
protocol = "3.1.1" # what the embedded broker (rumqttd) listens for here
scores_protocol = "3.1.1"
{mqtt}[state]
dir = "{state}"
[http]
listen = "127.0.0.1:{http}"
{sections}[[pipelines]]
name = "press-line"
model = "{model}"
{pipeline}output_topic = "plant/{{line}}/{{machine}}/lineguard/scores"
{after}"#,
            id = self.client_id,
            mqtt = self.mqtt,
            state = self.state.display(),
            http = broker::free_port()?,
            sections = self.sections,
            model = self.model.display(),
            pipeline = self.pipeline,
            after = self.after,
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The simulated line's connection to the embedded broker (its event loop
/// polled on a task of its own).
pub(super) fn line_client(port: u16) -> AsyncClient {
    let mut opts = MqttOptions::new("lineguard-demo-line", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    tokio::spawn(async move {
        loop {
            if eventloop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    client
}

/// The demo's roll-up: each line's worst machine, every second of data time.
const LINE_HEALTH: &str = r#"
[[rollups]]
name = "line-health"
pipeline = "press-line"
group = "{line}"
output_topic = "plant/{line}/lineguard/health"
inputs = { anomaly = 1.0, quality = 1.0 }
method = "worst"
interval_secs = 1
stale_secs = 5
"#;

fn rank(state: &str) -> u8 {
    match state {
        "alarm" => 2,
        "warn" => 1,
        _ => 0,
    }
}

/// `lineguard demo`: logs at `warn` (the view is the output), on its own runtime.
pub(crate) fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::ops::logging::init(crate::ops::logging::LogFormat::Text, "warn");
    crate::daemon::runtime()?.block_on(run(args))
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=64).contains(&args.machines), "--machines must be 1..=64");
    anyhow::ensure!(args.rate > 0.0 && args.rate <= 1000.0, "--rate must be in (0, 1000]");
    let port = match args.port {
        Some(p) => p,
        None => broker::free_port()?,
    };
    let addr = tokio::task::spawn_blocking(move || broker::start_embedded(port)).await??;

    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let model = match &args.model {
        Some(m) => m.canonicalize().with_context(|| format!("model {}", m.display()))?,
        None => {
            let m = dir.path().join("line-mlp.onnx");
            std::fs::write(&m, SHIPPED_MODEL)?;
            std::fs::write(dir.path().join("line-mlp.toml"), SHIPPED_CARD)?;
            m
        }
    };
    if args.redundant {
        anyhow::ensure!(
            args.format == sim::Format::Lineguard,
            "--redundant runs the lineguard payload format (every sample with its own ts)"
        );
        return crate::tools::demo_pair::run(
            args.machines,
            args.rate,
            args.duration,
            model,
            port,
            dir.path(),
        )
        .await;
    }
    let model = match args.format {
        sim::Format::Lineguard => model,
        _ => on_a_clock(&model, args.rate, dir.path())?,
    };
    let config_path = dir.path().join("lineguard.toml");
    DaemonConfig {
        client_id: "lineguard-demo",
        state: dir.path().join("state"),
        model: &model,
        mqtt: "",
        sections: "",
        pipeline: args.format.pipeline_keys(),
        // One health figure per line: its worst machine's, named.
        after: LINE_HEALTH,
    }
    .write(&config_path, port)?;
    let settings = config::load(&config_path, std::iter::empty())?;
    let settings_http = settings.http_listen;

    let stop = CancellationToken::new();
    crate::daemon::signals::on_signals(stop.clone())?;
    let daemon_stop = CancellationToken::new();
    let daemon = tokio::spawn(daemon::run(settings, daemon_stop.clone(), None));

    // The view: a plain MQTT subscriber, like a dashboard.
    let board: Board = Arc::default();
    let mut opts = MqttOptions::new("lineguard-demo-view", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (view, mut view_loop) = AsyncClient::new(opts, 64);
    view.subscribe("plant/+/+/lineguard/scores", QoS::AtLeastOnce).await?;
    view.subscribe("plant/+/lineguard/health", QoS::AtLeastOnce).await?;
    let b = board.clone();
    tokio::spawn(async move {
        loop {
            match view_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/health") => {
                    if let Ok(h) = serde_json::from_slice::<HealthMsg>(&p.payload) {
                        b.lock().expect("board lock").lines.insert(h.group.clone(), h);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Ok(m) = serde_json::from_slice::<ScoreMsg>(&p.payload) {
                        let mut board = b.lock().expect("board lock");
                        let e = board.machines.entry(m.device).or_default();
                        e.forecasted(m.ts, &m.forecast);
                        if m.state == "alarm" && e.first_alarm_ts.is_none() {
                            e.first_alarm_ts = Some(m.ts);
                        }
                        e.windows += 1;
                        if m.state == "warn" && e.alarms == 0 {
                            e.warns_before_alarm += 1;
                        }
                        e.ok_after_alarm |= m.state == "ok" && e.alarms > 0;
                        e.alarms += u64::from(m.state == "alarm");
                        e.warns += u64::from(m.state == "warn");
                        if rank(&m.state) >= rank(&e.worst) {
                            e.worst = m.state.clone();
                        }
                        e.scores = m.scores;
                        e.state = m.state;
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });

    // The line.
    let machines = sim::line(args.machines);
    let line_client = line_client(port);
    // Give the daemon a moment to subscribe before the line starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    tokio::spawn(sim::publish_line(
        line_client,
        machines.clone(),
        args.rate,
        42,
        args.format,
        stop.clone(),
        None,
    ));

    let tty = std::io::stdout().is_terminal();
    // Kept on screen above every frame: how to look at the same line with
    // the tools of the trade.
    let intro = format!(
        "lineguard demo: embedded broker on {addr}, {} machines at {} Hz, {} payloads, model {}\n\
         watch it from another terminal: mosquitto_sub -p {port} -t 'plant/+/+/lineguard/scores' -v\n\
         status page: http://{settings_http}/   metrics: curl http://{settings_http}/metrics\n\n",
        args.machines,
        args.rate,
        args.format.input_format().as_str(),
        model.display()
    );
    if !tty {
        print!("{intro}");
    }
    // Without a terminal, a frame a second: a fault's few seconds in `warn` show in the log too.
    let redraw = if tty { Duration::from_millis(500) } else { Duration::from_secs(1) };
    let deadline = args.duration.map(|d| started + Duration::from_secs(d));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(redraw) => {}
        }
        let t = started.elapsed().as_secs_f64();
        let frame = render(&machines, &board.lock().expect("board lock"), t, tty);
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[J{intro}");
        }
        let _ = writeln!(out, "{frame}");
        let _ = out.flush();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    stop.cancel();
    daemon_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(12), daemon).await;

    let board = board.lock().expect("board lock").machines.clone();
    println!("{}", summary(&machines, &board));
    let scored: u64 = board.values().map(|s| s.windows).sum();
    if scored == 0 {
        eprintln!("error: no scores arrived; the daemon did not score anything");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A copy of `model` and its card in `dir`, the card given a sampling clock
/// at `rate` samples per second (unless it has one).
fn on_a_clock(model: &std::path::Path, rate: f64, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let card_path = crate::model::card::ModelCard::path_for(model);
    let card =
        std::fs::read_to_string(&card_path).with_context(|| format!("card {}", card_path.display()))?;
    if card.lines().any(|l| l.trim_start().starts_with("sample_period_ms")) {
        return Ok(model.to_path_buf());
    }
    let clocked = dir.join("clocked");
    std::fs::create_dir_all(&clocked)?;
    let copy = clocked.join(model.file_name().context("model file name")?);
    std::fs::copy(model, &copy).with_context(|| format!("copy {}", model.display()))?;
    let period = (1000.0 / rate).round().max(1.0) as i64;
    std::fs::write(
        crate::model::card::ModelCard::path_for(&copy),
        format!("sample_period_ms = {period}\n{card}"),
    )?;
    Ok(copy)
}

fn paint(state: &str, tty: bool) -> String {
    let code = match state {
        "alarm" => "31;1",
        "warn" => "33;1",
        "ok" => "32",
        _ => "0",
    };
    if tty {
        format!("\x1b[{code}m{state:<6}\x1b[0m")
    } else {
        format!("{state:<6}")
    }
}

/// Seconds ahead, as the table shows them.
fn ahead(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s <= 0.0 => "now".into(),
        Some(s) if s < 90.0 => format!("~{s:.0} s"),
        Some(s) => format!("~{:.0} min", s / 60.0),
    }
}

fn render(machines: &[sim::Machine], view: &View, t: f64, tty: bool) -> String {
    let board = &view.machines;
    let mut s = format!(
        "lineguard demo  t = {t:5.1} s   (Ctrl-C to stop)\n\n{:<14} {:<24} {:>8} {:>9} {:>9} {:>9}  {}\n",
        "machine", "injected fault", "windows", "anomaly", "quality", "alarm in", "state"
    );
    for m in machines {
        let fault = match m.fault {
            Some((f, _)) if m.severity(t) > 0.0 => {
                format!("{} {:>3.0}%", f.name(), m.severity(t) * 100.0)
            }
            Some(_) => "-".to_string(),
            None => "(healthy reference)".to_string(),
        };
        let seen = board.get(&m.device()).cloned().unwrap_or_default();
        let score = |k: &str| seen.scores.get(k).map_or("-".to_string(), |v| format!("{v:.3}"));
        s.push_str(&format!(
            "{:<14} {:<24} {:>8} {:>9} {:>9} {:>9}  {}\n",
            m.device(),
            fault,
            seen.windows,
            score("anomaly"),
            score("quality"),
            ahead(seen.alarm_in),
            paint(if seen.state.is_empty() { "-" } else { &seen.state }, tty)
        ));
    }
    for h in view.lines.values() {
        let index = h.index.map_or("-".to_string(), |i| format!("{i:.2}"));
        let driver = h.driver.as_ref().map_or("-".to_string(), |d| match d.share {
            Some(share) => format!("{} ({:.0}%)", d.device, share * 100.0),
            None => d.device.clone(),
        });
        s.push_str(&format!(
            "\n{} health {index} (worst machine, 0 at warn, 1 at alarm), driven by {driver}",
            h.group
        ));
    }
    s
}

fn summary(machines: &[sim::Machine], board: &BTreeMap<String, Seen>) -> String {
    let mut s = String::from(
        "\nsummary: windows scored, warn windows before the first alarm, whether ok came back after \
         an alarm (the repair), and the worst state each machine reached\n",
    );
    for m in machines {
        let seen = board.get(&m.device()).cloned().unwrap_or_default();
        let fault = m.fault.map_or("none", |(f, _)| f.name());
        s.push_str(&format!(
            "  {:<14} fault {:<15} windows {:>6}  warn {:>5}  alarm {:>5}  warn-before-alarm {:>4}  \
             ok-after-alarm {:<3}  worst {}\n",
            m.device(),
            fault,
            seen.windows,
            seen.warns,
            seen.alarms,
            seen.warns_before_alarm,
            if seen.ok_after_alarm { "yes" } else { "no" },
            if seen.worst.is_empty() { "-" } else { &seen.worst }
        ));
    }
    s.push_str(
        "\nforecasts: per faulty machine, how long before its first alarm a forecast first named one, \
         and how far off it was\n",
    );
    for m in machines.iter().filter(|m| m.fault.is_some()) {
        let seen = board.get(&m.device()).cloned().unwrap_or_default();
        let line = match (seen.first_forecast, seen.first_alarm_ts) {
            (Some((at, said)), Some(alarm)) => {
                let came = (alarm - at) as f64 / 1000.0;
                format!(
                    "forecast {came:.1} s before the alarm: said in {said:.1} s, it came in {came:.1} s (off by {:+.1} s)",
                    came - said
                )
            }
            (None, Some(_)) => "alarmed with no forecast before it".into(),
            (Some((_, said)), None) => format!("forecast an alarm in {said:.1} s; none came in the run"),
            (None, None) => "no alarm, no forecast of one".into(),
        };
        s.push_str(&format!("  {:<14} {line}\n", m.device()));
    }
    s
}

//! A simulated production line: the Rust twin of `models/linesim.py`, the
//! fault model the shipped MLP was trained on. Keep the constants equal.
//!
//! Each machine runs at a load level and, on a repeating schedule, develops
//! one fault whose severity ramps from 0 to 1, holds, and is then repaired:
//! bearing wear (vibration), coolant loss (temperature), tool wear (torque,
//! current; quality falls), hydraulic leak (pressure). The first machine
//! stays healthy as a reference.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

pub const FEATURES: [&str; 8] = [
    "spindle_speed",
    "feed_rate",
    "motor_temp",
    "vibration_rms",
    "motor_current",
    "hydraulic_pressure",
    "torque",
    "ambient_humidity",
];
const NOMINAL: [f64; 8] = [1200.0, 350.0, 60.0, 2.0, 12.0, 150.0, 45.0, 45.0];
const NOISE: [f64; 8] = [8.0, 3.0, 0.5, 0.12, 0.25, 1.5, 1.0, 1.5];
const LOAD: [f64; 8] = [60.0, 10.0, 1.5, 0.1, 0.8, 0.0, 3.0, 0.0];
const BEARING_VIBRATION_NOISE: f64 = 2.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    BearingWear,
    CoolantLoss,
    ToolWear,
    HydraulicLeak,
}

impl Fault {
    pub const ALL: [Fault; 4] =
        [Fault::BearingWear, Fault::CoolantLoss, Fault::ToolWear, Fault::HydraulicLeak];

    /// Effect per unit severity, in `FEATURES` order.
    fn effect(self) -> [f64; 8] {
        match self {
            Fault::BearingWear => [0.0, 0.0, 4.0, 3.0, 0.6, 0.0, 0.0, 0.0],
            Fault::CoolantLoss => [0.0, 0.0, 20.0, 0.0, 0.8, 0.0, 2.0, 0.0],
            Fault::ToolWear => [-30.0, 0.0, 0.0, 0.6, 2.0, 0.0, 9.0, 0.0],
            Fault::HydraulicLeak => [0.0, -15.0, 0.0, 0.0, 0.0, -35.0, 0.0, 0.0],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::BearingWear => "bearing wear",
            Fault::CoolantLoss => "coolant loss",
            Fault::ToolWear => "tool wear",
            Fault::HydraulicLeak => "hydraulic leak",
        }
    }
}

/// When a machine's fault appears, grows and is repaired (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub onset: f64,
    pub ramp: f64,
    pub hold: f64,
    pub period: f64,
}

#[derive(Debug, Clone)]
pub struct Machine {
    pub line: String,
    pub name: String,
    pub load: f64,
    pub fault: Option<(Fault, Schedule)>,
}

impl Machine {
    pub fn device(&self) -> String {
        format!("{}/{}", self.line, self.name)
    }

    /// Fault severity at `t` seconds since the start.
    pub fn severity(&self, t: f64) -> f64 {
        let Some((_, s)) = self.fault else { return 0.0 };
        let c = (t - s.onset).rem_euclid(s.period);
        if t < s.onset || c >= s.ramp + s.hold {
            0.0
        } else {
            (c / s.ramp).min(1.0)
        }
    }

    /// One sample at `t` seconds.
    pub fn sample(&self, t: f64, rng: &mut SmallRng) -> [f64; 8] {
        let severity = self.severity(t);
        let mut out = [0.0; 8];
        for (i, o) in out.iter_mut().enumerate() {
            let mut mean = NOMINAL[i] + LOAD[i] * self.load;
            let mut sd = NOISE[i];
            if let Some((fault, _)) = self.fault {
                mean += fault.effect()[i] * severity;
                if fault == Fault::BearingWear && i == 3 {
                    sd *= 1.0 + BEARING_VIBRATION_NOISE * severity;
                }
            }
            let z: f64 = StandardNormal.sample(rng);
            *o = mean + z * sd;
        }
        out
    }
}

/// A line of `n` machines: the first healthy, the others each with one fault,
/// onsets staggered so the faults do not all appear together.
pub fn line(n: usize) -> Vec<Machine> {
    (0..n)
        .map(|i| {
            let (line, name) = if i < 3 {
                ("line1", format!("press{}", i + 1))
            } else {
                ("line2", format!("lathe{}", i - 2))
            };
            let fault = (i > 0).then(|| {
                let f = Fault::ALL[(i - 1) % Fault::ALL.len()];
                (f, Schedule { onset: 3.0 + 5.0 * (i - 1) as f64, ramp: 20.0, hold: 15.0, period: 60.0 })
            });
            Machine { line: line.into(), name, load: ((i as f64) * 0.37).sin() * 0.5, fault }
        })
        .collect()
}

/// The telemetry payload of SPEC for one sample.
pub fn payload(ts_ms: i64, values: &[f64; 8]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    for (f, v) in FEATURES.iter().zip(values) {
        map.insert((*f).to_string(), serde_json::json!((v * 1e4).round() / 1e4));
    }
    serde_json::to_vec(&serde_json::json!({"ts": ts_ms, "values": map})).expect("serializes")
}

/// The shape the simulated line publishes in (`--format`): each of
/// lineguard's input formats but Sparkplug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Lineguard,
    Telegraf,
    Tag,
    Kepware,
    OpcuaJson,
    /// Sparkplug B: a DBIRTH per machine first, then DDATA, metrics by name.
    Sparkplug,
}

impl Format {
    pub fn input_format(self) -> crate::ingest::format::InputFormat {
        use crate::ingest::format::InputFormat;
        match self {
            Format::Lineguard => InputFormat::Lineguard,
            Format::Telegraf => InputFormat::Telegraf,
            Format::Tag => InputFormat::Tag,
            Format::Kepware => InputFormat::Kepware,
            Format::OpcuaJson => InputFormat::OpcuaJson,
            Format::Sparkplug => InputFormat::Sparkplug,
        }
    }

    /// What a machine publishes once before its first sample: a Sparkplug
    /// DBIRTH (names, aliases, the first values); nothing in other shapes.
    pub fn births(self, m: &Machine, ts_ms: i64, values: &[f64; 8]) -> Vec<(String, Vec<u8>)> {
        if self != Format::Sparkplug {
            return Vec::new();
        }
        vec![(sparkplug_topic("DBIRTH", m), sparkplug_payload(ts_ms, values, true))]
    }

    /// The pipeline keys that read this shape, for a config file: input
    /// topic, format and its settings. Devices come out as `{line}/{machine}`.
    pub fn pipeline_keys(self) -> String {
        let (topic, extra) = match self {
            Format::Lineguard => ("plant/{line}/{machine}/telemetry", ""),
            Format::Telegraf => ("telegraf/{line}/{machine}", ""),
            Format::Tag => ("uns/{line}/{machine}/{feature}", ""),
            Format::Kepware => ("iotgateway/{line}", "tag_id = \"{machine}.{feature}\"\n"),
            Format::OpcuaJson => ("azure-iot-operations/data/{line}/{machine}", ""),
            Format::Sparkplug => ("spBv1.0/{line}/DDATA/sim/{machine}", ""),
        };
        format!("input_topic = \"{topic}\"\ninput_format = \"{}\"\n{extra}", self.input_format().as_str())
    }

    /// One sample of machine `m` as this shape's messages: `(topic, payload)`.
    pub fn messages(self, m: &Machine, ts_ms: i64, values: &[f64; 8]) -> Vec<(String, Vec<u8>)> {
        let round = |v: f64| (v * 1e4).round() / 1e4;
        let fields = || {
            FEATURES
                .iter()
                .zip(values)
                .map(|(f, v)| ((*f).to_string(), serde_json::json!(round(*v))))
                .collect::<serde_json::Map<_, _>>()
        };
        let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("serializes");
        let (line, name) = (&m.line, &m.name);
        match self {
            Format::Lineguard => vec![(format!("plant/{line}/{name}/telemetry"), payload(ts_ms, values))],
            Format::Telegraf => vec![(
                format!("telegraf/{line}/{name}"),
                json(
                    serde_json::json!({"fields": fields(), "name": "press", "tags": {"line": line, "machine": name},
                                        "timestamp": ts_ms as f64 / 1000.0}),
                ),
            )],
            Format::Tag => FEATURES
                .iter()
                .zip(values)
                .map(|(f, v)| {
                    let body = serde_json::json!({"value": round(*v), "timestamp": ts_ms});
                    (format!("uns/{line}/{name}/{f}"), json(body))
                })
                .collect(),
            Format::Kepware => {
                let records: Vec<serde_json::Value> = FEATURES
                    .iter()
                    .zip(values)
                    .map(|(f, v)| serde_json::json!({"id": format!("{name}.{f}"), "v": round(*v), "q": true, "t": ts_ms}))
                    .collect();
                vec![(
                    format!("iotgateway/{line}"),
                    json(serde_json::json!({"timestamp": ts_ms, "values": records})),
                )]
            }
            Format::OpcuaJson => {
                let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
                let points: serde_json::Map<String, serde_json::Value> = FEATURES
                    .iter()
                    .zip(values)
                    .map(|(f, v)| {
                        ((*f).to_string(), serde_json::json!({"SourceTimestamp": at, "Value": round(*v)}))
                    })
                    .collect();
                vec![(
                    format!("azure-iot-operations/data/{line}/{name}"),
                    json(serde_json::Value::Object(points)),
                )]
            }
            Format::Sparkplug => vec![(sparkplug_topic("DDATA", m), sparkplug_payload(ts_ms, values, false))],
        }
    }
}

/// `spBv1.0/{line}/{kind}/sim/{machine}`: each line a Sparkplug group, the
/// simulator its edge node `sim`, each machine a device.
fn sparkplug_topic(kind: &str, m: &Machine) -> String {
    format!("spBv1.0/{}/{kind}/sim/{}", m.line, m.name)
}

/// A DBIRTH (with data types) or DDATA of the eight features as Doubles,
/// each stamped `ts_ms`. Metrics go by name, without aliases (Sparkplug
/// allows either): a DDATA then means something even to a host that
/// subscribed after the DBIRTH, as the demo's daemon may under load.
fn sparkplug_payload(ts_ms: i64, values: &[f64; 8], birth: bool) -> Vec<u8> {
    use crate::sparkplug::proto::{DataType, Metric, Payload, Value};
    use prost::Message;
    let metrics = FEATURES
        .iter()
        .zip(values)
        .map(|(f, v)| Metric {
            name: Some((*f).to_string()),
            alias: None,
            timestamp: Some(ts_ms as u64),
            datatype: birth.then_some(DataType::Double as u32),
            value: Some(Value::Double((v * 1e4).round() / 1e4)),
            ..Default::default()
        })
        .collect();
    let seq = if birth { 0 } else { (ts_ms / 100 % 255 + 1) as u64 };
    Payload { timestamp: Some(ts_ms as u64), metrics, seq: Some(seq), ..Default::default() }.encode_to_vec()
}

/// Publish the line to `client` at `rate` samples/s per machine until
/// `stop`, in `format` (topics: see [`Format::pipeline_keys`]); `rounds`
/// counts the samples each machine published.
pub async fn publish_line(
    client: AsyncClient,
    machines: Vec<Machine>,
    rate: f64,
    seed: u64,
    format: Format,
    stop: CancellationToken,
    rounds: Option<Arc<AtomicU64>>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now();
    let mut born = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        let ts = crate::clock::now_ms();
        for m in &machines {
            let values = m.sample(t, &mut rng);
            // A Sparkplug device's first values are its DBIRTH's.
            let births = if born { Vec::new() } else { format.births(m, ts, &values) };
            let out = if births.is_empty() { format.messages(m, ts, &values) } else { births };
            for (topic, body) in out {
                if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                    return;
                }
            }
        }
        born = true;
        if let Some(r) = &rounds {
            r.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The broker's host name or address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The broker's port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Machines on the line.
    #[arg(long, default_value_t = 6)]
    pub machines: usize,
    /// Samples per second per machine.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Seed of the simulation's noise (the same seed gives the same line).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The payload shape, as a plant's gateway would publish it (topics:
    /// lineguard `plant/{line}/{machine}/telemetry`, telegraf
    /// `telegraf/{line}/{machine}`, tag `uns/{line}/{machine}/{feature}`,
    /// kepware `iotgateway/{line}`, opcua-json
    /// `azure-iot-operations/data/{line}/{machine}`, sparkplug
    /// `spBv1.0/{line}/DDATA/sim/{machine}` after a DBIRTH per machine, metrics by name).
    #[arg(long, value_enum, default_value_t = Format::Lineguard)]
    pub format: Format,
}

/// `lineguard simulate`: the simulated line against a real broker, on its
/// own runtime.
pub fn main(args: SimulateArgs) -> anyhow::Result<()> {
    crate::ops::logging::init(crate::ops::logging::LogFormat::Text, "info");
    crate::daemon::runtime()?.block_on(simulate(args))
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0.0 && args.rate <= 10_000.0, "--rate must be in (0, 10000]");
    anyhow::ensure!(args.machines >= 1, "--machines must be at least 1");
    let mut opts =
        MqttOptions::new(format!("lineguard-sim-{}", std::process::id()), args.host.clone(), args.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let stop = CancellationToken::new();
    crate::daemon::signals::on_signals(stop.clone()).context("signals")?;
    if let Some(secs) = args.duration {
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            s.cancel();
        });
    }
    let publisher = tokio::spawn(publish_line(
        client.clone(),
        line(args.machines),
        args.rate,
        args.seed,
        args.format,
        stop.clone(),
        None,
    ));
    tracing::info!(host = %args.host, port = args.port, machines = args.machines, rate = args.rate, "simulating");
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = eventloop.poll() => if let Err(e) = ev {
                tracing::warn!("broker: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let _ = publisher.await;
    let _ = client.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_ramps_holds_and_repairs() {
        let m = &line(2)[1];
        let (_, s) = m.fault.unwrap();
        assert_eq!(m.severity(0.0), 0.0);
        assert!((m.severity(s.onset + s.ramp / 2.0) - 0.5).abs() < 1e-9);
        assert_eq!(m.severity(s.onset + s.ramp + 1.0), 1.0);
        assert_eq!(m.severity(s.onset + s.ramp + s.hold + 1.0), 0.0);
        assert!(m.severity(s.onset + s.period + 1.0) > 0.0, "the fault comes back next period");
        assert_eq!(line(1)[0].severity(30.0), 0.0, "the first machine stays healthy");
    }

    #[test]
    fn samples_follow_the_fault() {
        let mut rng = SmallRng::seed_from_u64(3);
        let m = Machine {
            line: "l".into(),
            name: "m".into(),
            load: 0.0,
            fault: Some((Fault::CoolantLoss, Schedule { onset: 0.0, ramp: 1.0, hold: 100.0, period: 200.0 })),
        };
        let healthy: f64 = (0..200).map(|_| m.sample(-1.0, &mut rng)[2]).sum::<f64>() / 200.0;
        let faulty: f64 = (0..200).map(|_| m.sample(10.0, &mut rng)[2]).sum::<f64>() / 200.0;
        assert!((healthy - 60.0).abs() < 0.5 && (faulty - 80.0).abs() < 0.5, "{healthy} {faulty}");
    }
}

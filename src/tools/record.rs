//! `lineguard record`: every pipeline's telemetry, as the broker delivers
//! it, one JSON line per message —
//! `{"topic", "payload"}` (UTF-8 text) or `{"topic", "payload_b64"}`
//! (anything else, base64), with `"received_ms"` (the gateway's clock) —
//! for offline work on exactly what the daemon saw.
//!
//! It connects under `{client_id}-record` with a clean session, so it never
//! takes over the daemon's session or its queued telemetry; run beside the
//! daemon, both receive every message.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use rumqttc::QoS;
use serde::Serialize;

use crate::config;
use crate::mqtt::protocol::Event;

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The configuration file (TOML): its broker settings and its pipelines' input topics.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The JSON Lines file to write (created, or replaced).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
}

/// One recorded message.
#[derive(Debug, Serialize)]
struct Line<'a> {
    topic: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
    received_ms: i64,
}

/// The JSON line of one message.
fn line(topic: &str, payload: &[u8], received_ms: i64) -> Vec<u8> {
    let l = match std::str::from_utf8(payload) {
        Ok(text) => Line { topic, payload: Some(text), payload_b64: None, received_ms },
        Err(_) => Line {
            topic,
            payload: None,
            payload_b64: Some(base64::engine::general_purpose::STANDARD.encode(payload)),
            received_ms,
        },
    };
    let mut out = serde_json::to_vec(&l).expect("a line is plain JSON");
    out.push(b'\n');
    out
}

pub(crate) fn main(args: RecordArgs) -> anyhow::Result<ExitCode> {
    crate::ops::logging::init(crate::ops::logging::LogFormat::Text, "warn");
    let settings = config::load(&args.config, std::env::vars())?;
    crate::daemon::runtime()?.block_on(record(settings, args))
}

async fn record(settings: crate::config::Settings, args: RecordArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut filters: Vec<String> = settings.pipelines.iter().flat_map(|p| p.input.filters()).collect();
    filters.sort();
    filters.dedup();
    // The first broker of `mqtt.hosts`: a recording is one session's.
    let broker = &settings.mqtt.brokers[0];
    let (client, mut eventloop) = crate::mqtt::connect(
        &crate::mqtt::Purpose::Recorder,
        &settings.mqtt,
        broker,
        settings.limits.max_payload_bytes,
        None,
    );
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
    let started = Instant::now();
    let (mut messages, mut bytes) = (0u64, 0u64);
    let mut last_flush = Instant::now();
    eprintln!(
        "recording {} from {broker} to {} ({})",
        filters.join(", "),
        args.output.display(),
        args.duration.map_or("until Ctrl-C".to_string(), |d| format!("for {d} s"))
    );
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = tokio::signal::ctrl_c() => break,
            _ = async { tokio::time::sleep_until(deadline.expect("checked")).await }, if deadline.is_some() => break,
        };
        match event {
            Ok(Event::ConnAck { .. }) => {
                let (client, filters) = (client.clone(), filters.clone());
                tokio::spawn(async move {
                    for f in filters {
                        let _ = client.subscribe(f, QoS::AtLeastOnce).await;
                    }
                });
            }
            Ok(Event::SubAck { refused: true, .. }) => {
                eprintln!("the broker refused a subscription: nothing comes in on it (check its ACL)");
            }
            Ok(Event::SubAck { .. }) => {}
            Ok(Event::Publish { topic: Some(topic), payload, .. }) => {
                let l = line(&topic, &payload, crate::clock::now_ms());
                out.write_all(&l).with_context(|| format!("cannot write {}", args.output.display()))?;
                messages += 1;
                bytes += payload.len() as u64;
                if last_flush.elapsed() >= Duration::from_secs(1) {
                    out.flush().with_context(|| format!("cannot write {}", args.output.display()))?;
                    last_flush = Instant::now();
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("broker connection: {e}; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    out.flush().with_context(|| format!("cannot write {}", args.output.display()))?;
    // A clean DISCONNECT: the request goes through the event loop, which
    // must be polled for it to leave.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::spawn(async move { client.disconnect().await });
        while let Ok(e) = eventloop.poll().await {
            if matches!(e, Event::Disconnected) {
                break;
            }
        }
    })
    .await;
    println!(
        "recorded {messages} messages ({bytes} payload bytes) in {:.1} s to {}",
        started.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_payloads_stay_text_and_others_are_base64() {
        let l: serde_json::Value = serde_json::from_slice(&line("a/b", br#"{"ts":1}"#, 7)).unwrap();
        assert_eq!(l, serde_json::json!({"topic": "a/b", "payload": "{\"ts\":1}", "received_ms": 7}));
        let l: serde_json::Value = serde_json::from_slice(&line("spB", &[0xff, 0x00, 0x10], 8)).unwrap();
        assert_eq!(l, serde_json::json!({"topic": "spB", "payload_b64": "/wAQ", "received_ms": 8}));
    }
}

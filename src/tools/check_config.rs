//! `lineguard check-config`: the unit's `ExecStartPre`. Validates the file
//! (with the environment's overrides), that `state.dir` takes writes and
//! `http.listen` can be bound, and every model it names; prints the
//! effective settings, secrets masked.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;

use crate::config;
use crate::ingest::decode::{Decoded, Decoder};
use crate::ingest::Reader;
use crate::pipeline::{Pipeline, PipelineModels};

/// What one example message of the pipeline's format turns into, so that
/// a wrong mapping shows before any telemetry comes.
fn example(p: &Pipeline, features: &[String]) -> String {
    let reader = Reader::new(&p.input, Decoder::new(features));
    let Some((topic, payload)) = reader.example(features) else {
        return "reads Sparkplug B DDATA by the metric names (or aliases) of each device's DBIRTH".into();
    };
    let Some(device) = p.input.topic.device_key(&topic) else {
        return format!("example topic `{topic}` does not match (a bug)");
    };
    let mut out = Decoded::default();
    reader.read(&topic, &device, payload.as_bytes(), &mut out);
    let rows: Vec<String> = (0..out.len())
        .map(|i| {
            let row = &out.values[i * features.len()..(i + 1) * features.len()];
            let values: Vec<String> = features
                .iter()
                .zip(row)
                .filter(|(_, v)| !v.is_nan())
                .map(|(f, v)| format!("{f}={v}"))
                .collect();
            let ts = out.ts[i].map_or("receive time".to_string(), |t| t.to_string());
            format!("device `{}`, ts {ts}: {}", out.key(i).unwrap_or(&device), values.join(" "))
        })
        .collect();
    let problems: Vec<String> = out.rejects.iter().map(|r| r.to_string()).collect();
    format!(
        "example: `{topic}` {payload}\n#     -> {}{}",
        rows.join("\n#     -> "),
        if problems.is_empty() { String::new() } else { format!(" (refused: {})", problems.join("; ")) }
    )
}

/// The device key of the pipeline's example message (or, for Sparkplug, one
/// made of its placeholders' names), and the topic it came on.
fn example_device(p: &Pipeline, features: &[String]) -> (String, String) {
    let reader = Reader::new(&p.input, Decoder::new(features));
    if let Some((topic, _)) = reader.example(features) {
        if let Some(device) = p.input.topic.device_key(&topic).filter(|d| !d.is_empty()) {
            return (device.into_owned(), topic);
        }
    }
    let device: Vec<String> = p.input.topic.placeholders().iter().map(|n| format!("{n}1")).collect();
    (device.join("/"), String::new())
}

/// A pipeline's forecasts and roll-ups, as people read them.
fn forecasts_and_rollups(p: &Pipeline, card: &crate::model::card::ModelCard, out: &mut String) {
    for s in &card.scores {
        if let Some(f) = &s.forecast {
            let _ = writeln!(
                out,
                "#   forecast: `{}` reaching warn/alarm, fitted over {} s of data time (buckets of {} s), horizon {} s",
                s.name,
                f.secs,
                f.secs as f64 / 64.0,
                f.horizon_secs
            );
        }
    }
    if p.rollups.is_empty() {
        return;
    }
    let (device, topic) = example_device(p, &card.features);
    let from = if topic.is_empty() { String::new() } else { format!(" (of `{topic}`)") };
    for r in &p.rollups {
        let inputs: Vec<String> = r.inputs.iter().map(|(s, w)| format!("{s}×{w}")).collect();
        let method = match r.method {
            crate::pipeline::rollup::Method::Weighted => "weighted",
            crate::pipeline::rollup::Method::Worst => "worst",
        };
        let _ = writeln!(
            out,
            "#   rollup `{}`: groups devices by `{}`, {method} over {}, every {} s of data time (stale after {} s), publishes `{}` retained",
            r.name,
            r.group.as_str(),
            inputs.join(", "),
            r.interval_ms / 1000,
            r.stale_ms / 1000,
            r.output.as_str(),
        );
        let input = &p.input.topic;
        let _ = writeln!(
            out,
            "#     e.g. device `{device}`{from} -> group `{}` on `{}`, weight {}",
            r.group.render(input, &device),
            r.output.render(input, &device),
            r.weights.of(&device)
        );
    }
}

/// Whether the daemon could serve `/metrics` on `listen`: bound (not
/// listened on) and released at once. With SO_REUSEPORT, so that two
/// checks at the same moment do not fail each other, while a process
/// listening there (a running daemon) still makes the bind fail.
fn check_listen(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let socket = match listen {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .and_then(|s| s.set_reuseport(true).map(|()| s));
    match socket.and_then(|s| s.bind(listen)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "cannot listen on {listen}: the address is in use (by a running lineguard? stop it first, or \
             pick another port)"
        )),
        Err(e) => Err(anyhow::anyhow!("cannot listen on {listen}: {e}")),
    }
}

/// What `check-config` prints, or why the configuration is refused.
pub(crate) fn check(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<String> {
    let settings = config::load(path, env)?;
    crate::durable::store::check_writable(&settings.state.dir)
        .with_context(|| format!("{}: `state.dir`", settings.path.display()))?;
    check_listen(settings.http_listen)
        .with_context(|| format!("{}: `http.listen`", settings.path.display()))?;
    let models: Vec<PipelineModels> =
        settings.pipelines.iter().map(Pipeline::load_models).collect::<Result<_, _>>()?;
    let mut out = format!("# {}: valid\n\n{}\n", settings.path.display(), settings.display_masked());
    let _ = writeln!(out, "# mqtt password: {}", settings.mqtt.password_source);
    let _ = writeln!(out, "# state.dir {}: writable", settings.state.dir.display());
    let _ = writeln!(out, "# http.listen {}: can be bound", settings.http_listen);
    if let Some(r) = &settings.redundancy {
        let _ = writeln!(
            out,
            "# redundancy: {} of a pair with `{}` (its status: {}); a standby keeps {} s of data time to publish when it takes over; samples and values without their own `ts` are refused (no_ts)",
            r.role.as_str(),
            r.peer,
            r.peer_status_topic(),
            r.takeover_replay.as_secs(),
        );
        if let Some(n) = settings.node() {
            let _ = writeln!(
                out,
                "# redundancy: the pair shares the Sparkplug Edge Node {}/{}; only the active instance has a session",
                n.group_id, n.edge_node_id
            );
        }
    }
    for (p, PipelineModels { live: m, shadow }) in settings.pipelines.iter().zip(&models) {
        let _ = writeln!(
            out,
            "# pipeline `{}`: subscribes `{}` ({} payloads, timestamps in {}), publishes `{}`, model {} v{} ({} x {} features, sha256 {})",
            p.name,
            p.input.filters().join("` and `"),
            p.input.format.as_str(),
            p.input.ts_unit.as_str(),
            p.output_display(settings.node()),
            m.id.name,
            m.id.version,
            m.card.window,
            m.card.features.len(),
            &m.id.sha256[..16]
        );
        let _ = writeln!(out, "#   {}", example(p, &m.card.features));
        forecasts_and_rollups(p, &m.card, &mut out);
        if let (Some(s), Some(sm)) = (&p.shadow, shadow) {
            let _ = writeln!(
                out,
                "#   shadow: model {} v{} (sha256 {}), publishes `{}`, never acted on",
                sm.id.name,
                sm.id.version,
                &sm.id.sha256[..16],
                s.topic.as_str()
            );
        }
    }
    Ok(out)
}

//! From the schema to [`Settings`]: one function per section, each naming
//! the key and saying what would fix it.

use std::path::Path;
use std::time::Duration;

use super::schema::{
    Config, LimitsConfig, MqttConfig, OutputFormat, PipelineConfig, RedundancyConfig, SparkplugConfig,
    StateConfig, DEFAULT_PORT,
};
use super::settings::Settings;
use super::ConfigError;
use crate::durable::StateSettings;
use crate::ingest::format::{InputFormat, TsUnit};
use crate::ingest::input::Input;
use crate::ingest::kepware::TagId;
use crate::ingest::tag::TagKeys;
use crate::ingest::topic::TopicTemplate;
use crate::model::ModelFiles;
use crate::mqtt::{publisher_client_id, BrokerAddr, MqttSettings, PasswordSource, TlsMaterial};
use crate::ops::logging::LogSettings;
use crate::pipeline::drift::DriftSettings;
use crate::pipeline::{Limits, Output, Pipeline, Shadow};
use crate::redundancy::RedundancySettings;
use crate::sparkplug::node::NodeConfig;
use crate::sparkplug::{is_sparkplug_topic, DeviceIdTemplate, SparkplugSettings};

/// An error about `key` in the file at `path`.
struct Blame<'a> {
    path: &'a Path,
}

impl Blame<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_path_buf(), key: key.into(), message: message.into() }
    }
}

pub(super) fn validate(path: &Path, raw: Config) -> Result<Settings, ConfigError> {
    let blame = Blame { path };
    let mqtt = mqtt(&blame, &raw.mqtt)?;
    let limits = limits(&blame, &raw.limits)?;
    let state = state(&blame, &raw.state)?;
    let mut pipelines = pipelines(&blame, &raw, path)?;
    rollups(&blame, &raw, &mut pipelines)?;
    let sparkplug = raw.sparkplug.as_ref().map(|sp| sparkplug(&blame, sp, &raw.mqtt)).transpose()?;
    no_feedback(&blame, &pipelines, sparkplug.as_ref())?;
    let redundancy = raw.redundancy.as_ref().map(|r| redundancy(&blame, r, &raw.mqtt)).transpose()?;
    if let (Some(r), Some(sp)) = (&redundancy, &sparkplug) {
        // The two instances share the Edge Node, each on a connection of its own.
        if sp.client_id == r.peer || sp.client_id == format!("{}-sparkplug", r.peer) {
            return Err(blame.invalid(
                "sparkplug.client_id",
                format!(
                    "`{}` is the peer's; each instance of a pair needs its own (the default is {{mqtt.client_id}}-sparkplug)",
                    sp.client_id
                ),
            ));
        }
    }
    let mut limits = limits;
    // Two instances stamp a sample's arrival differently: only the
    // sample's own time makes their windows the same.
    limits.require_ts = redundancy.is_some();
    Ok(Settings {
        path: path.to_path_buf(),
        mqtt,
        state,
        http_listen: raw.http.listen,
        log: LogSettings { format: raw.log.format, level: raw.log.level.clone() },
        limits,
        pipelines,
        sparkplug,
        redundancy,
        raw,
    })
}

/// `mqtt.host` and `mqtt.port`, or `mqtt.hosts`: the brokers, in the order tried.
fn brokers(blame: &Blame, m: &MqttConfig) -> Result<Vec<BrokerAddr>, ConfigError> {
    let host = |key: &str, h: &str| {
        if h.trim().is_empty() || h.contains(['/', ' ']) {
            return Err(blame.invalid(key, format!("`{h}` is not a host name or address")));
        }
        Ok(h.trim_start_matches('[').trim_end_matches(']').to_string())
    };
    let port = |key: &str, p: u16| match p {
        0 => Err(blame.invalid(key, "0 is not a broker port")),
        p => Ok(p),
    };
    match (&m.hosts, &m.host) {
        (Some(_), Some(_)) | (Some(_), None) if m.host.is_some() || m.port.is_some() => Err(blame.invalid(
            "mqtt.hosts",
            "give either `hosts` (several brokers, \"host:port\" each) or `host` and `port` (one broker), not both",
        )),
        (Some(hosts), _) => {
            if hosts.is_empty() {
                return Err(blame.invalid("mqtt.hosts", "is empty: name at least one broker, \"host:port\""));
            }
            hosts
                .iter()
                .map(|h| {
                    // `[::1]:1883` for an IPv6 address; the port is required.
                    let Some((name, number)) = h.rsplit_once(':').filter(|(n, _)| !n.ends_with(':')) else {
                        return Err(blame.invalid("mqtt.hosts", format!("`{h}` must be \"host:port\"")));
                    };
                    let number = number
                        .parse::<u16>()
                        .map_err(|_| blame.invalid("mqtt.hosts", format!("`{h}`: `{number}` is not a port")))?;
                    Ok(BrokerAddr { host: host("mqtt.hosts", name)?, port: port("mqtt.hosts", number)? })
                })
                .collect()
        }
        (None, Some(h)) => Ok(vec![BrokerAddr {
            host: host("mqtt.host", h)?,
            port: port("mqtt.port", m.port.unwrap_or(DEFAULT_PORT))?,
        }]),
        (None, None) => Err(blame.invalid("mqtt.host", "missing: name the broker (or several, with mqtt.hosts)")),
    }
}

fn mqtt(blame: &Blame, m: &MqttConfig) -> Result<MqttSettings, ConfigError> {
    let brokers = brokers(blame, m)?;
    if m.client_id.trim().is_empty() || m.client_id.contains(['/', '+', '#']) {
        return Err(blame.invalid(
            "mqtt.client_id",
            format!(
                "`{}` must be a non-empty id without `/`, `+` or `#` (it names the status topic)",
                m.client_id
            ),
        ));
    }
    if m.keep_alive_secs < 5 {
        return Err(blame.invalid("mqtt.keep_alive_secs", "must be at least 5 seconds"));
    }
    if m.receive_maximum == 0 {
        return Err(blame.invalid("mqtt.receive_maximum", "must be between 1 and 65535"));
    }
    if m.reconnect_min_ms == 0 || m.reconnect_max_ms < m.reconnect_min_ms {
        return Err(blame.invalid("mqtt.reconnect_min_ms", "must be > 0 and not above mqtt.reconnect_max_ms"));
    }
    let (password, password_source) = password(blame, m)?;
    if password.is_some() && m.username.is_none() {
        return Err(blame.invalid("mqtt.username", "a password is set but no username"));
    }
    Ok(MqttSettings {
        brokers,
        client_id: m.client_id.clone(),
        username: m.username.clone(),
        password,
        password_source,
        tls: tls(blame, m)?,
        keep_alive: Duration::from_secs(m.keep_alive_secs),
        reconnect_min: Duration::from_millis(m.reconnect_min_ms),
        reconnect_max: Duration::from_millis(m.reconnect_max_ms),
        protocol: m.protocol,
        receive_maximum: m.receive_maximum,
        scores_protocol: m.scores_protocol,
    })
}

/// A non-empty `password_file` wins; an empty one (the package ships the
/// unit's credential empty so that LoadCredential= finds one) means "not
/// set here" and leaves `password` in force. An empty password is none.
fn password(blame: &Blame, m: &MqttConfig) -> Result<(Option<String>, PasswordSource), ConfigError> {
    let (password, source) = match &m.password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                blame.invalid("mqtt.password_file", format!("cannot read {}: {e}", file.display()))
            })?;
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                let fallback = m.password.as_ref().is_some_and(|p| !p.is_empty());
                (m.password.clone(), PasswordSource::EmptyFile { file: file.clone(), fallback })
            } else {
                (Some(text.to_string()), PasswordSource::File(file.clone()))
            }
        }
        None if m.password.as_ref().is_some_and(|p| !p.is_empty()) => {
            (m.password.clone(), PasswordSource::Config)
        }
        None => (None, PasswordSource::None),
    };
    Ok((password.filter(|p| !p.is_empty()), source))
}

fn tls(blame: &Blame, m: &MqttConfig) -> Result<Option<TlsMaterial>, ConfigError> {
    let Some(t) = &m.tls else { return Ok(None) };
    let pem = |key: &str, path: &Path, what: &str| -> Result<Vec<u8>, ConfigError> {
        let bytes = std::fs::read(path)
            .map_err(|e| blame.invalid(key, format!("cannot read {}: {e}", path.display())))?;
        // Keys come as `PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`.
        let text = String::from_utf8_lossy(&bytes);
        let found = text.contains(&format!("-----BEGIN {what}"))
            || (what == "PRIVATE KEY" && text.contains("PRIVATE KEY-----"));
        if !found {
            return Err(blame.invalid(key, format!("{} holds no PEM {what}", path.display())));
        }
        Ok(bytes)
    };
    let ca = pem("mqtt.tls.ca_file", &t.ca_file, "CERTIFICATE")?;
    let client = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            Some((pem("mqtt.tls.cert_file", c, "CERTIFICATE")?, pem("mqtt.tls.key_file", k, "PRIVATE KEY")?))
        }
        (None, None) => None,
        _ => {
            return Err(
                blame.invalid("mqtt.tls.cert_file", "a client certificate needs both cert_file and key_file")
            )
        }
    };
    Ok(Some(TlsMaterial { ca, client }))
}

fn limits(blame: &Blame, l: &LimitsConfig) -> Result<Limits, ConfigError> {
    if l.max_payload_bytes < 64 || l.max_payload_bytes > 64 * 1024 * 1024 {
        return Err(blame.invalid("limits.max_payload_bytes", "must be between 64 bytes and 64 MiB"));
    }
    for (key, v) in [
        ("limits.max_batch", l.max_batch),
        ("limits.max_samples_per_message", l.max_samples_per_message),
        ("limits.max_keys_per_sample", l.max_keys_per_sample),
        ("limits.max_devices_per_pipeline", l.max_devices_per_pipeline),
        ("limits.max_json_depth", l.max_json_depth),
    ] {
        if v == 0 {
            return Err(blame.invalid(key, "must be at least 1"));
        }
    }
    if l.batch_wait_us > 100_000 {
        return Err(blame.invalid(
            "limits.batch_wait_us",
            "must be at most 100000 (100 ms: every message of a turn waits for it)",
        ));
    }
    if l.max_future_ms < 1000 {
        return Err(blame.invalid(
            "limits.max_future_ms",
            "must be at least 1000 (1 s): no device's clock is exactly the gateway's",
        ));
    }
    if l.device_idle_secs == 0 {
        return Err(blame.invalid("limits.device_idle_secs", "must be at least 1"));
    }
    if let Some(t) = &l.dead_letter_topic {
        if t.is_empty() || t.contains(['+', '#']) {
            return Err(
                blame.invalid("limits.dead_letter_topic", format!("`{t}` must be a topic without wildcards"))
            );
        }
    }
    Ok(Limits {
        max_payload_bytes: l.max_payload_bytes,
        max_batch: l.max_batch,
        batch_wait: Duration::from_micros(l.batch_wait_us),
        max_samples_per_message: l.max_samples_per_message,
        max_keys_per_sample: l.max_keys_per_sample,
        max_json_depth: l.max_json_depth,
        max_devices_per_pipeline: l.max_devices_per_pipeline,
        device_idle: Duration::from_secs(l.device_idle_secs),
        max_future: Duration::from_millis(l.max_future_ms),
        stale_intake: (l.stale_intake_secs > 0).then(|| Duration::from_secs(l.stale_intake_secs)),
        dead_letter_topic: l.dead_letter_topic.clone(),
        require_ts: false,
    })
}

fn state(blame: &Blame, st: &StateConfig) -> Result<StateSettings, ConfigError> {
    if st.commit_interval_ms == 0 || st.commit_interval_ms > 1000 {
        return Err(blame.invalid("state.commit_interval_ms", "must be between 1 and 1000"));
    }
    if st.outbox_max_bytes < 1024 || st.outbox_max_age_secs == 0 {
        return Err(blame.invalid(
            "state.outbox_max_bytes",
            "the outbox needs at least 1024 bytes and an age limit of at least 1 s",
        ));
    }
    Ok(StateSettings {
        dir: st.dir.clone(),
        commit_interval: Duration::from_millis(st.commit_interval_ms),
        outbox_max_bytes: st.outbox_max_bytes,
        outbox_max_age: Duration::from_secs(st.outbox_max_age_secs),
        drain_timeout: Duration::from_secs(st.drain_timeout_secs),
    })
}

fn pipelines(blame: &Blame, raw: &Config, path: &Path) -> Result<Vec<Pipeline>, ConfigError> {
    if raw.pipelines.is_empty() {
        return Err(blame.invalid("pipelines", "no [[pipelines]]: nothing to score"));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut pipelines = Vec::with_capacity(raw.pipelines.len());
    for (i, p) in raw.pipelines.iter().enumerate() {
        if raw.pipelines[..i].iter().any(|q| q.name == p.name) {
            return Err(blame
                .invalid(format!("pipelines[{i}].name"), format!("`{}` is used by two pipelines", p.name)));
        }
        pipelines.push(pipeline(blame, i, p, raw.sparkplug.is_some(), base, &raw.mqtt.client_id)?);
    }
    Ok(pipelines)
}

fn pipeline(
    blame: &Blame,
    i: usize,
    p: &PipelineConfig,
    have_node: bool,
    base: &Path,
    client_id: &str,
) -> Result<Pipeline, ConfigError> {
    let key = |k: &str| format!("pipelines[{i}].{k}");
    if p.name.trim().is_empty() {
        return Err(blame.invalid(key("name"), "is empty"));
    }
    let tag_id = match (&p.tag_id, p.input_format) {
        (Some(t), Some(InputFormat::Kepware)) => {
            TagId::parse(t).map_err(|e| blame.invalid(key("tag_id"), format!("`{t}`: {e}")))?
        }
        (Some(_), _) => return Err(blame.invalid(key("tag_id"), "is for `input_format = \"kepware\"` only")),
        (None, _) => TagId::default(),
    };
    let parsed = match p.input_format {
        Some(InputFormat::Kepware) => {
            TopicTemplate::parse_input_naming_devices(&p.input_topic, &tag_id.device_names())
        }
        _ => TopicTemplate::parse_input(&p.input_topic),
    };
    let mut input =
        parsed.map_err(|e| blame.invalid(key("input_topic"), format!("`{}`: {e}", p.input_topic)))?;
    let on_sparkplug_topic = is_sparkplug_topic(&p.input_topic);
    let input_format = match (p.input_format, on_sparkplug_topic) {
        (None, true) => InputFormat::Sparkplug,
        (None, false) => InputFormat::Lineguard,
        (Some(InputFormat::Sparkplug), false) => {
            return Err(blame.invalid(
                key("input_format"),
                format!(
                    "`sparkplug` reads `spBv1.0/{{group}}/DDATA/{{node}}/{{device}}` topics, not `{}`",
                    p.input_topic
                ),
            ))
        }
        (Some(f), true) if f != InputFormat::Sparkplug => {
            return Err(blame.invalid(
                key("input_format"),
                format!("`{}`: a `spBv1.0/...` topic carries Sparkplug B; remove input_format", f.as_str()),
            ))
        }
        (Some(f), _) => f,
    };
    let ts_unit = match (p.ts_unit, input_format) {
        (Some(u), InputFormat::Sparkplug) if u != TsUnit::Ms => {
            return Err(blame.invalid(
                key("ts_unit"),
                format!(
                    "`{}`: Sparkplug B timestamps are always epoch milliseconds; remove ts_unit",
                    u.as_str()
                ),
            ))
        }
        (Some(u), _) => u,
        (None, f) => f.default_ts_unit(),
    };
    let tag_keys = tag_keys(blame, i, p, input_format)?;
    if input_format == InputFormat::Tag {
        input = input
            .naming_features_by("feature")
            .map_err(|e| blame.invalid(key("input_topic"), format!("`{}`: {e}", p.input_topic)))?;
    }
    let input_births = if on_sparkplug_topic {
        let levels: Vec<&str> = p.input_topic.split('/').collect();
        if levels.len() != 5 || levels[2] != "DDATA" {
            return Err(blame.invalid(
                key("input_topic"),
                format!(
                    "`{}`: a Sparkplug input is `spBv1.0/{{group}}/DDATA/{{node}}/{{device}}` \
                     (group and node may be literal)",
                    p.input_topic
                ),
            ));
        }
        let births = p.input_topic.replacen("/DDATA/", "/DBIRTH/", 1);
        Some(TopicTemplate::parse_input(&births).expect("same levels as the input"))
    } else {
        None
    };
    let output = match (p.format, &p.output_topic) {
        (OutputFormat::Json, Some(t)) => {
            if p.device_id.is_some() {
                return Err(blame.invalid(key("device_id"), "is for `format = \"sparkplug\"` only"));
            }
            Output::Json(
                TopicTemplate::parse_output(t, &input)
                    .map_err(|e| blame.invalid(key("output_topic"), format!("`{t}`: {e}")))?,
            )
        }
        (OutputFormat::Json, None) => {
            return Err(blame.invalid(
                key("output_topic"),
                "missing: where should the scores go? (or set `format = \"sparkplug\"`)",
            ))
        }
        (OutputFormat::Sparkplug, Some(_)) => {
            return Err(blame.invalid(
                key("output_topic"),
                "not used with `format = \"sparkplug\"` (scores go to \
                 spBv1.0/{group_id}/DDATA/{edge_node_id}/{device_id}); remove it",
            ))
        }
        (OutputFormat::Sparkplug, None) => {
            if !have_node {
                return Err(blame.invalid(
                    key("format"),
                    "`sparkplug` needs a [sparkplug] section with at least `group_id`",
                ));
            }
            Output::Sparkplug(match &p.device_id {
                Some(d) => DeviceIdTemplate::parse(d, input.placeholders())
                    .map_err(|e| blame.invalid(key("device_id"), e))?,
                None => DeviceIdTemplate::joined(input.placeholders()),
            })
        }
    };
    if p.hop == 0 {
        return Err(blame.invalid(key("hop"), "must be at least 1 (1 = score on every new sample)"));
    }
    // Relative model paths are relative to the config file, not the cwd of systemd.
    let model = match &p.card {
        Some(card) => ModelFiles { onnx: base.join(&p.model), card: base.join(card) },
        None => ModelFiles::beside(base.join(&p.model)),
    };
    let alarm = p
        .alarm_topic
        .as_ref()
        .map(|t| {
            TopicTemplate::parse_output(t, &input)
                .map_err(|e| blame.invalid(key("alarm_topic"), format!("`{t}`: {e}")))
        })
        .transpose()?;
    let drift = drift_settings(blame, &key, p, client_id)?;
    let shadow = match (&p.shadow_model, &p.shadow_topic) {
        (None, None) => None,
        (Some(m), Some(t)) => {
            let topic = TopicTemplate::parse_output(t, &input)
                .map_err(|e| blame.invalid(key("shadow_topic"), format!("`{t}`: {e}")))?;
            Some(Shadow { model: ModelFiles::beside(base.join(m)), topic })
        }
        (Some(_), None) => {
            return Err(
                blame.invalid(key("shadow_topic"), "is needed with `shadow_model`: where its scores go")
            )
        }
        (None, Some(_)) => return Err(blame.invalid(key("shadow_model"), "is needed with `shadow_topic`")),
    };
    Ok(Pipeline {
        name: p.name.clone(),
        model,
        input: Input { topic: input, format: input_format, ts_unit, tag_keys, tag_id, births: input_births },
        output,
        hop: p.hop,
        alarm,
        drift,
        shadow,
        rollups: Vec::new(),
    })
}

/// The `[[rollups]]`, each given to its pipeline.
fn rollups(blame: &Blame, raw: &Config, pipelines: &mut [Pipeline]) -> Result<(), ConfigError> {
    for (i, r) in raw.rollups.iter().enumerate() {
        let key = |k: &str| format!("rollups[{i}].{k}");
        if r.name.trim().is_empty() {
            return Err(blame.invalid(key("name"), "is empty"));
        }
        if raw.rollups[..i].iter().any(|q| q.name == r.name) {
            return Err(blame.invalid(key("name"), format!("`{}` is used by two rollups", r.name)));
        }
        let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
        let Some(p) = pipelines.iter_mut().find(|p| p.name == r.pipeline) else {
            return Err(blame.invalid(
                key("pipeline"),
                format!("`{}` is not a pipeline (there are {names:?})", r.pipeline),
            ));
        };
        let input = &p.input.topic;
        let group = TopicTemplate::parse_output(&r.group, input)
            .map_err(|e| blame.invalid(key("group"), format!("`{}`: {e}", r.group)))?;
        if group.placeholders().is_empty() {
            return Err(blame.invalid(
                key("group"),
                format!(
                    "`{}` has no placeholder of `{}`: say what groups the devices, e.g. `{{line}}`",
                    r.group,
                    input.as_str()
                ),
            ));
        }
        let output = TopicTemplate::parse_output(&r.output_topic, input)
            .map_err(|e| blame.invalid(key("output_topic"), format!("`{}`: {e}", r.output_topic)))?;
        if let Some(n) = output.placeholders().iter().find(|n| !group.placeholders().contains(n)) {
            return Err(blame.invalid(
                key("output_topic"),
                format!("`{{{n}}}` is not in the group `{}`: a group's devices would share one topic under several names", r.group),
            ));
        }
        if output.as_str().contains('+') || output.as_str().contains('#') {
            return Err(blame.invalid(key("output_topic"), "must not hold MQTT wildcards"));
        }
        if r.inputs.is_empty() {
            return Err(blame.invalid(key("inputs"), "is empty: name the scores, e.g. `{ anomaly = 1.0 }`"));
        }
        if let Some((s, w)) = r.inputs.iter().find(|(_, w)| !(w.is_finite() && **w > 0.0)) {
            return Err(blame.invalid(key(&format!("inputs.{s}")), format!("{w} must be a positive number")));
        }
        if let Some((d, w)) = r.weights.iter().find(|(_, w)| !(w.is_finite() && **w >= 0.0)) {
            return Err(blame.invalid(key(&format!("weights.{d}")), format!("{w} must be a number >= 0")));
        }
        for (k, secs) in [("interval_secs", r.interval_secs), ("stale_secs", r.stale_secs)] {
            if secs == 0 || secs > 366 * 86_400 {
                return Err(blame.invalid(key(k), format!("{secs} must be 1 s .. a year")));
            }
        }
        p.rollups.push(crate::pipeline::rollup::RollupSettings {
            name: r.name.clone(),
            group,
            output,
            inputs: r.inputs.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            weights: crate::pipeline::rollup::Weights::new(&r.weights),
            method: r.method,
            interval_ms: r.interval_secs as i64 * 1000,
            stale_ms: r.stale_secs as i64 * 1000,
        });
    }
    Ok(())
}

/// The `drift_*` keys, checked.
fn drift_settings(
    blame: &Blame,
    key: &dyn Fn(&str) -> String,
    p: &PipelineConfig,
    client_id: &str,
) -> Result<DriftSettings, ConfigError> {
    let positive = |k: &str, v: f64, min: f64, what: &str| {
        if v.is_finite() && v >= min {
            Ok(v)
        } else {
            Err(blame.invalid(key(k), format!("{v} must be {what}")))
        }
    };
    let half_life = positive("drift_half_life", p.drift_half_life, 1.0, "at least 1 (samples)")?;
    let mean_z = positive("drift_mean_z", p.drift_mean_z, f64::MIN_POSITIVE, "a number > 0")?;
    let std_ratio = positive("drift_std_ratio", p.drift_std_ratio, 1.0, "at least 1")?;
    if p.drift_interval_secs == 0 {
        return Err(blame.invalid(key("drift_interval_secs"), "0 must be at least 1"));
    }
    Ok(DriftSettings {
        half_life,
        interval: Duration::from_secs(p.drift_interval_secs),
        mean_z,
        std_ratio,
        topic: format!("lineguard/{client_id}/drift/{}", p.name),
    })
}

/// The payload keys of `input_format = "tag"`; refused for other formats.
fn tag_keys(
    blame: &Blame,
    i: usize,
    p: &PipelineConfig,
    format: InputFormat,
) -> Result<TagKeys, ConfigError> {
    let given = [("tag_value", &p.tag_value), ("tag_ts", &p.tag_ts), ("tag_quality", &p.tag_quality)];
    if format != InputFormat::Tag {
        if let Some((k, _)) = given.iter().find(|(_, v)| v.is_some()) {
            return Err(blame.invalid(format!("pipelines[{i}].{k}"), "is for `input_format = \"tag\"` only"));
        }
        return Ok(TagKeys::default());
    }
    if let Some((k, _)) = given.iter().find(|(_, v)| v.as_deref().is_some_and(str::is_empty)) {
        return Err(blame.invalid(format!("pipelines[{i}].{k}"), "is empty: name the payload's key"));
    }
    let d = TagKeys::default();
    Ok(TagKeys {
        value: p.tag_value.clone().unwrap_or(d.value),
        ts: p.tag_ts.clone().unwrap_or(d.ts),
        quality: p.tag_quality.clone(),
    })
}

fn sparkplug(blame: &Blame, sp: &SparkplugConfig, m: &MqttConfig) -> Result<SparkplugSettings, ConfigError> {
    let id = |k: &str, v: &str| -> Result<String, ConfigError> {
        if v.trim().is_empty() || v.contains(['/', '+', '#']) {
            return Err(blame.invalid(
                format!("sparkplug.{k}"),
                format!("`{v}` must be a non-empty Sparkplug id without `/`, `+` or `#`"),
            ));
        }
        Ok(v.to_string())
    };
    let node = NodeConfig {
        group_id: id("group_id", &sp.group_id)?,
        edge_node_id: id("edge_node_id", sp.edge_node_id.as_deref().unwrap_or(&m.client_id))?,
        primary_host_id: sp.primary_host_id.as_deref().map(|h| id("primary_host_id", h)).transpose()?,
    };
    let client_id =
        id("client_id", &sp.client_id.clone().unwrap_or_else(|| format!("{}-sparkplug", m.client_id)))?;
    let scores_id = publisher_client_id(&m.client_id);
    if client_id == m.client_id || client_id == scores_id {
        return Err(blame.invalid(
            "sparkplug.client_id",
            format!(
                "must differ from mqtt.client_id and from the score publisher's `{scores_id}` (the \
                 broker would drop one of the two connections)"
            ),
        ));
    }
    Ok(SparkplugSettings { node, client_id })
}

/// `[redundancy]`: the peer is another instance, the replay is not empty.
fn redundancy(
    blame: &Blame,
    r: &RedundancyConfig,
    m: &MqttConfig,
) -> Result<RedundancySettings, ConfigError> {
    if r.peer.trim().is_empty() || r.peer.contains(['/', '+', '#']) {
        return Err(blame.invalid(
            "redundancy.peer",
            format!("`{}` must be the other instance's mqtt.client_id (no `/`, `+` or `#`)", r.peer),
        ));
    }
    if r.peer == m.client_id {
        return Err(blame.invalid(
            "redundancy.peer",
            format!("`{}` is this instance's own mqtt.client_id: name the other instance's", r.peer),
        ));
    }
    if r.takeover_replay_secs == 0 {
        return Err(blame.invalid(
            "redundancy.takeover_replay_secs",
            "must be at least 1: a standby keeps this much data time to publish when it takes over",
        ));
    }
    Ok(RedundancySettings {
        role: r.role,
        peer: r.peer.clone(),
        takeover_replay: Duration::from_secs(r.takeover_replay_secs),
    })
}

/// No pipeline's output may feed a pipeline's input: scores would be scored.
fn no_feedback(
    blame: &Blame,
    pipelines: &[Pipeline],
    sparkplug: Option<&SparkplugSettings>,
) -> Result<(), ConfigError> {
    for (i, p) in pipelines.iter().enumerate() {
        let published = match (&p.output, sparkplug) {
            (Output::Json(t), _) => t.filter().replace('+', "x"),
            (Output::Sparkplug(_), Some(sp)) => sp.node.topic("DDATA", Some("x")),
            (Output::Sparkplug(_), None) => continue,
        };
        for q in pipelines {
            if q.input.takes(&published)
                || matches!(&p.output, Output::Json(t) if t.as_str() == q.input.topic.as_str())
            {
                return Err(blame.invalid(
                    format!("pipelines[{i}].output_topic"),
                    format!(
                        "`{}` feeds the input of pipeline `{}`: scores would be scored",
                        p.output_display(sparkplug.map(|s| &s.node)),
                        q.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

//! The daemon's configuration: one TOML file plus `LINEGUARD__SECTION__KEY`
//! environment overrides, read with the `config` crate.
//!
//! - [`schema`]: what the file may say, with defaults (unknown keys are errors);
//! - [`validate`]: each section checked, an error naming the key and the fix;
//! - [`settings`]: the result, [`Settings`]: each stage's settings, typed
//!   and owned by the stage (templates parsed, paths resolved, secrets read,
//!   durations in their units). Nothing outside this module reads the
//!   schema, and no stage imports this module.

mod schema;
mod settings;
mod validate;

use std::path::{Path, PathBuf};

use schema::Config;
pub(crate) use settings::Settings;

pub(crate) const DEFAULT_PATH: &str = "/etc/lineguard/lineguard.toml";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    /// A `LINEGUARD__...` variable that the file alone would not have failed on.
    #[error("environment variable {var}: {message}")]
    Environment { var: String, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// Load and validate the configuration at `path`, with environment overrides
/// from `env` (pass `std::env::vars()`).
///
/// Environment values are taken as written (`007` stays the string `"007"`
/// for a string key); numeric and boolean keys still read them as numbers
/// and booleans. An error that one variable causes on its own is blamed on
/// that variable, not on the file.
pub(crate) fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let load_err = |message: String| ConfigError::Load { path: path.to_path_buf(), message };
    if !path.exists() {
        return Err(load_err(
            "file not found (pass --config PATH, or install deploy/lineguard.toml there)".into(),
        ));
    }
    let overrides: config::Map<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with("LINEGUARD__")).collect();
    let read = |vars: config::Map<String, String>| -> Result<Config, String> {
        config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("LINEGUARD")
                    .prefix_separator("__")
                    .separator("__")
                    .source(Some(vars)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| e.to_string())
    };
    let raw = match read(overrides.clone()) {
        Ok(raw) => raw,
        Err(message) => {
            if read(config::Map::new()).is_ok() {
                let single = |k: &String, v: &String| config::Map::from([(k.clone(), v.clone())]);
                if let Some((var, _)) = overrides.iter().find(|(k, v)| read(single(k, v)).is_err()) {
                    let key = var["LINEGUARD__".len()..].to_lowercase().replace("__", ".");
                    return Err(ConfigError::Environment {
                        var: var.clone(),
                        message: format!(
                            "sets `{key}`: {} (unset or correct the variable)",
                            explain(&message)
                        ),
                    });
                }
            }
            return Err(load_err(explain(&message)));
        }
    };
    validate::validate(path, raw)
}

/// Turn the config crate's wording into advice.
fn explain(message: &str) -> String {
    if message.contains("unknown field") {
        format!(
            "{message} (remove or correct the key; unknown keys are refused so typos cannot pass silently)"
        )
    } else if message.contains("missing field") {
        format!("{message} (this key is required; see deploy/lineguard.toml)")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::{PasswordSource, Protocol};

    const MINIMAL: &str = r#"
[mqtt]
host = "127.0.0.1"
port = 1883
client_id = "lineguard-gw01"
password = "s3cret"
username = "lg"

[state]
dir = "/var/lib/lineguard"

[http]
listen = "127.0.0.1:9898"

[[pipelines]]
name = "press-line"
model = "/usr/share/lineguard/models/line-mlp.onnx"
input_topic = "plant/{line}/{machine}/telemetry"
output_topic = "plant/{line}/{machine}/lineguard/scores"
"#;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lineguard.toml");
        std::fs::write(&path, text).unwrap();
        load(&path, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn spec_example_loads_with_defaults() {
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!(s.pipelines[0].hop, 1);
        assert_eq!(s.pipelines[0].input.topic.filter(), "plant/+/+/telemetry");
        assert_eq!(s.pipelines[0].model.card, Path::new("/usr/share/lineguard/models/line-mlp.toml"));
        assert_eq!(s.mqtt.status_topic(), "lineguard/lineguard-gw01/status");
        let shown = s.display_masked();
        assert!(!shown.contains("s3cret") && shown.contains("********"), "{shown}");
    }

    #[test]
    fn environment_overrides() {
        let s = load_text(
            MINIMAL,
            &[("LINEGUARD__MQTT__PORT", "2883"), ("LINEGUARD__MQTT__HOST", "broker.local"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(s.mqtt.brokers[0].to_string(), "broker.local:2883");
    }

    /// Strings from the environment stay exactly as written; numbers and
    /// booleans still read as numbers and booleans.
    #[test]
    fn environment_strings_keep_what_was_written() {
        let s = load_text(
            MINIMAL,
            &[
                ("LINEGUARD__MQTT__CLIENT_ID", "007"),
                ("LINEGUARD__MQTT__PASSWORD", "0123456"),
                ("LINEGUARD__MQTT__USERNAME", "1e3"),
                ("LINEGUARD__MQTT__KEEP_ALIVE_SECS", "045"),
                ("LINEGUARD__LIMITS__DEAD_LETTER_TOPIC", "true"),
            ],
        )
        .unwrap();
        assert_eq!(s.mqtt.client_id, "007");
        assert_eq!(s.mqtt.password.as_deref(), Some("0123456"));
        assert_eq!(s.mqtt.username.as_deref(), Some("1e3"));
        assert_eq!(s.mqtt.keep_alive, std::time::Duration::from_secs(45));
        assert_eq!(s.limits.dead_letter_topic.as_deref(), Some("true"));
        assert_eq!(s.mqtt.status_topic(), "lineguard/007/status");
    }

    #[test]
    fn an_unknown_or_unreadable_environment_key_names_the_variable() {
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__HOTS", "broker")]).unwrap_err().to_string();
        assert!(e.starts_with("environment variable LINEGUARD__MQTT__HOTS:"), "{e}");
        assert!(e.contains("mqtt.hots") && e.contains("unknown field"), "{e}");
        assert!(!e.contains("lineguard.toml"), "the file is not to blame: {e}");
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__PORT", "eighty")]).unwrap_err().to_string();
        assert!(e.starts_with("environment variable LINEGUARD__MQTT__PORT:"), "{e}");
        // The file's own mistakes are still the file's.
        let e = load_text(&MINIMAL.replace("port = 1883", "prot = 1883"), &[("LINEGUARD__MQTT__HOST", "b")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("lineguard.toml") && e.contains("prot"), "{e}");
    }

    /// A non-empty password file wins; an empty one (as the package ships
    /// it for the unit's LoadCredential=) leaves `password` in force.
    #[test]
    fn password_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mqtt-password");
        let with_file = |content: &str| {
            std::fs::write(&file, content).unwrap();
            let env = [("LINEGUARD__MQTT__PASSWORD_FILE", file.to_str().unwrap())];
            load_text(MINIMAL, &env).unwrap()
        };
        let s = with_file("");
        assert_eq!(s.mqtt.password.as_deref(), Some("s3cret"), "an empty file: the config's password");
        assert!(
            s.mqtt.password_source.to_string().starts_with("from mqtt.password ("),
            "{}",
            s.mqtt.password_source
        );
        let s = with_file("from-file\n");
        assert_eq!(s.mqtt.password.as_deref(), Some("from-file"));
        assert_eq!(s.mqtt.password_source, PasswordSource::File(file.clone()));
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!(s.mqtt.password_source, PasswordSource::Config);
        std::fs::write(&file, "").unwrap();
        let no_password = MINIMAL.replace("password = \"s3cret\"\n", "");
        let env = [("LINEGUARD__MQTT__PASSWORD_FILE", file.to_str().unwrap())];
        let s = load_text(&no_password, &env).unwrap();
        assert_eq!(s.mqtt.password, None);
        assert!(s.mqtt.password_source.to_string().starts_with("none ("), "{}", s.mqtt.password_source);
    }

    #[test]
    fn mqtt_protocol_defaults_to_3_1_1_and_5_is_chosen_by_name() {
        let s = load_text(MINIMAL, &[]).unwrap();
        assert_eq!((s.mqtt.protocol, s.mqtt.receive_maximum), (Protocol::V311, 1000));
        let s = load_text(MINIMAL, &[("LINEGUARD__MQTT__PROTOCOL", "3.1.1")]).unwrap();
        assert_eq!(s.mqtt.protocol, Protocol::V311);
        let s = load_text(MINIMAL, &[("LINEGUARD__MQTT__PROTOCOL", "5")]).unwrap();
        assert_eq!(s.mqtt.protocol, Protocol::V5, "from the environment");
        let s = load_text(&MINIMAL.replace("port = 1883", "port = 1883\nprotocol = 5"), &[]).unwrap();
        assert_eq!(s.mqtt.protocol, Protocol::V5);
        let text = MINIMAL.replace("port = 1883", "port = 1883\nprotocol = \"5\"\nreceive_maximum = 200");
        let s = load_text(&text, &[]).unwrap();
        assert_eq!((s.mqtt.protocol, s.mqtt.receive_maximum), (Protocol::V5, 200));
        let e = load_text(&MINIMAL.replace("port = 1883", "port = 1883\nprotocol = \"4\""), &[]).unwrap_err();
        assert!(e.to_string().contains("protocol"), "{e}");
        let e =
            load_text(&MINIMAL.replace("port = 1883", "port = 1883\nreceive_maximum = 0"), &[]).unwrap_err();
        assert!(e.to_string().contains("mqtt.receive_maximum"), "{e}");
    }

    /// `mqtt.hosts` instead of `host` and `port`: several brokers, in the
    /// order tried; both at once, or an address without its port, refused.
    #[test]
    fn several_brokers_by_hosts() {
        let hosts =
            |list: &str| MINIMAL.replace("host = \"127.0.0.1\"\nport = 1883", &format!("hosts = {list}"));
        let s = load_text(&hosts(r#"["10.0.0.5:1883", "broker-b:8883", "[::1]:1884"]"#), &[]).unwrap();
        let shown: Vec<String> = s.mqtt.brokers.iter().map(|b| b.to_string()).collect();
        assert_eq!(shown, ["10.0.0.5:1883", "broker-b:8883", "[::1]:1884"]);
        assert_eq!(load_text(MINIMAL, &[]).unwrap().mqtt.brokers[0].to_string(), "127.0.0.1:1883");
        let no_port = MINIMAL.replace("port = 1883\n", "");
        assert_eq!(load_text(&no_port, &[]).unwrap().mqtt.brokers[0].port, 1883, "the default port");
        for (text, why) in [
            (MINIMAL.replace("port = 1883", "port = 1883\nhosts = [\"a:1\"]"), "not both"),
            (hosts("[]"), "is empty"),
            (hosts(r#"["broker-a"]"#), "must be \"host:port\""),
            (hosts(r#"["broker-a:http"]"#), "is not a port"),
            (MINIMAL.replace("host = \"127.0.0.1\"\n", ""), "missing"),
        ] {
            let e = load_text(&text, &[]).unwrap_err().to_string();
            assert!(e.contains("mqtt.host") && e.contains(why), "{why}: {e}");
        }
    }

    /// `[redundancy]`: a pair needs the other instance's id and a replay;
    /// it requires every sample's own `ts`; absent, the daemon is standalone.
    #[test]
    fn redundancy_settings() {
        let pair = |extra: &str| format!("{MINIMAL}\n[redundancy]\n{extra}");
        let s = load_text(&pair("role = \"backup\"\npeer = \"lineguard-gw02\""), &[]).unwrap();
        let r = s.redundancy.as_ref().unwrap();
        assert_eq!((r.role.as_str(), r.peer.as_str()), ("backup", "lineguard-gw02"));
        assert_eq!(r.takeover_replay, std::time::Duration::from_secs(30), "the default replay");
        assert_eq!(r.peer_status_topic(), "lineguard/lineguard-gw02/status");
        assert!(s.limits.require_ts, "two instances must not stamp arrival times");
        let alone = load_text(MINIMAL, &[]).unwrap();
        assert!(alone.redundancy.is_none() && !alone.limits.require_ts, "standalone, exactly as before");
        for (extra, why) in [
            ("role = \"primary\"\npeer = \"lineguard-gw01\"", "this instance's own mqtt.client_id"),
            ("role = \"primary\"\npeer = \"\"", "must be the other instance's"),
            ("role = \"primary\"\npeer = \"gw/2\"", "must be the other instance's"),
            ("role = \"primary\"\npeer = \"b\"\ntakeover_replay_secs = 0", "at least 1"),
            ("role = \"leader\"\npeer = \"b\"", "leader"),
            ("peer = \"b\"", "role"),
        ] {
            let e = load_text(&pair(extra), &[]).unwrap_err().to_string();
            assert!(e.contains(why), "{why}: {e}");
        }
        let spb = pair("role = \"primary\"\npeer = \"b\"")
            .replace("[redundancy]", "[sparkplug]\ngroup_id = \"plant\"\n\n[redundancy]");
        let s = load_text(&spb, &[]).unwrap();
        assert_eq!(s.sparkplug.unwrap().client_id, "lineguard-gw01-sparkplug");
        let theirs = spb.replace("group_id = \"plant\"", "group_id = \"plant\"\nclient_id = \"b-sparkplug\"");
        let e = load_text(&theirs, &[]).unwrap_err().to_string();
        assert!(e.contains("sparkplug.client_id") && e.contains("the peer's"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = load_text(&MINIMAL.replace("port = 1883", "prot = 1883"), &[]).unwrap_err().to_string();
        assert!(e.contains("prot") && e.contains("unknown"), "{e}");
        let e = load_text(
            &MINIMAL.replace("hop", "x").replace("name = \"press-line\"", "name = \"p\"\nhopp = 2"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hopp"), "{e}");
        let e = load_text(MINIMAL, &[("LINEGUARD__MQTT__COLOUR", "red")]).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn sparkplug_output_and_input() {
        let spb = MINIMAL.replace(
            "output_topic = \"plant/{line}/{machine}/lineguard/scores\"",
            "format = \"sparkplug\"\ndevice_id = \"{line}.{machine}\"",
        );
        let e = load_text(&spb, &[]).unwrap_err().to_string();
        assert!(e.contains("pipelines[0].format") && e.contains("[sparkplug]"), "{e}");
        let with_node = format!("{spb}\n[sparkplug]\ngroup_id = \"plant\"\n");
        let s = load_text(&with_node, &[]).unwrap();
        let sp = s.sparkplug.as_ref().unwrap();
        assert_eq!(sp.node.edge_node_id, "lineguard-gw01", "defaults to the client id");
        assert_eq!(sp.client_id, "lineguard-gw01-sparkplug");
        assert_eq!(s.mqtt.publisher_client_id(), "lineguard-gw01-scores");
        let clash = with_node
            .replace("group_id = \"plant\"", "group_id = \"plant\"\nclient_id = \"lineguard-gw01-scores\"");
        assert!(load_text(&clash, &[]).unwrap_err().to_string().contains("sparkplug.client_id"));
        assert_eq!(
            s.pipelines[0].output_display(Some(&sp.node)),
            "spBv1.0/plant/DDATA/lineguard-gw01/{line}.{machine}"
        );
        let both = with_node.replace("format = ", "output_topic = \"a/{line}/{machine}\"\nformat = ");
        assert!(load_text(&both, &[]).unwrap_err().to_string().contains("pipelines[0].output_topic"));
        let bad = with_node.replace("group_id = \"plant\"", "group_id = \"a/b\"");
        assert!(load_text(&bad, &[]).unwrap_err().to_string().contains("sparkplug.group_id"));

        let input = MINIMAL.replace("plant/{line}/{machine}/telemetry", "spBv1.0/{line}/DDATA/gw/{machine}");
        let s = load_text(&input, &[]).unwrap();
        assert_eq!(s.pipelines[0].input.filters(), ["spBv1.0/+/DDATA/gw/+", "spBv1.0/+/DBIRTH/gw/+"]);
        assert!(s.pipelines[0].input.takes("spBv1.0/l1/DBIRTH/gw/m1"));
        let wrong = MINIMAL.replace("plant/{line}/{machine}/telemetry", "spBv1.0/{line}/NDATA/{machine}");
        assert!(load_text(&wrong, &[]).unwrap_err().to_string().contains("DDATA"));
        // The node's own DDATA must not feed a Sparkplug input.
        let feedback = format!(
            "{}\n[[pipelines]]\nname = \"q\"\nmodel = \"m.onnx\"\ninput_topic = \"spBv1.0/plant/DDATA/{{node}}/{{device}}\"\noutput_topic = \"x/{{node}}/{{device}}\"\n",
            with_node
        );
        assert!(load_text(&feedback, &[]).unwrap_err().to_string().contains("scores would be scored"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        let cases = [
            (
                "input_topic = \"plant/{line}/{machine}/telemetry\"",
                "input_topic = \"plant/#\"",
                "pipelines[0].input_topic",
            ),
            (
                "output_topic = \"plant/{line}/{machine}/lineguard/scores\"",
                "output_topic = \"x/{cell}\"",
                "pipelines[0].output_topic",
            ),
            ("client_id = \"lineguard-gw01\"", "client_id = \"a/b\"", "mqtt.client_id"),
            ("port = 1883", "port = 70000", "port"),
            ("listen = \"127.0.0.1:9898\"", "listen = \"nowhere\"", "listen"),
        ];
        for (from, to, key) in cases {
            let e = load_text(&MINIMAL.replace(from, to), &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{to}: {e}");
        }
        let e = load_text(&MINIMAL.replace("name = \"press-line\"", "name = \"p\"\nhop = 0"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipelines[0].hop"), "{e}");
        let limits = |wait: &str| load_text(&format!("{MINIMAL}\n[limits]\nbatch_wait_us = {wait}\n"), &[]);
        let e = limits("100001").unwrap_err().to_string();
        assert!(e.contains("limits.batch_wait_us") && e.contains("at most 100000"), "{e}");
        assert_eq!(limits("0").unwrap().limits.batch_wait, std::time::Duration::ZERO, "0 scores at once");
        assert_eq!(
            load_text(MINIMAL, &[]).unwrap().limits.batch_wait,
            std::time::Duration::from_micros(500),
            "the default"
        );
        let e = load(Path::new("/nonexistent/lineguard.toml"), []).unwrap_err().to_string();
        assert!(e.contains("not found"), "{e}");
    }
}

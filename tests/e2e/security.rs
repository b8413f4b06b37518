//! TLS (with a client certificate) and a password to the broker, against
//! mosquitto with certificates made here: the right settings connect; a wrong
//! CA or password fails with a clear error and backs off, no retry storm;
//! secrets appear in no log and no `check-config` output.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon};
use crate::support::golden::Golden;
use crate::support::line::line_pipeline;
use crate::support::mqtt::{Publisher, Subscriber};

const PASSWORD: &str = "s3cret-Pa55word";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("this test needs the openssl command (Debian: openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate,
/// and an unrelated CA; plus a mosquitto password file.
fn make_pki(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    // X.509 v3 with the usual extensions: rustls refuses v1 certificates.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for name in ["server", "client"] {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let subj = format!("/CN={name}");
        openssl(
            dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr],
        );
        let mut args = vec!["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key"];
        args.extend(["-CAcreateserial", "-days", "2", "-out", &pem]);
        let ext = format!("{name}.ext");
        args.extend(["-extfile", &ext]);
        openssl(dir, &args);
    }
    let out = Command::new("mosquitto_passwd")
        .args(["-b", "-c", dir.join("passwd").to_str().unwrap(), "lineguard", PASSWORD])
        .output()
        .expect("mosquitto_passwd (package mosquitto)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn tls_broker(tls_port: u16) -> Broker {
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {{dir}}/ca.pem\ncertfile {{dir}}/server.pem\nkeyfile {{dir}}/server.key\n\
         require_certificate true\nallow_anonymous false\npassword_file {{dir}}/passwd\n"
    );
    Broker::mosquitto().config(&extra, make_pki).start()
}

/// A daemon connecting over TLS on `tls_port` with these CA and password.
fn daemon(broker: &Broker, tls_port: u16, id: &str, ca: &str, password: &str) -> Daemon {
    let dir = broker.dir();
    std::fs::write(dir.join(format!("{id}.pw")), format!("{password}\n")).unwrap();
    let mqtt_extra = format!(
        "username = \"lineguard\"\npassword_file = \"{d}/{id}.pw\"\n\n[mqtt.tls]\nca_file = \"{d}/{ca}\"\n\
         cert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"\n",
        d = dir.display()
    );
    let text = config(tls_port, id, crate::support::daemon::own_state(), &[line_pipeline()], "").replacen(
        "\n[state]",
        &format!("\n{mqtt_extra}\n[state]"),
        1,
    );
    Daemon::start(&text)
}

#[test]
fn tls_with_client_certificate_and_password_connects_and_scores() {
    let tls_port = lineguard::tools::broker::free_port().unwrap();
    let broker = tls_broker(tls_port);
    let status = Subscriber::new(broker.port, &["lineguard/lg-tls/status"]);
    let d = daemon(&broker, tls_port, "lg-tls", "ca.pem", PASSWORD);
    status.wait_for("lineguard/lg-tls/status", "\"online\"", Duration::from_secs(30));
    // Telemetry in through the plain listener reaches it over TLS; scores come back.
    let golden = Golden::load("models/fixtures/line-mlp.golden.json");
    let scores = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let mut p = Publisher::new(broker.port);
    let (device, samples) = golden.devices.iter().next().unwrap();
    for s in samples.iter().take(16) {
        p.publish(&format!("plant/{device}/telemetry"), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let got = scores.collect(1, Duration::from_secs(20), Duration::ZERO, |_| true);
    assert_eq!(got.len(), 1, "a score over TLS; log:\n{}", d.log());
    assert!(!d.log().contains(PASSWORD), "the password leaked into the log");
}

fn assert_refused_quietly(d: &mut Daemon, needle: &str) {
    std::thread::sleep(Duration::from_secs(1));
    let cpu = d.cpu_seconds();
    std::thread::sleep(Duration::from_secs(3));
    let used = d.cpu_seconds() - cpu;
    let log = d.log();
    assert!(d.is_running(), "it keeps trying; log:\n{log}");
    assert!(log.contains(needle), "the log should say `{needle}`:\n{log}");
    let warnings = log.matches("broker connection lost or refused").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings in 4 s (no retry storm):\n{log}");
    assert!(used < 0.5, "{used} s CPU in 3 s while refused");
    assert!(!log.contains(PASSWORD), "the password leaked into the log");
    let (code, body) = d.http_get("/healthz");
    assert_eq!(code, 503, "{body}");
}

#[test]
fn a_wrong_ca_fails_clearly_with_backoff() {
    let tls_port = lineguard::tools::broker::free_port().unwrap();
    let broker = tls_broker(tls_port);
    let mut d = daemon(&broker, tls_port, "lg-badca", "other-ca.pem", PASSWORD);
    assert_refused_quietly(&mut d, "UnknownIssuer");
}

#[test]
fn a_wrong_password_fails_clearly_with_backoff() {
    let tls_port = lineguard::tools::broker::free_port().unwrap();
    let broker = tls_broker(tls_port);
    let mut d = daemon(&broker, tls_port, "lg-badpw", "ca.pem", "not-the-password");
    assert_refused_quietly(&mut d, "refused");
    assert!(!d.log().contains("not-the-password"));
}

#[test]
fn check_config_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let text = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nclient_id = \"x\"\nusername = \"lineguard\"\npassword = \"{PASSWORD}\"\n\
         [mqtt.tls]\nca_file = \"{d}/ca.pem\"\ncert_file = \"{d}/client.pem\"\nkey_file = \"{d}/client.key\"\n\
         [[pipelines]]\nname = \"p\"\nmodel = \"{m}\"\ninput_topic = \"a/{{x}}/t\"\noutput_topic = \"a/{{x}}/s\"\n",
        d = dir.path().display(),
        m = crate::support::repo_path("models/line-mlp.onnx").display()
    );
    let path = dir.path().join("lineguard.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    assert!(!all.contains("BEGIN"), "no key material printed: {all}");
    assert!(all.contains("ca_file") && all.contains("********"), "{all}");
    // A key file that is not PEM is refused at load, naming the key.
    std::fs::write(dir.path().join("client.key"), "junk").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lineguard"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqtt.tls.key_file"));
}

/// mosquitto whose second listener (`port`) needs user `lg` with `password`.
fn password_broker(port: u16, password: &'static str) -> Broker {
    let extra = format!("listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {{dir}}/passwd\n");
    Broker::mosquitto()
        .config(&extra, move |dir| {
            let out = Command::new("mosquitto_passwd")
                .args(["-b", "-c", dir.join("passwd").to_str().unwrap(), "lg", password])
                .output()
                .expect("mosquitto_passwd (package mosquitto)");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        })
        .start()
}

/// Environment values are taken as written: a client id `007` and a
/// password `0123456` (which a number parser would make `7` and `123456`).
#[test]
fn environment_strings_reach_the_broker_as_written() {
    let port = lineguard::tools::broker::free_port().unwrap();
    let broker = password_broker(port, "0123456");
    let state = tempfile::tempdir().unwrap();
    let status = Subscriber::new(broker.port, &["lineguard/007/status"]);
    let d = Daemon::start_with_env(
        &config(port, "lg-env", state.path(), &[line_pipeline()], ""),
        &[
            ("LINEGUARD__MQTT__CLIENT_ID", "007"),
            ("LINEGUARD__MQTT__USERNAME", "lg"),
            ("LINEGUARD__MQTT__PASSWORD", "0123456"),
        ],
    );
    status.wait_for("lineguard/007/status", "\"online\"", Duration::from_secs(30));
    assert!(!d.log().contains("0123456"), "the password leaked into the log");
}

/// The unit sets `LINEGUARD__MQTT__PASSWORD_FILE` to its credential, which
/// the package creates empty: the password in the config file must still
/// be used (and check-config says which one is); a non-empty credential wins.
#[test]
fn under_the_shipped_units_environment_the_config_files_password_is_used() {
    let unit = std::fs::read_to_string(crate::support::repo_path("systemd/lineguard.service")).unwrap();
    let credentials = tempfile::tempdir().unwrap();
    let unit_env: Vec<(String, String)> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%d", credentials.path().to_str().unwrap())))
        .collect();
    assert!(unit_env.iter().any(|(k, _)| k == "LINEGUARD__MQTT__PASSWORD_FILE"), "{unit_env:?}");
    let credential = credentials.path().join("mqtt-password");
    std::fs::write(&credential, "").unwrap(); // as deploy/debian/postinst makes it

    let port = lineguard::tools::broker::free_port().unwrap();
    let broker = password_broker(port, PASSWORD);
    let state = tempfile::tempdir().unwrap();
    let text = config(port, "lg-unit-env", state.path(), &[line_pipeline()], "").replacen(
        "\n[state]",
        &format!("\nusername = \"lg\"\npassword = \"{PASSWORD}\"\n\n[state]"),
        1,
    );
    let env: Vec<(&str, &str)> = unit_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let check = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_lineguard"))
            .args(["check-config", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let status = Subscriber::new(broker.port, &["lineguard/lg-unit-env/status"]);
    let d = Daemon::start_with_env(&text, &env);
    let said = check(&d.config);
    assert!(said.contains("# mqtt password: from mqtt.password ("), "{said}");
    assert!(!said.contains(PASSWORD), "{said}");
    status.wait_for("lineguard/lg-unit-env/status", "\"online\"", Duration::from_secs(30));
    drop(d);
    status.wait_for("lineguard/lg-unit-env/status", "\"offline\"", Duration::from_secs(10));

    // A credential with a password in it wins over the file's.
    std::fs::write(&credential, format!("{PASSWORD}\n")).unwrap();
    let wrong = text.replace(PASSWORD, "not-it");
    let d = Daemon::start_with_env(&wrong, &env);
    assert!(check(&d.config).contains("# mqtt password: from mqtt.password_file "));
    let status = Subscriber::new(broker.port, &["lineguard/lg-unit-env/status"]);
    status.wait_for("lineguard/lg-unit-env/status", "\"online\"", Duration::from_secs(30));
}

//! Plant faults, tried as a plant would try them, each against a real
//! mosquitto with every valid window checked against ONNX Runtime: the
//! daemon stays up (or restarts by itself), loses nothing acknowledged,
//! publishes no wrong score, and says what happened in one clear line.

use std::time::{Duration, Instant};

use crate::support::broker::Broker;
use crate::support::daemon::{config, Daemon};
use crate::support::golden::{card_scores, check_scores_at_least_once, Golden};
use crate::support::line::{
    collect_every_window, line_pipeline, line_topic, publish_samples, score_topic, wait_online, LINE_CARD,
    LINE_GOLDEN,
};
use crate::support::mqtt::{Publisher, Subscriber};
use crate::support::tmpfs::Tmpfs;
use crate::support::wait_until;

/// `state.dir` fills up while telemetry flows: nothing is acknowledged,
/// `/healthz` and the log say why (once, not once a second), and when space
/// returns the store reopens by itself and every window is scored; with the
/// disk full again, SIGTERM still exits within `drain_timeout_secs`.
/// A daemon `id` whose `state.dir` is on a small disk of its own (16 MiB),
/// with a drain timeout of 3 s, online on a fresh mosquitto; a subscriber
/// to its scores.
fn on_a_small_disk(id: &str) -> (Broker, Tmpfs, std::path::PathBuf, Daemon, Subscriber) {
    let broker = Broker::mosquitto().start();
    let disk = Tmpfs::mount(16);
    let state = disk.path().join("state");
    let daemon = Daemon::start_with_env(
        &config(broker.port, id, &state, &[line_pipeline()], ""),
        &[("LINEGUARD__STATE__DRAIN_TIMEOUT_SECS", "3")],
    );
    wait_online(&broker, id);
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    (broker, disk, state, daemon, sub)
}

#[test]
fn a_full_disk_is_survived_and_a_stop_during_it_keeps_its_deadline() {
    let (broker, disk, _state, mut daemon, sub) = on_a_small_disk("lg-diskfull");
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let (first, second) = samples.split_at(samples.len() / 2);

    let filler = disk.fill();
    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, first);
    wait_until("healthz 503 while commits fail", Duration::from_secs(20), || {
        let (code, body) = daemon.http_get("/healthz");
        code == 503 && body.contains("state store cannot commit")
    });
    std::thread::sleep(Duration::from_secs(3));
    let errors = daemon.log().matches("cannot commit state").count();
    assert!(
        (1..=2).contains(&errors),
        "{errors} commit errors logged in ~4 s: not rate-limited\n{}",
        daemon.log()
    );

    std::fs::remove_file(&filler).unwrap();
    publish_samples(&mut p, second);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let got = collect_every_window(&sub, &expected, Duration::from_secs(60));
    check_scores_at_least_once(&got, &expected, "press-line", "line-mlp", score_topic);
    wait_until("healthz 200 once commits work", Duration::from_secs(20), || {
        daemon.http_get("/healthz").0 == 200
    });
    assert!(daemon.log().contains("commits resumed"), "{}", daemon.log());

    // Full again, with telemetry in hand (new devices: the store must grow
    // to take their windows): the stop gives up on the disk in time.
    let _filler = disk.fill();
    for i in 0..3000 {
        p.publish(&format!("plant/line9/m{i}/telemetry"), Golden::payload(first[0].1));
    }
    p.flush(Duration::from_secs(10));
    wait_until("commits failing again", Duration::from_secs(20), || daemon.http_get("/healthz").0 == 503);
    let started = Instant::now();
    let status = daemon.sigterm(Duration::from_secs(15));
    let took = started.elapsed();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(took <= Duration::from_millis(3500), "SIGTERM took {took:?} with drain_timeout_secs = 3");
}

/// The store turns out corrupt while the daemon runs (commits fail on a
/// full disk, the file's header is damaged meanwhile, and the reopen once
/// space returns finds the file unreadable): the daemon stops through
/// every phase of a stop, says why in one line and exits non-zero, so that
/// systemd starts it again; that start sets the file aside and scores.
#[test]
fn a_store_found_corrupt_while_running_stops_the_daemon_cleanly() {
    let (broker, disk, state, mut daemon, sub) = on_a_small_disk("lg-corrupt");
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let (first, second) = samples.split_at(samples.len() / 2);
    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, first);
    assert!(!sub.collect(1, Duration::from_secs(30), Duration::ZERO, |_| true).is_empty(), "scores");

    let filler = disk.fill();
    publish_samples(&mut p, second);
    wait_until("commits failing", Duration::from_secs(20), || {
        let (code, body) = daemon.http_get("/healthz");
        code == 503 && body.contains("state store cannot commit")
    });
    // Once an I/O error has closed the daemon's handle, hold the file's lock
    // (redb takes it while open), so that the daemon cannot open it again
    // before the header is damaged and the disk has room.
    let file = std::fs::OpenOptions::new().write(true).open(state.join("state.redb")).unwrap();
    wait_until("the daemon's handle closed", Duration::from_secs(30), || file.try_lock().is_ok());
    {
        use std::io::{Seek, Write};
        let mut f = &file;
        f.seek(std::io::SeekFrom::Start(0)).unwrap();
        f.write_all(&[0x5a; 4096]).unwrap();
        f.sync_all().unwrap();
    }
    std::fs::remove_file(&filler).unwrap();
    drop(file);
    let status = daemon.exited(Duration::from_secs(30));
    assert!(!status.success(), "a corrupt store is a failure for systemd to act on: {status:?}");
    let log = daemon.log();
    assert_eq!(log.matches("stopping so that the next start sets it aside").count(), 1, "said once:\n{log}");
    for phase in ["stopping: intake closed", "stopped"] {
        assert!(log.lines().any(|l| l.contains(phase)), "the stop's `{phase}` line:\n{log}");
    }

    daemon.spawn();
    wait_online(&broker, "lg-corrupt");
    assert!(daemon.log().contains("moved aside"), "{}", daemon.log());
    assert!(daemon.is_running(), "{}", daemon.log());
}

/// Over MQTT 3.1.1 (the default) and 5, through a stock mosquitto (no
/// `message_size_limit`): messages far larger than lineguard reads (83 KB
/// and 3.4 MB with `max_payload_bytes = 4096`) are refused without taking
/// the connection down, and every window behind them is scored.
#[test]
fn oversize_messages_are_refused_and_the_stream_behind_them_flows() {
    for protocol in ["3.1.1", "5"] {
        let broker = Broker::mosquitto().stock_limits().start();
        let id = format!("lg-oversize-{}", protocol.replace('.', ""));
        let extra = "[limits]\nmax_payload_bytes = 4096\ndead_letter_topic = \"lineguard/dead\"\n";
        let state = tempfile::tempdir().unwrap();
        let daemon = Daemon::start_with_env(
            &config(broker.port, &id, state.path(), &[line_pipeline()], extra),
            &[("LINEGUARD__MQTT__PROTOCOL", protocol)],
        );
        wait_online(&broker, &id);
        let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
        let dead = Subscriber::new(broker.port, &["lineguard/dead"]);
        let golden = Golden::load(LINE_GOLDEN);
        let samples = golden.interleaved();
        let mut p = Publisher::new(broker.port);
        let big = |n: usize| {
            let mut v = br#"{"ts": 1, "values": {"pad": ""#.to_vec();
            v.resize(n - 3, b'x');
            v.extend_from_slice(b"\"}}");
            v
        };
        for (i, (device, s)) in samples.iter().enumerate() {
            if i == samples.len() / 3 {
                p.publish(&line_topic(device), big(83_000));
            }
            if i == 2 * samples.len() / 3 {
                p.publish(&line_topic(device), big(3_400_000));
            }
            p.publish(&line_topic(device), Golden::payload(s));
        }
        p.flush(Duration::from_secs(30));
        let expected = golden.expected(&card_scores(LINE_CARD), 1);
        crate::support::line::expect_exactly(&sub, &expected);
        let metrics = daemon.http_get("/metrics").1;
        assert!(
            !metrics
                .lines()
                .any(|l| l.starts_with("lineguard_connection_reconnects_total{connection=\"telemetry\"}")
                    && !l.ends_with(" 0")),
            "MQTT {protocol}: the telemetry connection was dropped:\n{metrics}"
        );
        let rss = crate::support::daemon::peak_rss_mib(daemon.pid());
        assert!(rss < 100, "MQTT {protocol}: peak RSS {rss} MiB");
        if protocol == "3.1.1" {
            // Over 3.1.1 lineguard sees both: counted, and dead-lettered truncated.
            assert!(
                metrics.contains(
                    "lineguard_rejected_total{pipeline=\"press-line\",reason=\"payload_too_large\"} 2"
                ),
                "{metrics}"
            );
            let letters = dead.collect(2, Duration::from_secs(5), Duration::from_millis(300), |_| true);
            let sizes: Vec<bool> = letters.iter().map(|m| m.json()["truncated"].as_bool().unwrap()).collect();
            assert_eq!(sizes, [true, true], "two truncated dead letters");
            for m in &letters {
                let j = m.json();
                assert_eq!(j["reason"], "payload_too_large");
                assert!(j["detail"].as_str().unwrap().contains("limit 4096"), "{j}");
                assert!(j["payload"].as_str().unwrap().starts_with("{\"ts\": 1"), "{j}");
            }
            assert!(daemon.log().contains("payload_too_large"), "logged");
        }
    }
}

/// A broker that accepts each connection and drops it at once: lineguard
/// keeps backing off (it does not start from `reconnect_min_ms` again after
/// every CONNACK), so it does not hammer it. With `reconnect_min_ms` 100
/// and `reconnect_max_ms` 1000 (the test config), the n-th wait is drawn
/// from [d/2, d] for d = 100, 200, 400, 800, then 1000 ms each.
#[test]
fn a_connection_that_dies_at_once_keeps_backing_off() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let times = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            // Only the telemetry connection: client id `lg-flap` (length 7), not `lg-flap-scores`.
            if buf[..n].windows(9).any(|w| w == b"\x00\x07lg-flap") {
                times.lock().unwrap().push(Instant::now());
            }
            let _ = conn.write_all(&[0x20, 0x02, 0x00, 0x00]); // CONNACK, accepted
        } // dropped: closed at once
    });
    let state = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(&config(port, "lg-flap", state.path(), &[line_pipeline()], ""));
    wait_until("eight telemetry connections", Duration::from_secs(30), || {
        accepted.lock().unwrap().len() >= 8
    });
    let times = accepted.lock().unwrap().clone();
    let gaps: Vec<u128> = times.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    for (i, gap) in gaps.iter().take(7).enumerate() {
        let d = (100u128 << i).min(1000);
        // A little under d/2 for the clock; well over d for a busy machine.
        assert!(
            *gap + 20 >= d / 2 && *gap <= d + 700,
            "wait {i}: {gap} ms, not within the backoff's [{}, {d}] ms: {gaps:?}",
            d / 2
        );
    }
}

/// mosquitto with an ACL (`{dir}/acl`) on its plain listener.
fn broker_with_acl(acl: &'static str) -> Broker {
    Broker::mosquitto()
        .config("acl_file {dir}/acl\n", move |dir| std::fs::write(dir.join("acl"), acl).unwrap())
        .start()
}

/// An ACL that refuses the score topic: every refused score is logged as an
/// ERROR naming the topic (rate-limited, and so is rumqttc's own warning),
/// counted as refused and not as published, and `/healthz` says so (the
/// score connection speaks MQTT 5, whose PUBACK carries the broker's reason).
#[test]
fn a_publish_the_broker_refuses_is_not_counted_as_published() {
    let broker = broker_with_acl(
        "topic readwrite lineguard/#\ntopic readwrite plant/+/+/telemetry\ntopic read plant/+/+/lineguard/scores\n",
    );
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(broker.port, "lg-denied", state.path(), &[line_pipeline()], ""));
    wait_online(&broker, "lg-denied");
    let golden = Golden::load(LINE_GOLDEN);
    let mut p = Publisher::new(broker.port);
    let (device, samples) = golden.devices.iter().next().unwrap();
    for s in samples.iter().take(20) {
        p.publish(&line_topic(device), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let topic = score_topic(device);
    wait_until("healthz names the refused topic", Duration::from_secs(20), || {
        let (code, body) = daemon.http_get("/healthz");
        code == 503 && body.contains(&format!("the broker refuses publishes to {topic} (not authorized)"))
    });
    let value = |metrics: &str, name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name));
        line.and_then(|l| l.rsplit(' ').next()).map_or(0.0, |v| v.parse().unwrap())
    };
    // 20 samples, a window of 16: 5 windows, each refused.
    wait_until("5 refusals counted", Duration::from_secs(10), || {
        value(&daemon.http_get("/metrics").1, "lineguard_publishes_refused_total{reason=\"not authorized\"}")
            == 5.0
    });
    let metrics = daemon.http_get("/metrics").1;
    assert_eq!(value(&metrics, "lineguard_scores_published_total"), 0.0, "{metrics}");
    let log = daemon.log();
    assert!(
        log.contains("ERROR") && log.contains(&format!("the broker refused a publish to {topic}")),
        "{log}"
    );
    // rumqttc's own line for each refused publish goes through the same
    // rate limit: the first, not five.
    let dependency = log.lines().filter(|l| l.contains("rumqttc") && l.contains("NotAuthorized")).count();
    assert_eq!(dependency, 1, "rumqttc's lines, rate-limited:\n{log}");
}

/// A subscription the broker grants but that delivers nothing (an ACL that
/// lets lineguard read other lines only): with `limits.stale_intake_secs`,
/// `/healthz` says so.
#[test]
fn a_subscription_that_delivers_nothing_makes_healthz_say_so() {
    let broker = broker_with_acl(
        "topic readwrite lineguard/#\ntopic readwrite plant/+/+/lineguard/scores\ntopic write plant/+/+/telemetry\n\
         topic read plant/other/+/telemetry\n",
    );
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(
        broker.port,
        "lg-stale",
        state.path(),
        &[line_pipeline()],
        "[limits]\nstale_intake_secs = 2\n",
    ));
    wait_online(&broker, "lg-stale");
    let golden = Golden::load(LINE_GOLDEN);
    let mut p = Publisher::new(broker.port);
    let start = Instant::now();
    wait_until("healthz: no telemetry", Duration::from_secs(20), || {
        for (device, s) in golden.interleaved().into_iter().take(4) {
            p.publish(&line_topic(device), Golden::payload(s));
        }
        let (code, body) = daemon.http_get("/healthz");
        code == 503 && body.contains("no telemetry for") && body.contains("limits.stale_intake_secs = 2")
    });
    assert!(start.elapsed() >= Duration::from_secs(2), "not before the limit");
}

/// Every published score must be ONNX Runtime's for its window (missing
/// windows are allowed: a device whose stored window was dropped scores
/// again once its window refills); duplicates must be byte-identical.
fn check_no_wrong_score(got: &[crate::support::mqtt::Message], golden: &Golden) -> usize {
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let mut first: std::collections::BTreeMap<(String, i64), &Vec<u8>> = Default::default();
    for m in got {
        let j = m.json();
        let key = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
        if let Some(prev) = first.insert(key.clone(), &m.payload) {
            assert_eq!(prev, &m.payload, "duplicate for {key:?} differs");
        }
    }
    let unique: Vec<crate::support::mqtt::Message> = got
        .iter()
        .filter(|m| {
            let j = m.json();
            let key = (j["device"].as_str().unwrap().to_string(), j["ts"].as_i64().unwrap());
            first.remove(&key).is_some()
        })
        .cloned()
        .collect();
    let published: Vec<_> = expected
        .into_iter()
        .filter(|e| unique.iter().any(|m| m.json()["device"] == e.device.as_str() && m.json()["ts"] == e.ts))
        .collect();
    crate::support::golden::check_scores(&unique, &published, "press-line", "line-mlp", score_topic);
    unique.len()
}

/// Which pages of `state.redb` a case damages.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Page 0: the header.
    Header,
    /// Every page the last commits wrote (those that differ from the file
    /// as it was before the last few windows), the header aside.
    LastCommits,
    /// The page at this fraction of the file, whatever it holds.
    At(f64),
}

/// After `kill -9`, pages of `state.redb` are damaged: lineguard starts
/// every time, every score it publishes after the restart is ONNX Runtime's
/// for that window, and damage it finds is said in one line, each kind
/// counted: a damaged header makes the file unreadable (moved aside); the
/// pages of the last commits make it roll back (or drop the windows it
/// cannot trust, or set the file aside). A window it cannot trust is
/// dropped, never used; a page that holds nothing live changes nothing, and
/// then every window after the restart is scored.
#[test]
fn damaged_state_is_never_used_and_never_stops_the_start() {
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let (first, second) = samples.split_at(samples.len() / 2);
    let (last_few, second) = second.split_at(4);
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    let upto = |part: &[(&str, &crate::support::golden::Sample)]| -> std::collections::BTreeMap<String, i64> {
        first.iter().chain(part).map(|(d, s)| (d.to_string(), s.ts)).collect()
    };
    let made = |upto: &std::collections::BTreeMap<String, i64>| -> Vec<_> {
        expected.iter().filter(|e| upto.get(&e.device).is_some_and(|t| e.ts <= *t)).cloned().collect()
    };
    let (before, before_kill) = (made(&upto(&[])), made(&upto(last_few)));
    let new = |of: &[crate::support::golden::Expected],
               since: &[crate::support::golden::Expected]|
     -> Vec<_> {
        of.iter().filter(|e| !since.iter().any(|b| (&b.device, b.ts) == (&e.device, e.ts))).cloned().collect()
    };
    let (last, after) = (new(&before_kill, &before), new(&expected, &before_kill));
    let cases = [Damage::Header, Damage::LastCommits, Damage::At(0.25), Damage::At(0.6), Damage::At(1.0)];
    for (case, damage) in cases.iter().enumerate() {
        let broker = Broker::mosquitto().start();
        let state = tempfile::tempdir().unwrap();
        let id = format!("lg-damage{case}");
        let mut daemon = Daemon::start(&config(broker.port, &id, state.path(), &[line_pipeline()], ""));
        wait_online(&broker, &id);
        let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
        let mut p = Publisher::new(broker.port);
        let file = state.path().join("state.redb");
        // Every window of the first half scored, and so committed (a score
        // goes out before its commit: a little more time for the last).
        publish_samples(&mut p, first);
        collect_every_window(&sub, &before, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(200));
        let settled = std::fs::read(&file).unwrap();
        publish_samples(&mut p, last_few);
        collect_every_window(&sub, &last, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill9();
        let mut bytes = std::fs::read(&file).unwrap();
        let pages = bytes.len().div_ceil(4096);
        let len = bytes.len();
        let page = |i: usize| i * 4096..((i + 1) * 4096).min(len);
        let damaged: Vec<usize> = match damage {
            Damage::Header => vec![0],
            Damage::LastCommits => {
                (1..pages).filter(|&i| settled.get(page(i)) != Some(&bytes[page(i)])).collect()
            }
            Damage::At(fraction) => vec![((pages - 1) as f64 * fraction) as usize],
        };
        assert!(!damaged.is_empty(), "{damage:?}: the last commits wrote no page");
        for &i in &damaged {
            let range = page(i);
            bytes[range].iter_mut().enumerate().for_each(|(i, b)| *b = (i * 131 % 251) as u8);
        }
        std::fs::write(&file, bytes).unwrap();

        daemon.spawn();
        wait_online(&broker, &id);
        publish_samples(&mut p, second);
        let got =
            sub.collect(usize::MAX, Duration::from_secs(4), Duration::ZERO, crate::support::line::is_score);
        check_no_wrong_score(&got, &golden);
        let what = format!("{damage:?}: pages {damaged:?} of {pages}");
        assert!(daemon.is_running(), "{what}: the daemon stopped:\n{}", daemon.log());
        let log = daemon.log();
        assert!(!log.contains("panicked"), "{log}");
        let said = ["moved aside", "rolled back", "stored windows dropped"]
            .map(|kind| log.lines().filter(|l| l.contains(kind)).count());
        assert!(said.iter().all(|n| *n <= 1), "{what}: one line each, whatever the devices: {said:?}\n{log}");
        let metrics = daemon.http_get("/metrics").1;
        let counted = |reason: &str| {
            metrics.contains(&format!("lineguard_state_store_discarded_total{{reason=\"{reason}\"}} 1"))
        };
        match said {
            [1, ..] => assert!(counted("unreadable"), "{what}: moved aside, not counted\n{metrics}"),
            [0, 1, _] => assert!(counted("rolled_back"), "{what}: rolled back, not counted\n{metrics}"),
            [0, 0, 1] => {}
            _ => {
                assert!(matches!(damage, Damage::At(_)), "{what}: the damage was not found\n{log}");
                // Nothing live was damaged: every window after the kill is
                // scored, the restored windows going on where they were.
                let published: std::collections::BTreeSet<(String, i64)> = got
                    .iter()
                    .map(|m| {
                        (m.json()["device"].as_str().unwrap().to_string(), m.json()["ts"].as_i64().unwrap())
                    })
                    .collect();
                let missing = after.iter().filter(|e| !published.contains(&(e.device.clone(), e.ts))).count();
                assert_eq!(missing, 0, "{what}: intact, yet {missing} windows went unscored");
            }
        }
        if matches!(damage, Damage::Header) {
            assert_eq!(said[0], 1, "{what}: a damaged header makes the file unreadable\n{log}");
        }
    }
}

/// A card of the same window and feature count but other feature order
/// (a retrained model, say) replaces the old one while the daemon is down:
/// the stored windows, made for the old order, are dropped (one line for
/// all devices), so no window straddling the restart is scored.
#[test]
fn a_changed_card_never_reuses_the_old_windows() {
    let broker = Broker::mosquitto().start();
    let models = tempfile::tempdir().unwrap();
    let model = crate::support::line::copy_model(models.path());
    let card_text = std::fs::read_to_string(crate::support::repo_path(LINE_CARD)).unwrap();
    let state = tempfile::tempdir().unwrap();
    let spec = crate::support::daemon::PipelineSpec::new(
        "press-line",
        model.to_str().unwrap(),
        crate::support::line::LINE_IN,
        crate::support::line::LINE_OUT,
    );
    let mut daemon = Daemon::start(&config(broker.port, "lg-card", state.path(), &[spec], ""));
    wait_online(&broker, "lg-card");
    let golden = Golden::load(LINE_GOLDEN);
    let samples = golden.interleaved();
    let (first, second) = samples.split_at(samples.len() / 2);
    let mut p = Publisher::new(broker.port);
    publish_samples(&mut p, first);
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.sigterm(Duration::from_secs(15)).success());

    // The first two features swap places (with their normalization).
    let card: toml::Value = toml::from_str(&card_text).unwrap();
    let features: Vec<String> =
        card["features"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    let mut swapped = features.clone();
    swapped.swap(0, 1);
    let mut text = card_text.replacen(
        &format!("\"{}\", \"{}\"", features[0], features[1]),
        &format!("\"{}\", \"{}\"", features[1], features[0]),
        1,
    );
    assert_ne!(text, card_text, "the card's feature list is written on one line");
    for key in ["mean", "std"] {
        let v = card["normalize"][key].as_array().unwrap();
        let (a, b) = (v[0].to_string(), v[1].to_string());
        text = text.replacen(&format!("{a}, {b}"), &format!("{b}, {a}"), 1);
    }
    std::fs::write(models.path().join("line-mlp.toml"), text).unwrap();
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    daemon.spawn();
    wait_online(&broker, "lg-card");
    publish_samples(&mut p, second);
    let got = sub.collect(usize::MAX, Duration::from_secs(3), Duration::ZERO, crate::support::line::is_score);
    // Per device: the 16th sample after the restart is the first that can end a window.
    for (device, device_samples) in &golden.devices {
        let after: Vec<i64> = device_samples
            .iter()
            .map(|s| s.ts)
            .filter(|ts| second.iter().any(|(d, s)| d == device && s.ts == *ts))
            .collect();
        let earliest = after.get(15).copied().unwrap_or(i64::MAX);
        for m in got.iter().filter(|m| m.json()["device"] == device.as_str()) {
            let ts = m.json()["ts"].as_i64().unwrap();
            assert!(
                ts >= earliest,
                "{device}: window at {ts} straddles the restart (earliest possible {earliest})"
            );
        }
    }
    let log = daemon.log();
    let lines = log.lines().filter(|l| l.contains("stored windows dropped")).count();
    assert_eq!(lines, 1, "one summary line:\n{log}");
    assert!(log.contains("card 4"), "{log}");
}

/// One sample stamped in 2100 (a device with a wrong clock) is rejected
/// before it reaches the window; the device's later samples all score.
#[test]
fn a_sample_from_the_future_never_locks_a_device_out() {
    let broker = Broker::mosquitto().start();
    let daemon = crate::support::line::start_online(&broker, "lg-clock", &[line_pipeline()], "");
    let sub = Subscriber::new(broker.port, &["plant/+/+/lineguard/scores"]);
    let golden = Golden::load(LINE_GOLDEN);
    let mut p = Publisher::new(broker.port);
    for (i, (device, s)) in golden.interleaved().into_iter().enumerate() {
        if i == 10 {
            let mut wrong = s.clone();
            wrong.ts = 4_102_444_800_000; // 2100-01-01
            p.publish(&line_topic(device), Golden::payload(&wrong));
        }
        p.publish(&line_topic(device), Golden::payload(s));
    }
    p.flush(Duration::from_secs(10));
    let expected = golden.expected(&card_scores(LINE_CARD), 1);
    crate::support::line::expect_exactly(&sub, &expected);
    let metrics = daemon.http_get("/metrics").1;
    assert!(
        metrics.contains("lineguard_rejected_total{pipeline=\"press-line\",reason=\"future_timestamp\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lineguard_rejected_total{pipeline=\"press-line\",reason=\"out_of_order\"} 0"),
        "{metrics}"
    );
    // The same samples again (a device that resends): duplicates, not rejections.
    publish_samples(&mut p, &golden.interleaved().into_iter().rev().take(4).collect::<Vec<_>>());
    wait_until("duplicates counted", Duration::from_secs(10), || {
        daemon.http_get("/metrics").1.contains("lineguard_duplicates_total{pipeline=\"press-line\"} 4")
    });
    assert!(!daemon.log().contains("reason=\"out_of_order\""), "{}", daemon.log());
}

/// SIGHUP while a large model loads (the handlers come first now; before,
/// its default action killed the daemon), and a reload asked for that way
/// happens once the models are in.
#[test]
fn a_sighup_while_the_models_load_does_not_kill_the_daemon() {
    let broker = Broker::mosquitto().start();
    let models = tempfile::tempdir().unwrap();
    // The shipped model with 48 MiB of a field ONNX readers skip: slow to
    // read and hash, the same graph.
    let mut bytes = std::fs::read(crate::support::repo_path(crate::support::line::LINE_MODEL)).unwrap();
    let pad = 48usize << 20;
    bytes.extend_from_slice(&[0xc2, 0x3e]); // field 1000, length-delimited
    let mut n = pad;
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    bytes.resize(bytes.len() + pad, 0);
    let model = models.path().join("big.onnx");
    std::fs::write(&model, bytes).unwrap();
    std::fs::copy(crate::support::repo_path(LINE_CARD), models.path().join("big.toml")).unwrap();
    let state = tempfile::tempdir().unwrap();
    let spec = crate::support::daemon::PipelineSpec::new(
        "press-line",
        model.to_str().unwrap(),
        crate::support::line::LINE_IN,
        crate::support::line::LINE_OUT,
    );
    let status = Subscriber::new(broker.port, &["lineguard/lg-hup/status"]);
    let mut daemon = Daemon::start(&config(broker.port, "lg-hup", state.path(), &[spec], ""));
    std::thread::sleep(Duration::from_millis(300));
    let mut sent = 0;
    while !daemon.log().contains("model loaded") && sent < 100 {
        assert!(daemon.is_running(), "killed by SIGHUP number {sent}:\n{}", daemon.log());
        crate::support::broker::signal(daemon.pid(), "HUP");
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sent >= 3, "the model loaded before the test could signal ({sent} sent)");
    status.wait_for("lineguard/lg-hup/status", "\"online\"", Duration::from_secs(60));
    wait_until("the reload asked for", Duration::from_secs(30), || {
        daemon.log().contains("SIGHUP: reloading every model")
    });
    assert!(daemon.is_running());
}

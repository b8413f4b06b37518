//! `lineguard demo --redundant`: a primary and a backup lineguard, each a
//! process of its own, on the embedded broker and the simulated line. The
//! primary is killed (`kill -9`) a third of the way in and started again
//! halfway; the view, a plain MQTT subscriber like a dashboard, shows who is
//! active, and the summary counts every window of every machine: scored,
//! duplicates, failovers, and gaps (windows no instance published).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

use crate::tools::demo::{line_client, DaemonConfig};
use crate::tools::sim;

const IDS: [&str; 2] = ["lineguard-demo-primary", "lineguard-demo-backup"];

/// What the view heard.
#[derive(Default)]
struct Heard {
    /// Per machine, the windows (their `ts`) published: how often each, and
    /// the first copy's bytes.
    windows: BTreeMap<String, BTreeMap<i64, (u32, Vec<u8>)>>,
    /// Copies of a window that differ from its first copy.
    differing: u64,
    /// Per instance, whether its status says it is active.
    active: BTreeMap<String, bool>,
    /// Per instance, its status as last heard (`online`, `offline`).
    status: BTreeMap<String, String>,
    /// Times an instance's status newly said active.
    takeovers: u64,
    /// What happened, for the screen.
    events: Vec<String>,
}

/// One instance of the pair, run as `lineguard run` in a process of its own.
struct Instance {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let exe = std::env::current_exe().context("cannot find the lineguard executable")?;
        let child = Command::new(exe)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start a lineguard instance")?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`: no chance to say `offline`; the broker's will says it.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and its exit (SIGKILL after 15 s).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn config(dir: &Path, port: u16, model: &Path, role: &str, id: &str, peer: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{id}.toml"));
    DaemonConfig {
        client_id: id,
        state: dir.join(format!("state-{id}")),
        model,
        mqtt: "keep_alive_secs = 5\nreconnect_min_ms = 100\nreconnect_max_ms = 1000\n",
        sections: &format!("[redundancy]\nrole = \"{role}\"\npeer = \"{peer}\"\ntakeover_replay_secs = 30\n"),
        pipeline: format!(
            "{}alarm_topic = \"plant/{{line}}/{{machine}}/lineguard/alarm\"\n",
            sim::Format::Lineguard.pipeline_keys()
        ),
        after: "",
    }
    .write(&path, port)?;
    Ok(path)
}

/// The view: scores and the two statuses, as a dashboard hears them.
async fn listen(port: u16, heard: Arc<Mutex<Heard>>, started: Instant) -> anyhow::Result<()> {
    let mut opts = MqttOptions::new("lineguard-demo-view", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (view, mut view_loop) = AsyncClient::new(opts, 64);
    view.subscribe("plant/+/+/lineguard/scores", QoS::AtLeastOnce).await?;
    view.subscribe("lineguard/+/status", QoS::AtLeastOnce).await?;
    tokio::spawn(async move {
        let _keep = view;
        loop {
            let p = match view_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => p,
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(j) = serde_json::from_slice::<serde_json::Value>(&p.payload) else { continue };
            let mut h = heard.lock().unwrap_or_else(|e| e.into_inner());
            if p.topic.ends_with("/status") {
                let Some(id) = j["client_id"].as_str() else { continue };
                let active = j["status"] == "online" && j["active"] == true;
                let was = h.active.insert(id.to_string(), active).unwrap_or(false);
                if active && !was {
                    h.takeovers += 1;
                }
                let status = j["status"].as_str().unwrap_or_default().to_string();
                let said = h.status.insert(id.to_string(), status.clone());
                if active != was || (status == "offline" && said.as_deref() != Some("offline")) {
                    let what = match (j["status"].as_str(), active) {
                        (Some("offline"), _) => "offline (its will, or its stop)".to_string(),
                        (_, true) => "active: publishing".to_string(),
                        (_, false) => "standing by".to_string(),
                    };
                    let t = started.elapsed().as_secs_f64();
                    h.events.push(format!("{t:6.1} s  {id}: {what}"));
                }
            } else if let (Some(d), Some(ts)) = (j["device"].as_str(), j["ts"].as_i64()) {
                let first =
                    h.windows.entry(d.to_string()).or_default().entry(ts).or_insert((0, p.payload.to_vec()));
                first.0 += 1;
                let differs = first.1 != p.payload;
                h.differing += u64::from(differs);
            }
        }
    });
    Ok(())
}

/// `demo --redundant`: see the module's doc. `duration` defaults to 45 s.
pub(crate) async fn run(
    machines_n: usize,
    rate: f64,
    duration: Option<u64>,
    model: PathBuf,
    port: u16,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let duration = Duration::from_secs(duration.unwrap_or(45).max(15));
    let mut pair: Vec<Instance> = Vec::new();
    for (role, id, peer) in [("primary", IDS[0], IDS[1]), ("backup", IDS[1], IDS[0])] {
        let config = config(dir, port, &model, role, id, peer)?;
        crate::config::load(&config, std::iter::empty())?;
        pair.push(Instance { config, log: dir.join(format!("{id}.log")), child: None });
    }
    let started = Instant::now();
    let heard: Arc<Mutex<Heard>> = Arc::default();
    listen(port, heard.clone(), started).await?;
    for i in &mut pair {
        i.spawn()?;
    }
    // The primary first: it is active before the line starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !heard.lock().unwrap_or_else(|e| e.into_inner()).active.get(IDS[0]).copied().unwrap_or(false) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the primary did not become active (see {})",
            pair[0].log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let machines = sim::line(machines_n);
    let line_client = line_client(port);
    let stop = CancellationToken::new();
    crate::daemon::signals::on_signals(stop.clone())?;
    let line_stop = CancellationToken::new();
    let rounds = Arc::new(AtomicU64::new(0));
    let line_started = Instant::now();
    let line = tokio::spawn(sim::publish_line(
        line_client,
        machines.clone(),
        rate,
        42,
        sim::Format::Lineguard,
        line_stop.clone(),
        Some(rounds.clone()),
    ));

    let tty = std::io::stdout().is_terminal();
    let intro = format!(
        "lineguard demo --redundant: embedded broker on 127.0.0.1:{port}, {machines_n} machines at {rate} Hz\n\
         a primary and a backup lineguard, each its own process; the primary is killed (kill -9) at {:.0} s and started again at {:.0} s\n\
         watch it from another terminal: mosquitto_sub -p {port} -t 'lineguard/+/status' -v\n\n",
        duration.as_secs_f64() / 3.0,
        duration.as_secs_f64() / 2.0,
    );
    if !tty {
        print!("{intro}");
    }
    let (kill_at, back_at) = (duration / 3, duration / 2);
    let (mut killed, mut back) = (false, false);
    let mut shown = 0;
    let redraw = if tty { Duration::from_millis(500) } else { Duration::from_secs(1) };
    while line_started.elapsed() < duration {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(redraw) => {}
        }
        let t = line_started.elapsed();
        if !killed && t >= kill_at {
            killed = true;
            pair[0].kill9();
            let at = started.elapsed().as_secs_f64();
            heard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .events
                .push(format!("{at:6.1} s  {}: killed (kill -9)", IDS[0]));
        }
        if killed && !back && t >= back_at {
            back = true;
            pair[0].spawn()?;
            let at = started.elapsed().as_secs_f64();
            heard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .events
                .push(format!("{at:6.1} s  {}: started again", IDS[0]));
        }
        let h = heard.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[J{intro}{}", frame(&h, &machines, t.as_secs_f64()));
            let _ = writeln!(out, "{}", h.events.join("\n"));
        } else {
            for e in &h.events[shown..] {
                let _ = writeln!(out, "{e}");
            }
            shown = h.events.len();
        }
        let _ = out.flush();
    }
    line_stop.cancel();
    let _ = line.await;
    // Every window of every machine: the last ones are on their way.
    let published = rounds.load(Ordering::SeqCst);
    let window = 16;
    let want = published.saturating_sub(window - 1);
    let drain = Instant::now() + Duration::from_secs(20);
    while Instant::now() < drain && !stop.is_cancelled() {
        let complete = {
            let h = heard.lock().unwrap_or_else(|e| e.into_inner());
            machines.iter().all(|m| h.windows.get(&m.device()).map_or(0, |w| w.len() as u64) >= want)
        };
        if complete {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in &mut pair {
        i.stop();
    }
    let h = heard.lock().unwrap_or_else(|e| e.into_inner());
    let (text, gaps) = summary(&h, &machines, want);
    println!("{text}");
    if gaps > 0 {
        eprintln!(
            "error: {gaps} windows missing or differing between the instances (logs: {})",
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Each machine's windows so far, and who is active.
fn frame(h: &Heard, machines: &[sim::Machine], t: f64) -> String {
    let mut out = format!("t = {t:5.1} s\n");
    for id in IDS {
        let state = match h.active.get(id) {
            Some(true) => "ACTIVE (publishing)",
            Some(false) => "standing by",
            None => "-",
        };
        out.push_str(&format!("  {id:<24} {state}\n"));
    }
    out.push('\n');
    for m in machines {
        let w = h.windows.get(&m.device());
        let (n, dup) = w.map_or((0, 0), |w| (w.len(), w.values().map(|(c, _)| c - 1).sum::<u32>()));
        out.push_str(&format!("  {:<16} windows {n:>5}  duplicates {dup:>4}\n", m.device()));
    }
    out.push('\n');
    out
}

/// The summary, and how many windows no instance published.
fn summary(h: &Heard, machines: &[sim::Machine], want: u64) -> (String, u64) {
    let mut scored = 0u64;
    let mut duplicates = 0u64;
    let mut gaps = 0u64;
    let mut lines = Vec::new();
    for m in machines {
        let w = h.windows.get(&m.device()).cloned().unwrap_or_default();
        let n = w.len() as u64;
        let dup: u64 = w.values().map(|(c, _)| u64::from(c - 1)).sum();
        let missing = want.saturating_sub(n);
        scored += n;
        duplicates += dup;
        gaps += missing;
        lines
            .push(format!("  {:<16} {n:>5} windows of {want}, {dup} duplicates, {missing} gaps", m.device()));
    }
    let unique: BTreeSet<&String> = h.windows.keys().collect();
    let text = format!(
        "summary: {scored} windows scored ({} machines, every window of each: {}), {duplicates} duplicates \
         ({} differing from the first copy), {} failovers, gaps: {gaps}\n{}",
        unique.len(),
        if gaps == 0 { "yes" } else { "no" },
        h.differing,
        h.takeovers.saturating_sub(1),
        lines.join("\n")
    );
    (text, gaps + h.differing)
}

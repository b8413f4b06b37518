//! The real `lineguard` binary, run as a user would: `lineguard run --config FILE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Put this for `state.dir` in a config to have it inside the daemon's own
/// temporary directory (removed with it).
pub const STATE: &str = "{state}";

/// The state directory the config's [`STATE`] stands for.
pub fn own_state() -> &'static Path {
    Path::new(STATE)
}

/// One pipeline of a test config.
pub struct PipelineSpec<'a> {
    pub name: &'a str,
    pub model: &'a str,
    pub input: &'a str,
    pub output: &'a str,
    pub hop: usize,
}

impl<'a> PipelineSpec<'a> {
    pub fn new(name: &'a str, model: &'a str, input: &'a str, output: &'a str) -> Self {
        Self { name, model, input, output, hop: 1 }
    }
}

/// A config file for a broker on `port`.
pub fn config(
    port: u16,
    client_id: &str,
    state_dir: &Path,
    pipelines: &[PipelineSpec],
    extra: &str,
) -> String {
    // The embedded broker, where mosquitto is missing, speaks 3.1.1 only.
    let scores = if super::broker::have_mosquitto() { "" } else { "scores_protocol = \"3.1.1\"\n" };
    let mut s = format!(
        "[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"{client_id}\"\nkeep_alive_secs = 5\n{scores}\
         reconnect_min_ms = 100\nreconnect_max_ms = 1000\n\n[state]\ndir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{}\"\n\n\
         [log]\nlevel = \"debug\"\n{extra}\n",
        state_dir.display(),
        lineguard::tools::broker::free_port().expect("free port"),
    );
    for p in pipelines {
        s.push_str(&format!(
            "\n[[pipelines]]\nname = \"{}\"\nmodel = \"{}\"\ninput_topic = \"{}\"\noutput_topic = \"{}\"\nhop = {}\n",
            p.name,
            super::repo_path(p.model).display(),
            p.input,
            p.output,
            p.hop
        ));
    }
    s
}

pub struct Daemon {
    child: Option<Child>,
    /// The lineguard executable: this build's, unless a benchmark compares another.
    bin: PathBuf,
    env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Start with this config text (written to a temp dir; `{state}` in it
    /// is replaced by a state dir inside that temp dir).
    pub fn start(config_text: &str) -> Daemon {
        Self::start_with_env(config_text, &[])
    }

    /// Start with `LINEGUARD__...` overrides in the environment.
    pub fn start_with_env(config_text: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_bin(std::path::Path::new(env!("CARGO_BIN_EXE_lineguard")), config_text, env)
    }

    /// Start another lineguard executable (a benchmark's peer: an earlier build).
    pub fn start_bin(bin: &std::path::Path, config_text: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lineguard.toml");
        let state = dir.path().join("state").display().to_string();
        std::fs::write(&config, config_text.replace(STATE, &state)).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let bin = bin.to_path_buf();
        let mut d = Daemon { child: None, bin, env, log: dir.path().join("lineguard.log"), dir, config };
        d.spawn();
        d
    }

    /// Start again with the same config (after a kill).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "lineguard=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start lineguard");
        self.child = Some(child);
    }

    /// `http.listen` from the config file.
    pub fn http_addr(&self) -> String {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text.lines().find(|l| l.starts_with("listen = ")).expect("http.listen in the test config");
        line.trim_start_matches("listen = ").trim_matches('"').to_string()
    }

    /// `GET path` on the daemon's HTTP endpoint: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.http_addr()).expect("connect to /metrics");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: lineguard\r\nConnection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        super::broker::unsafe_sigterm(c.id());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("lineguard did not exit within {timeout:?} of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait for it to exit by itself; its exit status.
    pub fn exited(&mut self, timeout: Duration) -> ExitStatus {
        let c = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lineguard did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU time used so far (user + system), from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// CPU time a process used so far (user + system), from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Peak resident memory of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("VmHWM in kB") / 1024
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis()
        as i64
}

//! A real MQTT broker per test: mosquitto on a free loopback port, which the
//! test can stop and restart. Where mosquitto is not installed, the embedded
//! rumqttd stands in and says so on stderr; tests that must restart the
//! broker (or need TLS) fail with a clear message instead of passing without it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lineguard::tools::broker::{free_port, start_embedded, wait_for_port};

/// Whether the tests' brokers are mosquitto (else the embedded rumqttd,
/// which speaks MQTT 3.1.1 only).
pub fn have_mosquitto() -> bool {
    mosquitto_binary().is_some()
}

fn mosquitto_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("mosquitto")).collect())
        .unwrap_or_default();
    candidates.extend(["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"].map(PathBuf::from));
    candidates.into_iter().find(|p| p.is_file())
}

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    settings: Settings,
    /// rumqttd in-process (cannot be stopped or restarted).
    embedded: bool,
}

/// How a test's mosquitto is configured.
#[derive(Default)]
struct Settings {
    persistent: bool,
    /// More mosquitto.conf lines (extra listeners, an ACL), after the plain one.
    extra: String,
    /// mosquitto's own limits (20 in flight, 1000 queued per client) instead of none.
    stock: bool,
}

/// Writes files into the broker's directory before it starts.
type Prepare = Box<dyn FnOnce(&Path)>;

/// A mosquitto to start: `Broker::mosquitto().persistent().start()`.
#[must_use]
pub struct Builder {
    settings: Settings,
    prepare: Option<Prepare>,
}

impl Builder {
    /// Persistence on: sessions and queued messages survive a restart.
    pub fn persistent(mut self) -> Self {
        self.settings.persistent = true;
        self
    }

    /// mosquitto as installed: its default per-client limits apply (at most
    /// 20 unacknowledged QoS 1 messages in flight to an MQTT 3.1.1 client, an
    /// MQTT 5 client setting its own; 1000 queued, the rest dropped).
    pub fn stock_limits(mut self) -> Self {
        self.settings.stock = true;
        self
    }

    /// More mosquitto.conf lines (`{dir}` stands for the broker's
    /// directory), with per-listener settings on (the plain listener on
    /// `port` stays anonymous); `prepare` runs first, with that directory,
    /// to write the certificates, password files or ACLs they refer to.
    pub fn config(mut self, extra: &str, prepare: impl FnOnce(&Path) + 'static) -> Self {
        self.settings.extra = extra.to_string();
        self.prepare = Some(Box::new(prepare));
        self
    }

    pub fn start(self) -> Broker {
        let mut b = Broker {
            port: free_port().expect("free port"),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            settings: self.settings,
            embedded: false,
        };
        if let Some(prepare) = self.prepare {
            prepare(b.dir.path());
        }
        b.settings.extra = b.settings.extra.replace("{dir}", &b.dir.path().display().to_string());
        b.launch();
        b
    }
}

impl Broker {
    /// mosquitto if installed, else the embedded broker (announced).
    pub fn start() -> Broker {
        if mosquitto_binary().is_some() {
            return Self::mosquitto().start();
        }
        eprintln!("NOTE: mosquitto is not installed; this test runs against the embedded rumqttd broker");
        let port = free_port().expect("free port");
        start_embedded(port).expect("embedded broker");
        Broker {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            settings: Settings::default(),
            embedded: true,
        }
    }

    /// mosquitto, required (restart, persistence, TLS and ACL tests need a real one).
    pub fn mosquitto() -> Builder {
        Builder { settings: Settings::default(), prepare: None }
    }

    fn launch(&mut self) {
        assert!(!self.embedded, "the embedded broker cannot be restarted; install mosquitto");
        let bin = mosquitto_binary()
            .expect("this test needs mosquitto (apt-get install mosquitto); .ci/run installs it");
        let conf = self.dir.path().join("mosquitto.conf");
        let dir = self.dir.path().display();
        let per_listener = if self.settings.extra.is_empty() { "" } else { "per_listener_settings true\n" };
        let limits =
            if self.settings.stock { "" } else { "max_queued_messages 0\nmax_inflight_messages 0\n" };
        std::fs::write(
            &conf,
            format!(
                "{per_listener}user root\npersistence {persist}\npersistence_location {dir}/\nautosave_interval 1\n\
                 {limits}log_dest file {dir}/mosquitto.log\n\
                 listener {port} 127.0.0.1\nallow_anonymous true\n{extra}\n",
                persist = self.settings.persistent,
                port = self.port,
                extra = self.settings.extra,
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start mosquitto");
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_for_port(addr, Duration::from_secs(10)).expect("mosquitto did not start");
    }

    /// The mosquitto process (none for the embedded broker).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the broker the hard way (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop cleanly (SIGTERM): mosquitto writes its persistence file.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_sigterm(c.id());
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The broker's scratch directory (certificates, password files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// SIGTERM through the `kill` command (no libc dependency for one call).
pub fn unsafe_sigterm(pid: u32) {
    signal(pid, "TERM");
}

/// Send a signal by name (`TERM`, `HUP`, ...).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

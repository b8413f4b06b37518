//! A three-node NATS cluster with MQTT and JetStream on loopback, each node
//! made from the shipped `deploy/cluster/nats.conf` (only its name,
//! addresses and store moved to free ports and a temporary directory).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lineguard::tools::broker::free_port;

fn nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "this test needs nats-server 2.9.4 or later (apt-get install nats-server); tests/run installs it",
        )
}

struct Node {
    conf: PathBuf,
    log: PathBuf,
    mqtt: u16,
    child: Option<Child>,
}

pub struct Cluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Three nodes, started, their MQTT accepting QoS 1 subscriptions.
    pub fn start() -> Cluster {
        let template = std::fs::read_to_string(super::repo_path("deploy/cluster/nats.conf")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> =
            (0..3).map(|_| (free_port().unwrap(), free_port().unwrap(), free_port().unwrap())).collect();
        let mut nodes = Vec::new();
        for (i, (client, cluster, mqtt)) in ports.iter().enumerate() {
            let mut conf = template
                .replace("server_name: nats-1", &format!("server_name: nats-{}", i + 1))
                .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
                .replace("0.0.0.0:6222", &format!("127.0.0.1:{cluster}"))
                .replace("0.0.0.0:1883", &format!("127.0.0.1:{mqtt}"))
                .replace("/var/lib/nats", &dir.path().join(format!("js{i}")).display().to_string());
            for (k, (_, route, _)) in ports.iter().enumerate() {
                conf = conf.replace(&format!("10.0.0.1{}:6222", k + 1), &format!("127.0.0.1:{route}"));
            }
            assert!(!conf.contains("10.0.0.") && !conf.contains("0.0.0.0"), "every address moved:\n{conf}");
            let path = dir.path().join(format!("nats-{}.conf", i + 1));
            std::fs::write(&path, conf).unwrap();
            nodes.push(Node {
                conf: path,
                log: dir.path().join(format!("nats-{}.log", i + 1)),
                mqtt: *mqtt,
                child: None,
            });
        }
        let mut c = Cluster { nodes, dir };
        for i in 0..3 {
            c.launch(i);
        }
        for n in &c.nodes {
            wait_mqtt(n.mqtt);
        }
        c
    }

    fn launch(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log).unwrap();
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(&n.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start nats-server");
        n.child = Some(child);
    }

    /// The MQTT port of each node.
    pub fn mqtt_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.mqtt).collect()
    }

    /// `mqtt.hosts` naming every node, starting with node `first`.
    pub fn hosts(&self, first: usize) -> String {
        let ports = self.mqtt_ports();
        let list: Vec<String> =
            (0..ports.len()).map(|k| format!("\"127.0.0.1:{}\"", ports[(first + k) % ports.len()])).collect();
        format!("hosts = [{}]", list.join(", "))
    }

    /// Node `i` dies (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Until a QoS 1 subscription on the node's MQTT is granted (JetStream up,
/// the cluster formed).
fn wait_mqtt(port: u16) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut o = MqttOptions::new(format!("probe-{port}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut conn) = Client::new(o, 10);
        let _ = client.subscribe("probe/ready", QoS::AtLeastOnce);
        let granted = conn.iter().take(20).find_map(|e| match e {
            Ok(Event::Incoming(Packet::SubAck(a))) => {
                Some(a.return_codes.iter().all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)))
            }
            Err(_) => Some(false),
            _ => None,
        });
        let _ = client.disconnect();
        if granted == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "NATS MQTT on port {port} never granted a QoS 1 subscription");
        std::thread::sleep(Duration::from_millis(500));
    }
}

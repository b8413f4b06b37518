//! Plain MQTT clients for tests: a subscriber that records everything, and a
//! publisher that can wait until the broker has acknowledged all it sent.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// When the subscriber's connection delivered it.
    pub received: Instant,
}

impl Message {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("payload on {} is not JSON: {e}", self.topic))
    }
}

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
    o
}

pub struct Subscriber {
    rx: Receiver<Message>,
    /// What keeps the connection open while the subscriber lives.
    _conn: Box<dyn std::any::Any + Send>,
}

impl Subscriber {
    /// Connect and subscribe; returns once the broker acknowledged every filter.
    pub fn new(port: u16, filters: &[&str]) -> Subscriber {
        Self::connect(port, filters, &format!("test-sub-{}", next_id()), true, QoS::AtLeastOnce)
    }

    /// A subscriber at QoS 0: NATS delivers those without JetStream (its
    /// QoS 1 deliveries to MQTT subscribers lose some; see the README).
    pub fn at_most_once(port: u16, filters: &[&str]) -> Subscriber {
        Self::connect(port, filters, &format!("test-sub-{}", next_id()), true, QoS::AtMostOnce)
    }

    /// A subscriber with a persistent session: the broker queues what it
    /// misses while the broker itself restarts.
    pub fn persistent(port: u16, filters: &[&str], id: &str) -> Subscriber {
        Self::connect(port, filters, id, false, QoS::AtLeastOnce)
    }

    fn connect(port: u16, filters: &[&str], id: &str, clean: bool, qos: QoS) -> Subscriber {
        let mut opts = options(id, port);
        opts.set_clean_session(clean);
        let (client, mut conn) = Client::new(opts, 100);
        for f in filters {
            client.subscribe(*f, qos).unwrap();
        }
        let (tx, rx) = channel();
        let (ack_tx, ack_rx) = channel();
        let want = filters.len();
        let (again, filters): (Client, Vec<String>) =
            (client.clone(), filters.iter().map(|f| f.to_string()).collect());
        std::thread::spawn(move || {
            let mut acks = 0;
            let mut connects = 0;
            for ev in conn.iter() {
                match ev {
                    // rumqttc never subscribes again after a reconnect (a
                    // clustered broker drops connections while it elects leaders).
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connects += 1;
                        if connects > 1 {
                            for f in &filters {
                                let _ = again.try_subscribe(f.clone(), qos);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            received: Instant::now(),
                        };
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acks += 1;
                        if acks == want {
                            let _ = ack_tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ack_rx.recv_timeout(Duration::from_secs(10)).expect("test subscriber: no SUBACK from the broker");
        Subscriber { rx, _conn: Box::new(client) }
    }

    /// A subscriber fed by another client (the benchmarks' lean one); `conn`
    /// is kept, and dropped with it.
    pub fn from_receiver(rx: Receiver<Message>, conn: impl std::any::Any + Send) -> Subscriber {
        Subscriber { rx, _conn: Box::new(conn) }
    }

    /// The next message within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Message> {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("test subscriber disconnected"),
        }
    }

    /// The first message on `topic` whose payload contains `needle`.
    pub fn wait_for(&self, topic: &str, needle: &str, timeout: Duration) -> Message {
        let deadline = Instant::now() + timeout;
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if m.topic == topic && String::from_utf8_lossy(&m.payload).contains(needle) {
                return m;
            }
        }
        panic!("no message containing `{needle}` on {topic} within {timeout:?}");
    }

    /// Collect messages matching `keep` until `n` arrived (or `timeout`), then
    /// keep listening for `quiet` to catch any extra ones.
    pub fn collect(
        &self,
        n: usize,
        timeout: Duration,
        quiet: Duration,
        keep: impl Fn(&Message) -> bool,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < n {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Some(m) if keep(&m) => out.push(m),
                Some(_) => {}
                None => break,
            }
        }
        let deadline = Instant::now() + quiet;
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if keep(&m) {
                out.push(m);
            }
        }
        out
    }
}

pub struct Publisher {
    client: Client,
    sent: usize,
    acked: Arc<AtomicUsize>,
}

impl Publisher {
    pub fn new(port: u16) -> Publisher {
        let id = format!("test-pub-{}", next_id());
        let (client, mut conn) = Client::new(options(&id, port), 1000);
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Publisher { client, sent: 0, acked }
    }

    /// QoS 1 publish.
    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).unwrap();
        self.sent += 1;
    }

    /// QoS 1 publish, retained.
    pub fn publish_retained(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client.publish(topic, QoS::AtLeastOnce, true, payload.into()).unwrap();
        self.sent += 1;
    }

    /// Wait until the broker acknowledged everything published so far.
    pub fn flush(&self, timeout: Duration) {
        wait_acked(&self.acked, self.sent, timeout);
    }
}

/// Wait until `acked` (PUBACKs counted by a client's reader) reaches `sent`.
pub fn wait_acked(acked: &AtomicUsize, sent: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while acked.load(Ordering::SeqCst) < sent {
        assert!(
            Instant::now() < deadline,
            "broker acknowledged {} of {sent} publishes",
            acked.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn next_id() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) * 1000 + std::process::id() as usize % 1000
}

/// A bare MQTT 3.1.1 client that connects once as `client_id` (taking the
/// id over from whoever holds it) and never reconnects; dropping it closes
/// the socket.
pub fn connect_once(port: u16, client_id: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    variable.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    variable.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
    s.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

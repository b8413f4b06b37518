//! A lean MQTT 3.1.1 load generator for the benchmarks: QoS 1 publishes
//! encoded straight into a socket buffer, and a subscriber that parses
//! PUBLISH packets off a buffered socket and answers PUBACKs in batches. The
//! rumqttc clients of the tests hand every message through channels and an
//! event loop thread; at 40k msg/s they took 0.9 of a core of the two the
//! broker and lineguard share, so the generator itself held the peer back
//! (BENCHMARKS.md).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::mqtt::{Message, Subscriber};

/// Write bursts out once this much is buffered.
const SEND_AT: usize = 32 * 1024;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            return;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// One packet: `(first byte, body)`.
fn read_packet(r: &mut impl Read, body: &mut Vec<u8>) -> std::io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    let first = b[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        r.read_exact(&mut b)?;
        len |= ((b[0] & 0x7f) as usize) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    body.resize(len, 0);
    r.read_exact(body)?;
    Ok(first)
}

/// Connect with a clean session and no keep-alive (runs are short), and wait for CONNACK.
fn connect(port: u16, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("loadgen: connect to the broker");
    s.set_nodelay(true).unwrap();
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    put_str(&mut body, id.as_bytes());
    let mut packet = vec![0x10];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut ack = Vec::new();
    let first = read_packet(&mut s, &mut ack).expect("loadgen: no CONNACK");
    assert!(first == 0x20 && ack.get(1) == Some(&0), "loadgen: connection refused: {first:#x} {ack:?}");
    s
}

fn next_id(kind: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("loadgen-{kind}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// QoS 1 publisher. `publish` buffers; a burst goes out every 32 KiB, and
/// `send` or `flush` writes what is left.
pub struct Publisher {
    stream: TcpStream,
    buf: Vec<u8>,
    pkid: u16,
    sent: usize,
    acked: Arc<AtomicUsize>,
}

impl Publisher {
    pub fn new(port: u16) -> Publisher {
        let stream = connect(port, &next_id("pub"));
        let acked = Arc::new(AtomicUsize::new(0));
        let (a, mut r) = (acked.clone(), BufReader::new(stream.try_clone().unwrap()));
        std::thread::spawn(move || {
            let mut body = Vec::new();
            while let Ok(first) = read_packet(&mut r, &mut body) {
                if first == 0x40 {
                    a.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Publisher { stream, buf: Vec::with_capacity(2 * SEND_AT), pkid: 0, sent: 0, acked }
    }

    pub fn publish(&mut self, topic: &str, payload: impl AsRef<[u8]>) {
        let payload = payload.as_ref();
        self.pkid = self.pkid.checked_add(1).unwrap_or(1);
        self.buf.push(0x32);
        put_len(&mut self.buf, 2 + topic.len() + 2 + payload.len());
        put_str(&mut self.buf, topic.as_bytes());
        self.buf.extend_from_slice(&self.pkid.to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.sent += 1;
        if self.buf.len() >= SEND_AT {
            self.send();
        }
    }

    /// Write out what is buffered.
    pub fn send(&mut self) {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf).expect("loadgen: broker closed the connection");
            self.buf.clear();
        }
    }

    /// Send, then wait until the broker acknowledged everything published.
    pub fn flush(&mut self, timeout: Duration) {
        self.send();
        crate::support::mqtt::wait_acked(&self.acked, self.sent, timeout);
    }
}

/// A QoS 1 subscriber on a socket of its own, delivering through the tests'
/// `Subscriber` (same `next`, `collect`, `wait_for`). PUBACKs are written
/// once the socket's buffered input is used up, one write for a whole burst.
pub fn subscriber(port: u16, filters: &[&str]) -> Subscriber {
    let mut stream = connect(port, &next_id("sub"));
    let mut body = Vec::new();
    body.extend_from_slice(&1u16.to_be_bytes());
    for f in filters {
        put_str(&mut body, f.as_bytes());
        body.push(1);
    }
    let mut packet = vec![0x82];
    put_len(&mut packet, body.len());
    packet.extend_from_slice(&body);
    stream.write_all(&packet).unwrap();
    let (tx, rx) = channel();
    let closer = stream.try_clone().unwrap();
    let (mut writer, mut r) = (stream.try_clone().unwrap(), BufReader::with_capacity(256 * 1024, stream));
    let mut suback = Vec::new();
    assert_eq!(
        read_packet(&mut r, &mut suback).expect("loadgen: no SUBACK"),
        0x90,
        "loadgen: expected SUBACK"
    );
    std::thread::spawn(move || {
        let (mut body, mut acks) = (Vec::new(), Vec::with_capacity(64 * 1024));
        while let Ok(first) = read_packet(&mut r, &mut body) {
            if first >> 4 != 3 {
                continue;
            }
            let qos = (first >> 1) & 3;
            assert!(qos < 2, "loadgen: subscribed at QoS 1, got QoS {qos}");
            let tlen = u16::from_be_bytes([body[0], body[1]]) as usize;
            let mut at = 2 + tlen;
            if qos == 1 {
                acks.extend_from_slice(&[0x40, 2, body[at], body[at + 1]]);
                at += 2;
            }
            let m = Message {
                topic: String::from_utf8_lossy(&body[2..2 + tlen]).into_owned(),
                payload: body[at..].to_vec(),
                retain: first & 1 == 1,
                received: Instant::now(),
            };
            if tx.send(m).is_err() {
                return;
            }
            if r.buffer().is_empty() && !acks.is_empty() {
                if writer.write_all(&acks).is_err() {
                    return;
                }
                acks.clear();
            }
        }
    });
    Subscriber::from_receiver(rx, Closing(closer))
}

/// Closes the subscriber's socket when the `Subscriber` is dropped, which
/// ends its reader thread.
struct Closing(TcpStream);

impl Drop for Closing {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

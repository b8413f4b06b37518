//! The telemetry connection's relay: a message of any size never stops intake.
//!
//! rumqttc reads every packet whole into memory and drops the connection on
//! one larger than its limit. Over MQTT 3.1.1 a persistent session then gets
//! that very message again at every reconnect, so one oversize telemetry
//! message stopped all intake for good. MQTT 5 has an answer (the broker
//! honours the Maximum Packet Size lineguard states in CONNECT and drops
//! such messages itself); 3.1.1 has none, so over 3.1.1 the telemetry
//! connection runs through this relay:
//!
//! - rumqttc connects to a Unix socket in the state directory (the
//!   daemon's own, created 0600 under the unit's `UMask=0077`); for
//!   each connection the relay connects to the broker (TCP, or TLS with the
//!   configured CA and client certificate) and copies what rumqttc sends
//!   unchanged;
//! - what the broker sends is read packet by packet (the fixed header says
//!   how long each is) and passed through, except a PUBLISH too large for
//!   rumqttc: that one is streamed past and dropped, keeping its topic,
//!   packet id, QoS and first [`HEAD`] bytes, and rumqttc gets a small
//!   stand-in PUBLISH in its place;
//! - the stand-in's payload starts with a marker and a per-process random
//!   nonce (no device can forge it), then the original length and the head.
//!   [`stand_in`] recognises it; the pipeline rejects it as
//!   `payload_too_large` (counted, dead-lettered truncated), and it is
//!   acknowledged like any rejected message, so the broker never sends it
//!   again and the stream behind it flows.
//!
//! Memory stays bounded whatever the broker sends: a read buffer, the
//! variable header of one packet (the topic is at most 64 KiB) and the head.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rumqttc::tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use rumqttc::tokio_rustls::TlsConnector;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::mqtt::{BrokerAddr, TlsMaterial};

/// Bytes of an oversize payload kept for the dead letter.
pub(crate) const HEAD: usize = crate::pipeline::DEAD_LETTER_SHOWS;
const MARKER: &[u8; 16] = b"\0lineguard:big\0\0";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 64 * 1024;

fn nonce() -> &'static [u8; 16] {
    static NONCE: OnceLock<[u8; 16]> = OnceLock::new();
    NONCE.get_or_init(rand::random)
}

/// An oversize message, as its stand-in describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Oversize {
    /// Length of the payload the broker sent.
    pub len: u64,
    /// Its first bytes (at most [`HEAD`]).
    pub head: Bytes,
}

/// The oversize message `payload` stands in for, if it is a stand-in.
pub(crate) fn stand_in(payload: &Bytes) -> Option<Oversize> {
    let tag = MARKER.len() + nonce().len();
    if payload.len() < tag + 8 || &payload[..MARKER.len()] != MARKER || &payload[MARKER.len()..tag] != nonce()
    {
        return None;
    }
    let len = u64::from_le_bytes(payload[tag..tag + 8].try_into().expect("8 bytes"));
    Some(Oversize { len, head: payload.slice(tag + 8..) })
}

/// Where the relay connects to: the brokers of `mqtt.hosts`, in turn, the
/// next one after each connection that ends (a broker lost or refused).
struct Upstream {
    brokers: Vec<(BrokerAddr, Option<ServerName<'static>>)>,
    tls: Option<TlsConnector>,
    next: std::sync::atomic::AtomicUsize,
}

/// A running relay; it stops when dropped.
pub(crate) struct Relay {
    socket: PathBuf,
    upstream: Arc<Upstream>,
    /// Why the last connection to the broker failed (rumqttc sees only the
    /// socket closing).
    error: Arc<Mutex<Option<String>>>,
    accept: tokio::task::JoinHandle<()>,
    /// Where the socket is when `state.dir`'s path is too long for one.
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A Unix socket's path must fit `sockaddr_un` (108 bytes, with its NUL).
const SOCKET_PATH_MAX: usize = 100;

impl Relay {
    /// Listen on a socket in `dir` (the state directory: one socket per
    /// daemon, and one a crash left behind is replaced); each connection
    /// rumqttc makes there is relayed to `host:port` (over TLS with `tls`).
    /// PUBLISH packets whose remaining length exceeds `limit` get a stand-in.
    pub(crate) fn start(
        brokers: &[BrokerAddr],
        tls: Option<&TlsMaterial>,
        limit: usize,
        dir: &Path,
    ) -> anyhow::Result<Relay> {
        let connector = match tls {
            Some(t) => Some(TlsConnector::from(Arc::new(client_config(t)?))),
            None => None,
        };
        let brokers = brokers
            .iter()
            .map(|b| Ok((b.clone(), tls.map(|_| server_name(&b.host)).transpose()?)))
            .collect::<anyhow::Result<_>>()?;
        let upstream = Arc::new(Upstream { brokers, tls: connector, next: Default::default() });
        // Private to the daemon: the socket opens a broker session with our
        // TLS client certificate. In the state directory, so that a kill -9
        // leaves nothing behind that the next start does not reuse.
        let mut socket = dir.join("mqtt-relay.sock");
        let mut fallback = None;
        if socket.as_os_str().len() > SOCKET_PATH_MAX {
            let private = tempfile::Builder::new().prefix("lineguard-").tempdir()?;
            socket = private.path().join("mqtt-relay.sock");
            fallback = Some(private);
        }
        std::fs::create_dir_all(dir)?;
        match std::fs::symlink_metadata(&socket) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                std::fs::remove_file(&socket)?
            }
            Ok(_) => anyhow::bail!("{} exists and is not a socket", socket.display()),
            Err(_) => {}
        }
        let listener = UnixListener::bind(&socket).map_err(|e| {
            anyhow::anyhow!(
                "cannot create its socket {}: {e} (state.dir must be writable by the daemon's user)",
                socket.display()
            )
        })?;
        let error = Arc::new(Mutex::new(None));
        let errors = error.clone();
        let relayed = Arc::clone(&upstream);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(serve(client, Arc::clone(&relayed), limit, errors.clone()));
            }
        });
        Ok(Relay { socket, upstream, error, accept, _dir: fallback })
    }

    /// The socket rumqttc connects to.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The broker the relay connects to now (or tries next).
    pub(crate) fn broker(&self) -> BrokerAddr {
        self.upstream.broker().0.clone()
    }

    /// Why the last connection to the broker failed, once.
    pub(crate) fn take_error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|e| anyhow::anyhow!("mqtt.host `{host}` is not a name TLS can check ({e})"))
}

/// The rustls client configuration for the broker (the CA, and a client
/// certificate for mTLS), as rumqttc would build it.
fn client_config(t: &TlsMaterial) -> anyhow::Result<ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&t.ca).collect::<Result<_, _>>()?;
    roots.add_parsable_certificates(cas);
    anyhow::ensure!(!roots.is_empty(), "mqtt.tls.ca_file holds no usable CA certificate");
    let builder = ClientConfig::builder().with_root_certificates(roots);
    Ok(match &t.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(key)?;
            builder.with_client_auth_cert(certs, key)?
        }
    })
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

impl Upstream {
    /// The broker whose turn it is.
    fn broker(&self) -> &(BrokerAddr, Option<ServerName<'static>>) {
        &self.brokers[self.next.load(std::sync::atomic::Ordering::Relaxed) % self.brokers.len()]
    }

    /// A connection ended (or failed): the next one goes to the next broker.
    fn lost(&self) {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, String> {
        let (broker, name) = self.broker();
        let addr = (broker.host.as_str(), broker.port);
        let connect = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("I/O: {e}"))?;
            match (&self.tls, name) {
                (Some(connector), Some(name)) => {
                    let tls = connector.connect(name.clone(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
                    Ok(Box::new(tls) as Box<dyn Stream>)
                }
                _ => Ok(Box::new(tcp) as Box<dyn Stream>),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| Err(format!("no connection to {broker} within {CONNECT_TIMEOUT:?}")))
            .map_err(|e| format!("{broker}: {e}"))
    }
}

async fn serve(
    client: UnixStream,
    upstream: Arc<Upstream>,
    limit: usize,
    errors: Arc<Mutex<Option<String>>>,
) {
    let broker = match upstream.connect().await {
        Ok(b) => b,
        Err(e) => {
            *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            upstream.lost();
            return; // rumqttc sees its socket close
        }
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_broker, mut to_broker) = tokio::io::split(broker);
    let up = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_broker).await;
        let _ = to_broker.shutdown().await;
    };
    let down = async {
        if let Err(e) = relay_down(&mut from_broker, &mut to_client, limit).await {
            crate::ops::events::mqtt::RelayEvents.ended(&e);
        }
    };
    // Either side closing ends both: the broker sees rumqttc's disconnect
    // (its will fires unless rumqttc sent DISCONNECT), and rumqttc the broker's.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    upstream.lost();
}

/// Where the reader is in the broker's packet stream.
#[derive(Debug)]
enum At {
    /// The start of a packet.
    Header,
    /// Passing this many more bytes of the current packet through.
    Pass(usize),
    /// An oversize PUBLISH whose fixed header (`first` byte) is read; `rest`
    /// bytes of it follow.
    Oversize { first: u8, rest: usize },
    /// Collecting up to `need` more bytes of its head into the stand-in,
    /// then dropping `skip` bytes.
    Head { stand_in: Vec<u8>, need: usize, skip: usize },
    /// Dropping this many more bytes.
    Skip(usize),
}

/// The broker -> rumqttc direction: packets through, oversize PUBLISH
/// packets replaced by stand-ins.
async fn relay_down<R, W>(from: &mut R, to: &mut W, limit: usize) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(READ_CHUNK);
    let mut at = At::Header;
    loop {
        while step(&mut at, &mut input, &mut out, limit)? {}
        if !out.is_empty() {
            to.write_all(&out).await?;
            out.clear();
        }
        input.reserve(READ_CHUNK);
        if from.read_buf(&mut input).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The fixed header at the start of `b`: (its length, the remaining length).
fn fixed_header(b: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = b.get(1 + i) else { return Ok(None) };
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((2 + i, len)));
        }
    }
    if b.len() >= 5 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed MQTT remaining length"));
    }
    Ok(None)
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

/// Make what progress `input` allows; false when it needs more bytes.
fn step(at: &mut At, input: &mut BytesMut, out: &mut Vec<u8>, limit: usize) -> io::Result<bool> {
    match at {
        At::Header => {
            let Some((header, remaining)) = fixed_header(input)? else { return Ok(false) };
            let first = input[0];
            if first >> 4 == 3 && remaining > limit {
                input.advance(header);
                *at = At::Oversize { first, rest: remaining };
            } else {
                *at = At::Pass(header + remaining);
            }
            Ok(true)
        }
        At::Pass(n) => {
            if input.is_empty() {
                return Ok(false);
            }
            let take = (*n).min(input.len());
            out.extend_from_slice(&input[..take]);
            input.advance(take);
            *n -= take;
            if *n == 0 {
                *at = At::Header;
            }
            Ok(true)
        }
        At::Oversize { first, rest } => {
            let qos = (*first >> 1) & 3;
            if input.len() < 2 {
                return Ok(false);
            }
            let topic = usize::from(u16::from_be_bytes([input[0], input[1]]));
            let variable = 2 + topic + if qos > 0 { 2 } else { 0 };
            if variable > *rest {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "PUBLISH shorter than its topic"));
            }
            if input.len() < variable {
                return Ok(false);
            }
            let payload = *rest - variable;
            let keep = payload.min(HEAD);
            let mut stand_in = Vec::with_capacity(5 + variable + 40 + keep);
            stand_in.push(*first);
            remaining_length(variable + MARKER.len() + nonce().len() + 8 + keep, &mut stand_in);
            stand_in.extend_from_slice(&input[..variable]);
            stand_in.extend_from_slice(MARKER);
            stand_in.extend_from_slice(nonce());
            stand_in.extend_from_slice(&(payload as u64).to_le_bytes());
            input.advance(variable);
            *at = At::Head { stand_in, need: keep, skip: payload - keep };
            Ok(true)
        }
        At::Head { stand_in, need, skip } => {
            let take = (*need).min(input.len());
            stand_in.extend_from_slice(&input[..take]);
            input.advance(take);
            *need -= take;
            if *need > 0 {
                return Ok(false);
            }
            out.append(stand_in);
            *at = if *skip > 0 { At::Skip(*skip) } else { At::Header };
            Ok(true)
        }
        At::Skip(n) => {
            if input.is_empty() {
                return Ok(false);
            }
            let take = (*n).min(input.len());
            input.advance(take);
            *n -= take;
            if *n == 0 {
                *at = At::Header;
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: u8, topic: &str, pkid: u16, payload: &[u8]) -> Vec<u8> {
        let mut var = Vec::new();
        var.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        var.extend_from_slice(topic.as_bytes());
        if qos > 0 {
            var.extend_from_slice(&pkid.to_be_bytes());
        }
        let mut p = vec![0x30 | (qos << 1)];
        remaining_length(var.len() + payload.len(), &mut p);
        p.extend_from_slice(&var);
        p.extend_from_slice(payload);
        p
    }

    /// Feed `stream` in pieces of `chunk` bytes; what comes out.
    fn through(stream: &[u8], chunk: usize, limit: usize) -> Vec<u8> {
        let (mut at, mut input, mut out) = (At::Header, BytesMut::new(), Vec::new());
        for piece in stream.chunks(chunk) {
            input.extend_from_slice(piece);
            while step(&mut at, &mut input, &mut out, limit).unwrap() {}
        }
        assert!(matches!(at, At::Header), "ends between packets: {at:?}");
        out
    }

    /// Parse rumqttc's way: every packet whole, none above the limit.
    fn packets(b: &[u8], limit: usize) -> Vec<rumqttc::Packet> {
        let mut buf = BytesMut::from(b);
        let mut out = Vec::new();
        while !buf.is_empty() {
            out.push(rumqttc::Packet::read(&mut buf, limit).unwrap());
        }
        out
    }

    #[test]
    fn small_packets_pass_unchanged_and_a_large_publish_becomes_a_stand_in() {
        let big = vec![b'x'; 100_000];
        let mut stream = publish(1, "plant/a/m1/telemetry", 7, b"{\"values\":{}}");
        stream.extend(publish(1, "plant/a/m2/telemetry", 8, &big));
        stream.extend([0x90, 0x03, 0x00, 0x01, 0x01]); // a SUBACK
        stream.extend(publish(0, "plant/a/m3/telemetry", 0, &big[..70_000]));
        stream.extend(publish(1, "plant/a/m1/telemetry", 9, b"after"));
        for chunk in [1, 7, 4096, 1 << 20] {
            let out = through(&stream, chunk, 65_536);
            let got = packets(&out, 65_536);
            assert_eq!(got.len(), 5, "chunk {chunk}");
            let rumqttc::Packet::Publish(p) = &got[1] else { panic!("{:?}", got[1]) };
            assert_eq!(
                (p.topic.as_str(), p.pkid, p.qos),
                ("plant/a/m2/telemetry", 8, rumqttc::QoS::AtLeastOnce)
            );
            let o = stand_in(&p.payload).expect("a stand-in");
            assert_eq!(o.len, 100_000);
            assert_eq!(o.head.as_ref(), &big[..HEAD]);
            let rumqttc::Packet::Publish(p) = &got[3] else { panic!() };
            assert_eq!((p.qos, stand_in(&p.payload).unwrap().len), (rumqttc::QoS::AtMostOnce, 70_000));
            let rumqttc::Packet::Publish(p) = &got[4] else { panic!() };
            assert_eq!((p.pkid, p.payload.as_ref()), (9, b"after".as_ref()));
            assert!(stand_in(&p.payload).is_none());
            assert!(matches!(got[2], rumqttc::Packet::SubAck(_)));
        }
    }

    #[test]
    fn a_forged_marker_is_not_a_stand_in() {
        let mut forged = MARKER.to_vec();
        forged.extend_from_slice(&[0; 16]);
        forged.extend_from_slice(&5u64.to_le_bytes());
        assert!(stand_in(&Bytes::from(forged)).is_none());
    }
}

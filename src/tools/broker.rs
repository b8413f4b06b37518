//! The embedded MQTT broker (rumqttd) for `demo`, and for tests on machines
//! without mosquitto.
//!
//! rumqttd cannot report a port bound to `:0` and has no shutdown: we pick a
//! free loopback port ourselves and run it on a thread that lives as long as
//! the process.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// A free TCP port on loopback (released just before use: a tiny race, fine
/// for a demo or a test).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Wait until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing is listening on {addr} after {timeout:?}")
}

/// Start rumqttd on `127.0.0.1:port` (MQTT 3.1.1) and wait until it listens.
pub fn start_embedded(port: u16) -> anyhow::Result<SocketAddr> {
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = ServerSettings {
        name: "lineguard-embedded".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 500,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = Broker::new(config).start() {
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .context("cannot start the embedded broker thread")?;
    wait_for_port(listen, Duration::from_secs(10)).context("embedded broker did not start")?;
    Ok(listen)
}

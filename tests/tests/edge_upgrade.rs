//! WebSocket through a plain-HTTP edge listener: the real `sluice run` forwards the upgrade
//! request, and after the backend's `101 Switching Protocols` both connections carry bytes
//! both ways, untouched.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_upgrade -- --test-threads=1`.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
};

use sluice_tests::{
    connect_tcp,
    daemon::{Daemon, Scratch},
    require_root,
    servers::tcp_server,
    topology::{backend_addr4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    Topology, VIP4,
};

const EDGE_PORT: u16 = 8080;
const BACKEND_PORT: u16 = 9080;

/// Answers an upgrade request with 101 and then echoes; anything else gets 426.
fn websocket_echo(mut stream: TcpStream, _name: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    if !(head.contains("upgrade: websocket") && head.contains("connection: upgrade")) {
        return stream.write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n");
    }
    stream.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )?;
    let mut buf = [0u8; 4096];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

#[test]
fn websocket_upgrade_passes_through_the_edge() {
    require_root();
    let topo = Topology::build("slws", 1).expect("build topology");
    let scratch = Scratch::create("slws").expect("scratch directory");
    let text = format!(
        "instance = \"test-slws\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\nconntrack_entries = 4096\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"127.0.0.1:9020\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
         backend = [{{ address = \"{}\" }}]\n\n\
         [[edge]]\nname = \"ws\"\naddress = \"{GW_CLIENT_ADDR4}:{EDGE_PORT}\"\npool = \"web\"\n\
         backend_port = {BACKEND_PORT}\n",
        Daemon::socket_in(scratch.path()).display(),
        backend_addr4(0),
    );
    let daemon =
        Daemon::start(topo.gateway(), scratch.path(), "test-slws", &text).expect("start sluice");
    let _backend = tcp_server(&topo.backends()[0], "ws", BACKEND_PORT, websocket_echo)
        .expect("websocket backend");

    let edge = SocketAddr::new(GW_CLIENT_ADDR4.into(), EDGE_PORT);
    let mut stream = connect_tcp(topo.client(), edge).expect("connect to the edge");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("send the upgrade request");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("read the status line");
    assert!(
        status.starts_with("HTTP/1.1 101"),
        "{status}\nsluice:\n{}",
        daemon.log_text()
    );
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read the response head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.contains("upgrade: websocket"), "{head}");
    // Bytes both ways after the switch, in several rounds, including non-HTTP bytes.
    for round in 0..5u8 {
        let frame = [0x81, 0x05, b'h', b'e', b'l', b'l', round];
        stream.write_all(&frame).expect("send a frame");
        let mut back = [0u8; 7];
        reader.read_exact(&mut back).expect("read the echo");
        assert_eq!(back, frame, "round {round}");
    }
}

//! TCP MD5 against the kernel itself, over loopback (no root needed): a listener that has a
//! key for the speaker's address completes the handshake only with a SYN signed by that key.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsFd as _,
    time::Duration,
};

use super::{connect, Peer};
use crate::config::Password;

/// A listener on `address` that expects segments from `address` signed with `key`.
fn signed_listener(address: IpAddr, key: &[u8]) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(SocketAddr::new(address, 0)).unwrap();
    crate::ffi::set_tcp_md5(listener.as_fd(), address, key).unwrap();
    listener
}

fn peer(address: SocketAddr, key: &[u8]) -> Peer {
    Peer {
        address,
        remote_as: 65000,
        hold_time: 3,
        password: Some(Password::for_tests(key)),
    }
}

/// `true` when the handshake completed within a second.
async fn connects(peer: &Peer) -> bool {
    match tokio::time::timeout(Duration::from_secs(1), connect(peer)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => false,
    }
}

#[tokio::test]
async fn the_same_key_connects_and_another_is_dropped_over_ipv4_and_ipv6() {
    for address in ["127.0.0.1", "::1"] {
        let address: IpAddr = address.parse().unwrap();
        let listener = signed_listener(address, b"the-key");
        let at = listener.local_addr().unwrap();
        assert!(connects(&peer(at, b"the-key")).await, "{address}: same key");
        assert!(
            !connects(&peer(at, b"another-key")).await,
            "{address}: another key"
        );
    }
}

#[test]
fn a_key_longer_than_the_kernel_takes_is_refused_before_the_syscall() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    let e = crate::ffi::set_tcp_md5(socket.as_fd(), "127.0.0.1".parse().unwrap(), &[b'k'; 81])
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
}

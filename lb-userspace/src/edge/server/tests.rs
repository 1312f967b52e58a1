use std::io::{Read as _, Write as _};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

#[tokio::test]
async fn closing_takes_the_connections_the_kernel_completed_instead_of_resetting_them() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    // Established from the client's side, and a request already sent, before anything
    // accepted them.
    let mut clients: Vec<std::net::TcpStream> = (0..3)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(address).unwrap();
            c.write_all(format!("request {i}").as_bytes()).unwrap();
            c
        })
        .collect();

    let queued = take_queued(socket);

    assert_eq!(
        queued.len(),
        clients.len(),
        "every completed connection taken"
    );
    for (mut stream, peer) in queued {
        let mut request = [0u8; 9];
        stream.read_exact(&mut request).await.unwrap();
        let i = clients
            .iter()
            .position(|c| c.local_addr().unwrap() == peer)
            .expect("the peer is one of the clients");
        assert_eq!(request, *format!("request {i}").as_bytes());
        stream.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        clients[i].read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"answer", "the client is answered, not reset");
    }
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the listening socket is closed: later connections are refused"
    );
}

//! The error convention (see the crate doc): each cause is printed once in a whole chain. A
//! variant that both printed its cause and returned it from `source()` made `sluice run` on a
//! busy or unreadable socket say the OS error twice ("binding the admin socket /x: Permission
//! denied (os error 13): Permission denied (os error 13)").

use std::{io, path::PathBuf};

use crate::{
    admin::{client::ClientError, server::AdminError},
    daemon::core::CoreError,
    dataplane::{resolver::ResolveError, DataplaneError},
    edge::{
        proxy_header,
        tls::{HandshakeError, HandshakeOutcome, TlsError},
    },
};

fn os_error() -> io::Error {
    io::Error::from_raw_os_error(13)
}

/// `error` as `sluice run` prints a start-up failure: the whole chain under a context.
fn printed(error: impl std::error::Error + Send + Sync + 'static) -> String {
    format!("{:#}", anyhow::Error::new(error).context("starting"))
}

#[test]
fn every_cause_is_printed_once_in_a_chain() {
    let path = PathBuf::from("/run/sluice/x.sock");
    let os = os_error().to_string();
    let chains = [
        printed(AdminError::Bind {
            path: path.clone(),
            error: os_error(),
        }),
        printed(AdminError::CreateDir {
            dir: path.clone(),
            error: os_error(),
        }),
        printed(AdminError::Chmod {
            path: path.clone(),
            error: os_error(),
        }),
        printed(ClientError::Connect {
            path: path.clone(),
            error: os_error(),
        }),
        printed(ClientError::Io {
            path: path.clone(),
            error: os_error(),
        }),
        printed(TlsError::Read {
            path: path.clone(),
            error: os_error(),
        }),
        printed(HandshakeError::Failed {
            outcome: HandshakeOutcome::of_io(&os_error()),
            error: os_error(),
        }),
        printed(proxy_header::Error::from(os_error())),
        printed(ResolveError::Socket(os_error())),
        printed(CoreError::from(DataplaneError::MapIo {
            name: "sluice_conntrack_v3",
            what: "walking",
            error: os_error(),
        })),
    ];
    for chain in chains {
        assert_eq!(chain.matches(&os).count(), 1, "{chain}");
        assert!(chain.starts_with("starting: "), "{chain}");
    }
}

#[test]
fn a_wrapper_prints_what_it_wraps_once() {
    let inner = DataplaneError::UnknownVip("web".into());
    let chain = printed(CoreError::from(inner));
    assert_eq!(chain, "starting: unknown VIP \"web\"");
}

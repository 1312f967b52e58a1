use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use clap::Parser;

use super::*;
use crate::admin::{
    protocol::Response,
    server::{AdminServer, Handler},
};
use crate::test_support::Scratch;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: AdminCommand,
}

/// The defaults: the tests pass the socket and format to `run_at` themselves.
fn to() -> AdminArgs {
    AdminArgs {
        socket: PathBuf::from(DEFAULT_SOCKET),
        json: false,
    }
}

fn parse(args: &[&str]) -> AdminCommand {
    Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
        .unwrap()
        .command
}

#[test]
fn arguments_parse() {
    assert!(matches!(
        parse(&["drain", "web", "198.18.10.2"]),
        AdminCommand::Drain { vip, backend, .. } if vip == "web" && backend.to_string() == "198.18.10.2"
    ));
    assert!(matches!(
        parse(&["flows"]),
        AdminCommand::Flows {
            vip: None,
            limit: 100,
            ..
        }
    ));
    assert!(matches!(
        parse(&["flows", "--backend", "198.18.10.2", "--client", "10.1.2.3", "--sort", "idle"]),
        AdminCommand::Flows { backend: Some(b), client: Some(c), sort: Some(FlowSort::Idle), .. }
            if b.to_string() == "198.18.10.2" && c.to_string() == "10.1.2.3/32"
    ));
    assert!(matches!(
        parse(&["flows", "--client", "10.0.0.0/8"]),
        AdminCommand::Flows { client: Some(c), .. } if c.to_string() == "10.0.0.0/8"
    ));
    assert!(matches!(
        parse(&["flows", "--vip", "dns", "--limit", "5"]),
        AdminCommand::Flows { vip: Some(v), limit: 5, .. } if v == "dns"
    ));
    let AdminCommand::Stats {
        watch, interval, ..
    } = parse(&["stats", "--watch", "--interval", "500ms"])
    else {
        panic!("not stats");
    };
    assert!(watch);
    assert_eq!(Duration::from(interval), Duration::from_millis(500));
    let AdminCommand::Stats {
        watch, interval, ..
    } = parse(&["stats"])
    else {
        panic!("not stats");
    };
    assert!(!watch);
    assert_eq!(Duration::from(interval), Duration::from_secs(1));
    assert!(Cli::try_parse_from(["sluice", "drain", "web", "not-an-ip"]).is_err());
    // Every admin subcommand takes the socket and the output format after its name.
    let status = parse(&["status", "--socket", "/tmp/s.sock", "--json"]);
    assert_eq!(status.args().socket, PathBuf::from("/tmp/s.sock"));
    assert!(status.args().json);
    assert_eq!(
        parse(&["reload"]).args().socket,
        PathBuf::from(DEFAULT_SOCKET)
    );
}

/// A daemon on a temp socket whose handler records requests and answers with `answer`.
struct FakeDaemon {
    runtime: tokio::runtime::Runtime,
    server: Option<AdminServer>,
    seen: Arc<Mutex<Vec<Request>>>,
    dir: Scratch,
}

impl FakeDaemon {
    fn start(answer: fn(&Request) -> Response) -> FakeDaemon {
        let dir = Scratch::new();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let handler: Arc<dyn Handler> = Arc::new(move |request: Request| {
            let response = answer(&request);
            record.lock().unwrap().push(request);
            response
        });
        let server = runtime
            .block_on(AdminServer::bind(&dir.path("admin.sock"), handler))
            .unwrap();
        FakeDaemon {
            runtime,
            server: Some(server),
            seen,
            dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path("admin.sock")
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        drop(self.server.take());
    }
}

#[test]
fn commands_send_their_requests_and_succeed() {
    let daemon = FakeDaemon::start(|request| match request {
        Request::Reload => Response::data(&ReloadOutcome {
            vips: 2,
            backends: 7,
        }),
        Request::Backends | Request::Flows { .. } => Response::data(&Vec::<BackendRow>::new()),
        _ => Response {
            ok: true,
            error: None,
            data: None,
        },
    });
    let backend: IpAddr = "198.18.10.2".parse().unwrap();
    let commands = [
        (AdminCommand::Reload { to: to() }, Request::Reload),
        (AdminCommand::Backends { to: to() }, Request::Backends),
        (
            AdminCommand::Drain {
                vip: "web".into(),
                backend,
                to: to(),
            },
            Request::Drain {
                vip: "web".into(),
                backend,
            },
        ),
        (
            AdminCommand::Undrain {
                vip: "web".into(),
                backend,
                to: to(),
            },
            Request::Undrain {
                vip: "web".into(),
                backend,
            },
        ),
        (
            AdminCommand::Flows {
                vip: None,
                limit: 3,
                backend: None,
                client: None,
                sort: None,
                to: to(),
            },
            Request::Flows(FlowQuery {
                vip: None,
                limit: 3,
                ..FlowQuery::default()
            }),
        ),
        (
            AdminCommand::Flows {
                vip: None,
                limit: 3,
                backend: Some("198.18.11.2".parse().unwrap()),
                client: Some("203.0.113.7/32".parse().unwrap()),
                sort: Some(FlowSort::Backend),
                to: to(),
            },
            Request::Flows(FlowQuery {
                vip: None,
                limit: 3,
                backend: Some("198.18.11.2".parse().unwrap()),
                client: Some("203.0.113.7/32".parse().unwrap()),
                sort: Some(FlowSort::Backend),
            }),
        ),
    ];
    for (command, request) in commands {
        let code = run_at(&daemon.socket(), false, command);
        assert_eq!(code, ExitCode::SUCCESS, "{request:?}");
        assert_eq!(daemon.seen.lock().unwrap().pop(), Some(request));
    }
    let code = run_at(&daemon.socket(), true, AdminCommand::Reload { to: to() });
    assert_eq!(code, ExitCode::SUCCESS);
}

#[test]
fn daemon_refusal_exits_1() {
    let daemon = FakeDaemon::start(|_| Response::error("no VIP named api"));
    let command = AdminCommand::Drain {
        vip: "api".into(),
        backend: "198.18.10.2".parse().unwrap(),
        to: to(),
    };
    assert_eq!(run_at(&daemon.socket(), false, command), ExitCode::FAILURE);
    assert_eq!(
        dispatch(&daemon.socket(), false, AdminCommand::Status { to: to() })
            .unwrap_err()
            .to_string(),
        "no VIP named api"
    );
}

#[test]
fn version_skew_is_reported() {
    let daemon = FakeDaemon::start(|_| Response::data(&"surprise"));
    let err = dispatch(&daemon.socket(), false, AdminCommand::Status { to: to() }).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unexpected answer from the daemon"),
        "{err}"
    );
    // --json passes whatever the daemon said through.
    assert!(dispatch(&daemon.socket(), true, AdminCommand::Status { to: to() }).is_ok());
}

#[test]
fn no_daemon_exits_1_with_one_line() {
    let dir = Scratch::new();
    let socket = dir.path("none.sock");
    let err = dispatch(&socket, false, AdminCommand::Status { to: to() }).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no sluice daemon is running (nothing listening on {})",
            socket.display()
        )
    );
    assert_eq!(
        run_at(&socket, false, AdminCommand::Backends { to: to() }),
        ExitCode::FAILURE
    );
}

#[test]
fn zero_watch_interval_is_refused() {
    let socket = std::env::temp_dir().join("unused.sock");
    let err = watch::run(&socket, false, Duration::ZERO).unwrap_err();
    assert!(matches!(err, Failure::Usage(_)));
}

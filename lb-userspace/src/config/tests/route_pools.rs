//! Routes naming a pool of their own (`pool`, `backend_port`): the target each resolves to,
//! and the broken ones with line, field and fix.

use super::{broken::check_cases, broken::Case, edit_lines, GOOD};
use crate::config::{
    route::{Action, RoutePool},
    Config,
};

/// `GOOD` with a second TCP VIP `auth` (port 4180) and a listener on `web` (backend port
/// 8080) whose route `/oauth2` (line 57) sends to `auth`. Lines 60 and 63 are blank, for keys
/// of the first and the second route.
fn pools() -> String {
    format!(
        "{GOOD}\n[[vip]]\nname = \"auth\"\naddress = \"198.19.0.11:4180\"\n\n\
         [[vip.backend]]\naddress = \"198.18.20.2\"\n\n[[vip.backend]]\n\
         address = \"198.18.20.3\"\n\n[[edge]]\nname = \"app\"\n\
         address = \"198.19.0.10:8443\"\npool = \"web\"\nbackend_port = 8080\n\n\
         [[edge.route]]\npath = \"/oauth2\"\npool = \"auth\"\n\n[[edge.route]]\n\
         path = \"/\"\n\n"
    )
}

fn edit(edits: &[(usize, &str)]) -> String {
    edit_lines(&pools(), edits)
}

/// The first route's pool, after `edits`.
fn target(edits: &[(usize, &str)]) -> Option<RoutePool> {
    let c = Config::parse(&edit(edits)).unwrap_or_else(|e| panic!("{e}"));
    match &c.edges[0].routes[0].action {
        Action::Proxy { pool, .. } => pool.clone(),
        other => panic!("{other:?}"),
    }
}

fn pool(vip: &str, backend_port: u16) -> RoutePool {
    RoutePool {
        vip: vip.to_owned(),
        backend_port,
    }
}

#[test]
fn a_route_pool_defaults_its_port_and_the_listeners_own_is_none() {
    // Another VIP: on that VIP's port, unless the route names one.
    assert_eq!(target(&[]), Some(pool("auth", 4180)));
    assert_eq!(
        target(&[(60, "backend_port = 4181")]),
        Some(pool("auth", 4181))
    );
    // The listener's own pool, written or not, on its port: the listener's target.
    assert_eq!(target(&[(59, "pool = \"web\"")]), None);
    assert_eq!(target(&[(59, "backend_port = 8080")]), None);
    assert_eq!(
        target(&[(59, "pool = \"web\""), (60, "backend_port = 8080")]),
        None
    );
    // The listener's pool on another port is a target of its own.
    assert_eq!(
        target(&[(59, "backend_port = 9090")]),
        Some(pool("web", 9090))
    );
    // Routes without pool keys keep the listener's.
    let c = Config::parse(&pools()).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        &c.edges[0].routes[1].action,
        Action::Proxy { pool: None, .. }
    ));
}

#[test]
fn affinity_is_checked_against_the_routes_pool() {
    let text = edit(&[(
        60,
        "affinity = { mode = \"auth-session-route\", routes = { \"kc-0\" = \"198.18.20.2\" } }",
    )]);
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        &c.edges[0].routes[0].action,
        Action::Proxy {
            affinity: Some(_),
            pool: Some(_),
            ..
        }
    ));
}

const CASES: &[Case] = &[
    Case {
        name: "route pool naming no VIP",
        edits: &[(59, "pool = \"oauth\"")],
        line: 59,
        message: "edge[0].route[0].pool: no [[vip]] is named \"oauth\"; name one of: web, dns, \
                  auth",
    },
    Case {
        name: "route pool naming a UDP VIP",
        edits: &[(59, "pool = \"dns\"")],
        line: 59,
        message: "edge[0].route[0].pool: vip \"dns\" is UDP; an HTTP listener needs a TCP VIP's \
                  backends",
    },
    Case {
        name: "route backend_port 0",
        edits: &[(60, "backend_port = 0")],
        line: 60,
        message: "edge[0].route[0].backend_port: 0 is out of range: must be between 1 and 65535 \
                  (the port of the route pool's backends, plain HTTP)",
    },
    Case {
        name: "route backend_port beyond 65535",
        edits: &[(59, "backend_port = 70000")],
        line: 59,
        message: "edge[0].route[0].backend_port: 70000 is out of range",
    },
    Case {
        name: "auth-session-route on a route pool naming a backend of the listener's pool",
        edits: &[(
            60,
            "affinity = { mode = \"auth-session-route\", routes = { \"kc-0\" = \
             \"198.18.10.2\" } }",
        )],
        line: 60,
        message: "edge[0].route[0].affinity.routes.\"kc-0\": 198.18.10.2 is not a backend of \
                  vip \"auth\", so no request could ever go there; name one of: 198.18.20.2, \
                  198.18.20.3",
    },
    Case {
        name: "auth-session-route on the listener's pool naming a backend of a route pool",
        edits: &[(
            63,
            "affinity = { mode = \"auth-session-route\", routes = { \"kc-0\" = \
             \"198.18.20.2\" } }",
        )],
        line: 63,
        message: "edge[0].route[1].affinity.routes.\"kc-0\": 198.18.20.2 is not a backend of \
                  vip \"web\"",
    },
    Case {
        name: "pool on a route sluice answers itself",
        edits: &[(63, "action = \"status\"\nstatus = 404\npool = \"auth\"")],
        line: 65,
        message: "edge[0].route[1].pool: has no effect with action = \"status\"; it belongs to \
                  action = \"proxy\": remove it or change the action",
    },
    Case {
        name: "backend_port on a redirect",
        edits: &[(
            63,
            "action = \"redirect\"\nlocation = \"/oauth2/start\"\nbackend_port = 4180",
        )],
        line: 65,
        message: "edge[0].route[1].backend_port: has no effect with action = \"redirect\"; it \
                  belongs to action = \"proxy\"",
    },
];

#[test]
fn broken_route_pools_give_line_field_and_fix() {
    check_cases(CASES, edit);
}

/// The one-listener oauth2-proxy layout `examples/sluice.toml` shows (its `# #   ` lines),
/// behind a listener on `web` with a VIP `oauth2-proxy`, parses to what it says.
#[test]
fn the_examples_oauth2_proxy_layout_on_one_listener_parses() {
    use crate::config::route::auth::OnUnauthorized;
    let example = include_str!("../../../../examples/sluice.toml");
    let layout: Vec<&str> = example
        .lines()
        .filter_map(|l| l.strip_prefix("# #   "))
        .collect();
    assert!(layout.len() > 5, "the layout lines: {layout:?}");
    let text = format!(
        "{GOOD}\n[[vip]]\nname = \"oauth2-proxy\"\naddress = \"198.19.0.11:4180\"\n\
         [[vip.backend]]\naddress = \"198.18.30.2\"\n\
         [[edge]]\nname = \"app\"\naddress = \"198.19.0.10:8443\"\npool = \"web\"\n\
         backend_port = 8080\n{}\n",
        layout.join("\n")
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let routes = &c.edges[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["oauth2", "app"]);
    match &routes[0].action {
        Action::Proxy {
            pool, auth: None, ..
        } => assert_eq!(*pool, Some(self::pool("oauth2-proxy", 4180))),
        other => panic!("{other:?}"),
    }
    match &routes[1].action {
        Action::Proxy {
            pool: None,
            auth: Some(auth),
            ..
        } => assert_eq!(
            auth.on_unauthorized,
            OnUnauthorized::Redirect {
                signin_url: "/oauth2/start".into()
            }
        ),
        other => panic!("{other:?}"),
    }
}

//! A proxy route's `auth`: what a good table reads as, and each broken one with its line,
//! field and fix.

use std::time::Duration;

use hyper::header::HeaderName;

use super::broken::{check_cases, Case};
use super::{edit, with_edge, Config};
use crate::config::route::{
    auth::{AuthUrl, OnUnauthorized, DEFAULT_TIMEOUT},
    Action, ForwardAuth,
};

/// Replaces line 39 of the base config (the last backend's address) with itself and an
/// `[[edge]]` whose first route is `[[edge.route]]` (line 45) with these keys (lines 46, ...).
macro_rules! route {
    ($($key:expr),*) => {
        concat!(
            "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\n",
            "address = \"198.19.0.10:443\"\npool = \"web\"\n[[edge.route]]\n",
            $($key, "\n",)*
            "[edge.tls]\ncertificates = [{ cert = \"/etc/s.pem\", key = \"/etc/s.key\" }]\n",
            "client_auth = \"optional\"\nclient_ca = \"/etc/ca.pem\""
        )
    };
}

fn auth_of(keys: &str) -> Option<ForwardAuth> {
    let c = Config::parse(&with_edge(keys)).unwrap_or_else(|e| panic!("{e}"));
    match &c.edges[0].routes[0].action {
        Action::Proxy { auth, .. } => auth.as_deref().cloned(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn auth_defaults_to_oauth2_proxys_headers_a_redirect_and_five_seconds() {
    let a = auth_of(
        "[[edge.route]]\npath = \"/\"\nauth = { url = \"http://127.0.0.1:4180/oauth2/auth\", \
         signin_url = \"/oauth2/start\" }",
    )
    .expect("auth");
    assert_eq!(
        a,
        ForwardAuth {
            url: AuthUrl {
                host: "127.0.0.1".into(),
                port: 4180,
                path_and_query: "/oauth2/auth".into(),
            },
            timeout: DEFAULT_TIMEOUT,
            on_unauthorized: OnUnauthorized::Redirect {
                signin_url: "/oauth2/start".into()
            },
            response_headers: [
                "x-auth-request-user",
                "x-auth-request-email",
                "x-auth-request-groups",
                "x-auth-request-preferred-username",
                "x-auth-request-access-token",
                "authorization",
            ]
            .map(HeaderName::from_static)
            .to_vec(),
            pass_set_cookie: false,
        }
    );
    assert_eq!(a.url.authority(), "127.0.0.1:4180");
}

#[test]
fn every_auth_setting_is_read() {
    let a = auth_of(
        "[[edge.route]]\npath = \"/app\"\nauth = { url = \"http://auth.internal\", \
         on_unauthorized = \"pass\", timeout = \"250ms\", response_headers = \
         [\"X-User\", \"x_groups\"], pass_set_cookie = true }",
    )
    .expect("auth");
    assert_eq!(
        a.url,
        AuthUrl {
            host: "auth.internal".into(),
            port: 80,
            path_and_query: "/".into(),
        }
    );
    assert_eq!(a.url.authority(), "auth.internal");
    assert_eq!(a.on_unauthorized, OnUnauthorized::Pass);
    assert_eq!(a.timeout, Duration::from_millis(250));
    assert_eq!(
        a.response_headers,
        [
            HeaderName::from_static("x-user"),
            HeaderName::from_static("x_groups")
        ]
    );
    assert!(a.pass_set_cookie);
    let v6 = auth_of(
        "[[edge.route]]\npath = \"/\"\nauth = { url = \"http://[2001:db8::5]:4180/auth?x=1\", \
         on_unauthorized = \"pass\" }",
    )
    .expect("auth");
    assert_eq!(v6.url.host, "[2001:db8::5]");
    assert_eq!(v6.url.port, 4180);
    assert_eq!(v6.url.path_and_query, "/auth?x=1");
}

const AUTH_CASES: &[Case] = &[
    Case {
        name: "auth on a route sluice answers itself",
        edits: &[(
            39,
            route!(
                "path = \"/admin\"",
                "action = \"status\"",
                "status = 403",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \"pass\" }"
            )
        )],
        line: 49,
        message: "edge[0].route[0].auth: has no effect with action = \"status\"; it belongs to \
                  action = \"proxy\": remove it or change the action",
    },
    Case {
        name: "auth url that is not http",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"ftp://127.0.0.1/auth\", on_unauthorized = \"pass\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.url: \"ftp://127.0.0.1/auth\" is not an http URL; write \
                  the auth endpoint as http://host[:port]/path, e.g. \
                  \"http://127.0.0.1:4180/oauth2/auth\"",
    },
    Case {
        name: "auth url over https",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"https://sso.example/oauth2/auth\", on_unauthorized = \"pass\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.url: \"https://sso.example/oauth2/auth\" is https, which \
                  sluice does not speak to an auth service yet",
    },
    Case {
        name: "auth url without a host",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://:4180/auth\", on_unauthorized = \"pass\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.url: \"http://:4180/auth\" names no valid host and port",
    },
    Case {
        name: "redirect without a sign-in URL",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.signin_url: is needed with on_unauthorized = \
                  \"redirect\" (the default)",
    },
    Case {
        name: "sign-in URL with pass",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \
                 \"pass\", signin_url = \"/oauth2/start\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.signin_url: has no effect with on_unauthorized = \"pass\"",
    },
    Case {
        name: "sign-in URL that is no URL",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", signin_url = \"oauth2/start\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.signin_url: \"oauth2/start\" is not a sign-in URL",
    },
    Case {
        name: "response header that is no header name",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \
                 \"pass\", response_headers = [\"X Auth User\"] }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.response_headers[0]: \"X Auth User\" is not a header \
                  name",
    },
    Case {
        name: "response header sluice manages",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \
                 \"pass\", response_headers = [\"X-User\", \"X_Forwarded_For\"] }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.response_headers[1]: \"X_Forwarded_For\" is a \
                  forwarded header, which sluice sets or removes itself",
    },
    Case {
        name: "response header listed twice",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \
                 \"pass\", response_headers = [\"X-User\", \"x_user\"] }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.response_headers[1]: \"x_user\" is listed twice",
    },
    Case {
        name: "zero auth timeout",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \
                 \"pass\", timeout = \"0s\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.timeout: \"0s\" is too short: must be at least 1ms; it is \
                  how long the auth service gets to answer, connect included, before the client \
                  gets 503",
    },
    Case {
        name: "unknown on_unauthorized",
        edits: &[(
            39,
            route!(
                "path = \"/\"",
                "auth = { url = \"http://127.0.0.1:4180/oauth2/auth\", on_unauthorized = \"allow\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].auth.on_unauthorized: \"allow\" is not a valid choice; use \
                  \"redirect\" or \"pass\"",
    },
];

#[test]
fn broken_auth_settings_give_line_field_and_fix() {
    check_cases(AUTH_CASES, edit);
}

#[test]
fn the_documented_auth_line_of_the_example_config_parses() {
    let example = include_str!("../../../../examples/sluice.toml");
    let line = example
        .lines()
        .find_map(|l| l.strip_prefix("# auth = {"))
        .expect("examples/sluice.toml documents auth = { ... }");
    let a = auth_of(&format!("[[edge.route]]\npath = \"/\"\nauth = {{{line}")).expect("auth");
    assert!(a.pass_set_cookie);
    assert_eq!(a.url.port, 4180);
    assert_eq!(a.response_headers.len(), 6);
}

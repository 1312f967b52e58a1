use std::sync::{atomic::AtomicU64, Arc};

use hyper::{header::HeaderValue, StatusCode, Uri};

use super::{
    path::{normalise, BadPath},
    Names, Routed, Table, Unrouted,
};
use crate::config::route::{Action, Preset, Route, RoutePath};

fn route(name: &str, path: &str, action: Action) -> Route {
    Route {
        name: name.to_owned(),
        path: match path {
            "/" => RoutePath::All,
            p => RoutePath::Under(p.parse().unwrap()),
        },
        host: None,
        action,
    }
}

fn proxy() -> Action {
    Action::Proxy {
        strip_prefix: false,
        add_prefix: None,
        affinity: None,
        auth: None,
        pool: None,
    }
}

fn table(routes: &[Route]) -> Table {
    Table::new(routes, |_| Arc::new(AtomicU64::new(0)))
}

fn names(authority: &str) -> Names<'_> {
    Names {
        authority,
        host_header: None,
        sni: None,
    }
}

/// The backend's target for `target`, or why there is none.
fn decide(t: &Table, target: &str) -> Result<String, Unrouted> {
    let uri: Uri = target.parse().unwrap_or_else(|e| panic!("{target}: {e}"));
    match t.route(&uri, &names("kc.example"))? {
        Routed::Proxy { target, .. } => Ok(target),
        Routed::Answer { status, .. } => Ok(format!("answer {}", status.as_u16())),
    }
}

#[test]
fn normal_forms() {
    let cases = [
        ("/", "/"),
        ("/realms", "/realms"),
        ("/realms/", "/realms/"),
        ("//realms//x", "/realms/x"),
        ("/realms/./x", "/realms/x"),
        ("/realms/x/.", "/realms/x/"),
        ("/realms/x/..", "/realms/"),
        ("/a/b/../../realms", "/realms"),
        ("/%72ealms", "/realms"),
        ("/%7e%7E%2D%5f", "/~~-_"),
        ("/realms/%c3%a9", "/realms/%C3%A9"),
        ("/realms/%252e%252e", "/realms/%252e%252e"),
        ("/realms/%3b", "/realms/%3B"),
        ("/Realms", "/Realms"),
    ];
    for (path, want) in cases {
        assert_eq!(normalise(path).as_deref(), Ok(want), "{path}");
    }
}

#[test]
fn paths_without_a_safe_normal_form() {
    let cases = [
        ("*", BadPath::NotAbsolute),
        ("realms", BadPath::NotAbsolute),
        ("/realms%2fx", BadPath::EncodedSeparator),
        ("/realms%2Fx", BadPath::EncodedSeparator),
        ("/realms%5cx", BadPath::EncodedSeparator),
        ("/realms%00", BadPath::Control),
        ("/realms%0a", BadPath::Control),
        ("/realms%7f", BadPath::Control),
        ("/realms%", BadPath::BadEscape),
        ("/realms%2", BadPath::BadEscape),
        ("/realms%zz", BadPath::BadEscape),
        ("/realms\\x", BadPath::Backslash),
        ("/admin;x/", BadPath::Parameter),
        ("/realms/..;/admin", BadPath::Parameter),
        ("/..", BadPath::AboveRoot),
        ("/realms/../..", BadPath::AboveRoot),
        ("/%2e%2e/admin", BadPath::AboveRoot),
    ];
    for (path, want) in cases {
        assert_eq!(normalise(path), Err(want), "{path}");
    }
}

/// What a request gets: proxied with this target, 404 or 400.
#[derive(Debug, PartialEq, Eq)]
enum Want {
    To(&'static str),
    NotFound,
    BadRequest,
}

/// Each spelling a client might use to reach what the Keycloak preset hides, and the answer.
#[test]
fn bypass_attempts_against_the_keycloak_preset() {
    use Want::{BadRequest, NotFound, To};
    let t = table(&Preset::Keycloak.routes());
    let cases = [
        ("/realms/main/account", To("/realms/main/account")),
        ("/realms", To("/realms")),
        ("/resources/x.css", To("/resources/x.css")),
        (
            "/.well-known/openid-configuration",
            To("/.well-known/openid-configuration"),
        ),
        ("/%2e%77ell-known/x", To("/.well-known/x")),
        (
            "/realms/x?redirect=/admin/",
            To("/realms/x?redirect=/admin/"),
        ),
        ("/admin/master/console/", NotFound),
        ("/admin", NotFound),
        ("/metrics", NotFound),
        ("/health/ready", NotFound),
        ("/", NotFound),
        ("/realmsx", NotFound),
        ("/Realms/x", NotFound),
        ("/REALMS/../admin/", NotFound),
        ("/realms/../admin/", NotFound),
        ("/realms/%2e%2e/admin/", NotFound),
        ("/realms/%2E%2e/admin/", NotFound),
        ("/realms/./../admin/", NotFound),
        ("//admin/", NotFound),
        ("/realms//../admin", NotFound),
        ("/%61dmin/", NotFound),
        ("/%41dmin/", NotFound),
        ("/realms/%2e%2e%2fadmin/", BadRequest),
        ("/realms%2f..%2fadmin/", BadRequest),
        ("/realms/..;/admin/", BadRequest),
        ("/realms;/../admin/", BadRequest),
        ("/admin;jsessionid=1/", BadRequest),
        ("/realms/..%5cadmin/", BadRequest),
        ("/realms/..\\admin/", BadRequest),
        ("/realms/../../admin/", BadRequest),
        ("/realms/%00/../admin", BadRequest),
    ];
    for (target, want) in cases {
        let got = match decide(&t, target) {
            Ok(path) if path == want_path(&want) => want_of(&want),
            Ok(_) => Want::To("(another target)"),
            Err(Unrouted::NoRoute) => NotFound,
            Err(Unrouted::BadPath(_)) => BadRequest,
            Err(Unrouted::Misdirected) => panic!("{target}: misdirected"),
        };
        assert_eq!(got, want, "{target}");
    }
}

fn want_path(w: &Want) -> &'static str {
    match w {
        Want::To(p) => p,
        _ => "",
    }
}

fn want_of(w: &Want) -> Want {
    match w {
        Want::To(p) => Want::To(p),
        Want::NotFound => Want::NotFound,
        Want::BadRequest => Want::BadRequest,
    }
}

#[test]
fn prefixes_match_whole_segments_and_are_stripped_and_added() {
    let strip = Action::Proxy {
        strip_prefix: true,
        add_prefix: None,
        affinity: None,
        auth: None,
        pool: None,
    };
    let both = Action::Proxy {
        strip_prefix: true,
        add_prefix: Some("/kc".parse().unwrap()),
        affinity: None,
        auth: None,
        pool: None,
    };
    let t = table(&[
        route("auth", "/auth", strip),
        route("app", "/app", both),
        route("old", "/old", Action::Status(403)),
    ]);
    assert_eq!(decide(&t, "/auth").as_deref(), Ok("/"));
    assert_eq!(decide(&t, "/auth/").as_deref(), Ok("/"));
    assert_eq!(
        decide(&t, "/auth/realms/x?y=1").as_deref(),
        Ok("/realms/x?y=1")
    );
    assert_eq!(
        decide(&t, "/auth/../authx").as_deref(),
        Err(&Unrouted::NoRoute)
    );
    assert_eq!(decide(&t, "/authx").as_deref(), Err(&Unrouted::NoRoute));
    assert_eq!(decide(&t, "/app/x").as_deref(), Ok("/kc/x"));
    assert_eq!(decide(&t, "/old/x").as_deref(), Ok("answer 403"));
    let uri: Uri = "/auth/x".parse().unwrap();
    match t.route(&uri, &names("a")) {
        Ok(Routed::Proxy {
            forwarded_prefix, ..
        }) => assert_eq!(forwarded_prefix, Some("/auth")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn redirects_carry_their_location() {
    let t = table(&[route(
        "home",
        "/",
        Action::Redirect {
            status: 308,
            location: "https://kc.example/realms/main/account".into(),
        },
    )]);
    let uri: Uri = "/".parse().unwrap();
    assert_eq!(
        t.route(&uri, &names("a")),
        Ok(Routed::Answer {
            status: StatusCode::PERMANENT_REDIRECT,
            location: Some(&HeaderValue::from_static(
                "https://kc.example/realms/main/account"
            )),
        })
    );
}

#[test]
fn host_routes_need_sni_host_and_authority_to_agree() {
    let mut kc = route("kc", "/", proxy());
    kc.host = Some("kc.example".into());
    let mut app = route("app", "/", Action::Status(404));
    app.host = Some("app.example".into());
    let t = table(&[kc, app]);
    let uri: Uri = "/realms".parse().unwrap();
    let ask = |authority: &str, host: Option<&str>, sni: Option<&str>| {
        let header = host.map(|h| HeaderValue::from_str(h).unwrap());
        let names = Names {
            authority,
            host_header: header.as_ref(),
            sni,
        };
        match t.route(&uri, &names) {
            Ok(Routed::Proxy { .. }) => "kc",
            Ok(Routed::Answer { .. }) => "app",
            Err(Unrouted::Misdirected) => "421",
            Err(Unrouted::NoRoute) => "404",
            Err(Unrouted::BadPath(_)) => "400",
        }
    };
    assert_eq!(ask("kc.example", None, Some("kc.example")), "kc");
    assert_eq!(ask("KC.Example.:443", None, Some("kc.example")), "kc");
    assert_eq!(ask("app.example", Some("app.example"), None), "app");
    assert_eq!(ask("app.example", None, Some("kc.example")), "421");
    assert_eq!(ask("app.example", Some("kc.example"), None), "421");
    assert_eq!(ask("other.example", None, None), "404");
}

#[test]
fn without_host_routes_the_host_decides_nothing() {
    let t = table(&[route("all", "/", proxy())]);
    let uri: Uri = "/x".parse().unwrap();
    let names = Names {
        authority: "a.example",
        host_header: None,
        sni: Some("b.example"),
    };
    assert!(matches!(t.route(&uri, &names), Ok(Routed::Proxy { .. })));
}

#[test]
fn auth_routes_ask_about_the_public_normalised_path_and_others_ask_nothing() {
    use crate::config::route::auth::{AuthUrl, ForwardAuth, OnUnauthorized};
    let auth = ForwardAuth {
        url: AuthUrl {
            host: "127.0.0.1".into(),
            port: 4180,
            path_and_query: "/oauth2/auth".into(),
        },
        timeout: std::time::Duration::from_secs(5),
        on_unauthorized: OnUnauthorized::Pass,
        response_headers: Vec::new(),
        pass_set_cookie: false,
    };
    let gated = Action::Proxy {
        strip_prefix: true,
        add_prefix: Some("/internal".parse().unwrap()),
        affinity: None,
        auth: Some(Box::new(auth)),
        pool: None,
    };
    let t = table(&[route("app", "/app", gated), route("open", "/", proxy())]);
    let ask = |target: &str| {
        let uri: Uri = target.parse().unwrap();
        match t.route(&uri, &names("kc.example")) {
            Ok(Routed::Proxy { target, auth, .. }) => (target, auth.map(|(_, uri)| uri)),
            other => panic!("{other:?}"),
        }
    };
    // The auth service hears of the path the client asked for, normalised; the backend gets
    // it rewritten.
    assert_eq!(
        ask("/app/./x/../y?q=%2F"),
        (
            "/internal/y?q=%2F".to_owned(),
            Some("/app/y?q=%2F".to_owned())
        )
    );
    assert_eq!(ask("/other"), ("/other".to_owned(), None));
}

#[test]
fn a_route_with_a_pool_of_its_own_gets_that_target_and_the_others_none() {
    use crate::config::{route::RoutePool, SendProxy};
    use crate::edge::{
        pool::Pool,
        upstream::{Target, Timeouts, Upstream},
    };
    use std::time::Duration;
    let to = |vip: &str| Action::Proxy {
        strip_prefix: false,
        add_prefix: None,
        affinity: None,
        auth: None,
        pool: Some(RoutePool {
            vip: vip.to_owned(),
            backend_port: 4180,
        }),
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        response: Duration::from_secs(1),
    };
    let mut made = Vec::new();
    let t = table(&[
        route("oauth2", "/oauth2", to("auth")),
        route("more", "/more", to("auth")),
        route("app", "/", proxy()),
    ])
    .pooled(|p| {
        assert_eq!(p.vip, "auth");
        let target = Arc::new(Target {
            pool: Arc::new(Pool::default()),
            upstream: Arc::new(Upstream::new(p.backend_port, SendProxy::Off, timeouts)),
        });
        made.push(Arc::clone(&target));
        target
    });
    assert_eq!(made.len(), 2, "asked once per route with a pool");
    let target_of = |path: &str| {
        let uri: Uri = path.parse().unwrap();
        match t.route(&uri, &names("kc.example")) {
            Ok(Routed::Proxy { to, .. }) => to.map(std::ptr::from_ref),
            other => panic!("{path}: {other:?}"),
        }
    };
    assert_eq!(target_of("/oauth2/start"), Some(Arc::as_ptr(&made[0])));
    assert_eq!(target_of("/more/x"), Some(Arc::as_ptr(&made[1])));
    assert_eq!(target_of("/app"), None);
}

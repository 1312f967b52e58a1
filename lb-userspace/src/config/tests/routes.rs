//! Route tables as written: order, defaults, host spelling, presets.

use super::with_edge;
use crate::config::{
    route::{Action, Preset, RoutePath},
    Config,
};

fn routes(keys: &str) -> Vec<crate::config::route::Route> {
    let c = Config::parse(&with_edge(keys)).unwrap_or_else(|e| panic!("{e}"));
    c.edges[0].routes.clone()
}

#[test]
fn routes_keep_their_order_names_hosts_and_actions() {
    let r = routes(
        "[[edge.route]]\nname = \"kc\"\npath = \"/realms\"\nhost = \"KC.Example.\"\n\
         [[edge.route]]\npath = \"/realms\"\nstrip_prefix = true\nadd_prefix = \"/kc\"\n\
         [[edge.route]]\npath = \"/old\"\naction = \"redirect\"\nlocation = \"/realms/main\"\n\
         [[edge.route]]\npath = \"/\"\naction = \"status\"\nstatus = 403",
    );
    let summary: Vec<(&str, &str, Option<&str>)> = r
        .iter()
        .map(|r| (r.name.as_str(), r.path.as_str(), r.host.as_deref()))
        .collect();
    // A host route does not shadow the same path for every host; default names are route<i>.
    assert_eq!(
        summary,
        [
            ("kc", "/realms", Some("kc.example")),
            ("route1", "/realms", None),
            ("route2", "/old", None),
            ("route3", "/", None),
        ]
    );
    assert_eq!(
        r[1].action,
        Action::Proxy {
            strip_prefix: true,
            add_prefix: Some("/kc".parse().unwrap()),
            affinity: None,
            auth: None,
            pool: None,
        }
    );
    assert_eq!(
        r[2].action,
        Action::Redirect {
            status: 302,
            location: "/realms/main".into(),
        }
    );
    assert_eq!(r[3].action, Action::Status(403));
    assert_eq!(r[3].path, RoutePath::All);
}

#[test]
fn keycloak_presets_expose_the_guides_paths_and_admin_only_when_named() {
    let public = routes("preset = \"keycloak\"");
    let paths: Vec<&str> = public.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/realms", "/resources", "/.well-known"]);
    assert_eq!(public, Preset::Keycloak.routes());
    let admin = routes("preset = \"keycloak-admin\"");
    let paths: Vec<&str> = admin.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/realms", "/resources", "/.well-known", "/admin"]);
    for r in public.iter().chain(&admin) {
        assert_eq!(
            r.action,
            Action::Proxy {
                strip_prefix: false,
                add_prefix: None,
                affinity: None,
                auth: None,
                pool: None,
            }
        );
        assert!(r.host.is_none());
    }
}

#[test]
fn affinities_are_read_per_proxy_route() {
    use crate::config::affinity::Affinity;
    let r = routes(
        "[[edge.route]]\npath = \"/realms\"\n\
         affinity = { mode = \"auth-session-route\", routes = { \"kc-0\" = \"198.18.10.2\", \
         \"kc-1\" = \"198.18.10.3\" } }\n\
         [[edge.route]]\npath = \"/\"\naffinity = { mode = \"cookie-hash\", cookie = \"JSESSIONID\" }",
    );
    let affinity = |i: usize| match &r[i].action {
        Action::Proxy { affinity, .. } => affinity.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        affinity(0),
        Some(Affinity::AuthSessionRoute {
            routes: [
                ("kc-0".to_owned(), "198.18.10.2".parse().unwrap()),
                ("kc-1".to_owned(), "198.18.10.3".parse().unwrap()),
            ]
            .into()
        })
    );
    assert_eq!(
        affinity(1),
        Some(Affinity::CookieHash {
            cookie: "JSESSIONID".to_owned()
        })
    );
}

//! `affinity = { mode = "cookie", ... }`: defaults, settings as written, and the key file's
//! checks (which need real files, so they are not in `broken`'s static table).

use std::os::unix::fs::PermissionsExt as _;

use super::with_edge;
use crate::{
    config::{
        affinity::{Affinity, CookieKey, CookieSettings, SameSite},
        route::Action,
        Config,
    },
    test_support::Scratch,
};

fn cookie(affinity: &str) -> CookieSettings {
    let text = with_edge(&format!(
        "[[edge.route]]\npath = \"/realms\"\naffinity = {affinity}"
    ));
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    match &c.edges[0].routes[0].action {
        Action::Proxy {
            affinity: Some(Affinity::Cookie(s)),
            ..
        } => s.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cookie_affinity_defaults_and_settings_as_written() {
    assert_eq!(
        cookie("{ mode = \"cookie\" }"),
        CookieSettings {
            name: "SLUICE_AFFINITY".to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            max_age: None,
            path: "/realms".to_owned(),
            key: CookieKey::Random,
        }
    );
    let scratch = Scratch::new();
    let key = scratch.write("affinity.key", [7u8; 32]);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = cookie(&format!(
        "{{ mode = \"cookie\", cookie = \"__Host-kc\", path = \"/\", same_site = \"None\", \
         max_age = \"8h\", http_only = false, key_file = \"{}\" }}",
        key.display()
    ));
    assert_eq!(
        (s.name.as_str(), s.secure, s.http_only, s.same_site),
        ("__Host-kc", true, false, SameSite::None)
    );
    assert_eq!((s.max_age, s.path.as_str()), (Some(28_800), "/"));
    let CookieKey::File { path, key: secret } = &s.key else {
        panic!("{:?}", s.key)
    };
    assert_eq!((path, secret.bytes()), (&key, &[7u8; 32][..]));
    // Never shown: not in Debug, so not in a log line or a reload's refusal.
    assert_eq!(format!("{secret:?}"), "Secret(32 bytes)");
}

#[test]
fn key_files_that_are_short_open_to_everyone_or_no_file_are_refused() {
    let scratch = Scratch::new();
    let file = |name: &str, bytes: &[u8], mode: u32| {
        let p = scratch.write(name, bytes);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    };
    let short = file("short.key", &[1; 31], 0o600);
    let open = file("open.key", &[1; 32], 0o644);
    let big = file("big.key", &[1; 4097], 0o600);
    let dir = scratch.path("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let create = "create it with `openssl rand -out FILE 32; chmod 600 FILE`";
    let cases = [
        (
            short.clone(),
            format!("holds 31 bytes; the key must be 32 to 4096 random bytes: {create}"),
        ),
        (
            open.clone(),
            "is open to every user (mode 644), and whoever reads it can make cookies sluice \
             honours; `chmod 600` it (or 640 with the daemon's group)"
                .to_owned(),
        ),
        (
            big.clone(),
            format!("holds 4097 bytes; the key must be 32 to 4096 random bytes: {create}"),
        ),
        (dir.clone(), format!("is not a file; {create}")),
    ];
    for (path, why) in cases {
        let text = with_edge(&format!(
            "[[edge.route]]\npath = \"/realms\"\n\
             affinity = {{ mode = \"cookie\", key_file = \"{}\" }}",
            path.display()
        ));
        let errors = Config::parse(&text).expect_err("a bad key file");
        let [error] = &errors.0[..] else {
            panic!("{path:?}: {errors}")
        };
        assert_eq!(error.line(), Some(47), "{error}");
        assert!(
            error.to_string().ends_with(&format!(
                "edge[0].route[0].affinity.key_file: \"{}\" {why}",
                path.display()
            )),
            "{error}"
        );
    }
}

use std::collections::BTreeMap;

use hyper::header::HeaderValue;

use super::*;

fn headers(cookies: &[&str]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for c in cookies {
        h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
    }
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cookies_are_found_in_every_header_quoted_or_not_first_copy_wins() {
    let one = headers(&["a=1; AUTH_SESSION_ID=abc.kc-0;b=2"]);
    assert_eq!(cookie(&one, "AUTH_SESSION_ID"), Some("abc.kc-0"));
    assert_eq!(cookie(&one, "b"), Some("2"));
    // HTTP/2 may send each cookie in a header of its own (RFC 9113 8.2.3).
    let split = headers(&["a=1", "sid=x", "c=3"]);
    assert_eq!(cookie(&split, "sid"), Some("x"));
    assert_eq!(cookie(&headers(&["sid=\"quoted\""]), "sid"), Some("quoted"));
    assert_eq!(cookie(&headers(&["  sid =  v  ;x=1"]), "sid"), Some("v"));
    assert_eq!(
        cookie(&headers(&["sid=first; sid=second"]), "sid"),
        Some("first")
    );
    assert_eq!(
        cookie(&headers(&["sid=first", "sid=second"]), "sid"),
        Some("first")
    );
    // Names are exact: no prefix, suffix or case matches.
    let near = headers(&["SID=1; sidx=2; xsid=3"]);
    assert_eq!(cookie(&near, "sid"), None);
    assert_eq!(cookie(&headers(&["sid="]), "sid"), None);
    assert_eq!(cookie(&headers(&["sid"]), "sid"), None);
    assert_eq!(cookie(&headers(&[]), "sid"), None);
    // A value holding '=' keeps it.
    assert_eq!(cookie(&headers(&["t=a=b"]), "t"), Some("a=b"));
}

fn pool() -> Pool {
    let pool = Pool::default();
    let (a, b, c) = (ip("198.18.10.2"), ip("198.18.11.2"), ip("198.18.12.2"));
    let table = (0..251).map(|i| [a, b, c][i % 3]).collect::<Vec<IpAddr>>();
    // c is draining: out of the table, still keeping sessions.
    pool.update(
        table.into_iter().filter(|x| *x != c).collect(),
        vec![a, b, c],
        vec![a, b, c, ip("198.18.19.2")],
    );
    pool
}

fn session() -> Sticky {
    let routes: BTreeMap<String, IpAddr> = [
        ("kc-0".to_owned(), ip("198.18.10.2")),
        ("kc-2".to_owned(), ip("198.18.12.2")),
        ("kc-9".to_owned(), ip("198.18.19.2")),
    ]
    .into();
    Sticky::new(
        &Affinity::AuthSessionRoute { routes },
        "kc",
        Counters::default(),
    )
}

fn counts(s: &Sticky) -> Vec<u64> {
    s.counters
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect()
}

#[test]
fn auth_session_route_sticks_while_up_or_draining_and_falls_back_otherwise() {
    let (s, p) = (session(), pool());
    let want = |b: &str| Some(Prefer::Backend(ip(b)));
    assert_eq!(
        s.prefer(&headers(&["AUTH_SESSION_ID=abc.kc-0"]), &p),
        want("198.18.10.2")
    );
    // Draining keeps its sessions.
    assert_eq!(
        s.prefer(&headers(&["AUTH_SESSION_ID_LEGACY=abc.kc-2"]), &p),
        want("198.18.12.2")
    );
    // The suffix is what follows the first dot.
    assert_eq!(s.prefer(&headers(&["AUTH_SESSION_ID=a.b.kc-0"]), &p), None);
    // Down (not among the backends keeping sessions).
    assert_eq!(s.prefer(&headers(&["AUTH_SESSION_ID=abc.kc-9"]), &p), None);
    assert_eq!(s.prefer(&headers(&["AUTH_SESSION_ID=abc"]), &p), None);
    assert_eq!(s.prefer(&headers(&["AUTH_SESSION_ID=abc.kc-7"]), &p), None);
    assert_eq!(s.prefer(&headers(&["other=1"]), &p), None);
    // An unbalanced quote is no value, even though its suffix names a route.
    assert_eq!(
        s.prefer(&headers(&["AUTH_SESSION_ID=\"abc.kc-0"]), &p),
        None
    );
    assert_eq!(
        s.prefer(&headers(&["AUTH_SESSION_ID=\"abc.kc-0\""]), &p),
        want("198.18.10.2")
    );
    // hit, fallback_down, no_cookie, invalid
    assert_eq!(counts(&s), vec![3, 1, 1, 4]);
}

#[test]
fn cookie_hash_is_the_same_for_the_same_value_and_spreads_values() {
    let s = Sticky::new(
        &Affinity::CookieHash {
            cookie: "sid".to_owned(),
        },
        "kc",
        Counters::default(),
    );
    let p = pool();
    let pick = |v: &str| match s.prefer(&headers(&[&format!("sid={v}")]), &p) {
        Some(Prefer::Key(k)) => p.pick(k, None),
        other => panic!("{other:?}"),
    };
    assert_eq!(pick("abc"), pick("abc"));
    let to_a = (0..200)
        .filter(|i| pick(&format!("session-{i}")) == Some(ip("198.18.10.2")))
        .count();
    assert!(
        (60..=140).contains(&to_a),
        "{to_a} of 200 values on one backend"
    );
    assert_eq!(s.prefer(&headers(&["other=1"]), &p), None);
    assert_eq!(counts(&s), vec![202, 0, 1, 0]);
    // Fixed hash: a value's slot does not depend on this process.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4 ^ 0x8422_2325);
}

fn own_cookie() -> (Sticky, cookie::Cookie) {
    use crate::config::affinity::{CookieKey, CookieSettings, SameSite};
    let settings = CookieSettings {
        name: "SLUICE_AFFINITY".to_owned(),
        secure: true,
        http_only: true,
        same_site: SameSite::Lax,
        max_age: None,
        path: "/".to_owned(),
        key: CookieKey::Random,
    };
    let key = [9u8; 32];
    let sticky = Sticky {
        how: How::Cookie(Box::new(cookie::with_key(&settings, "kc", &key))),
        counters: Counters::default(),
    };
    (sticky, cookie::with_key(&settings, "kc", &key))
}

#[test]
fn own_cookie_is_set_only_when_the_answering_backend_is_not_the_one_it_names() {
    let (sticky, twin) = own_cookie();
    let now = pool();
    let (a, b) = (ip("198.18.10.2"), ip("198.18.11.2"));
    let cookie_for =
        |backend: IpAddr| format!("SLUICE_AFFINITY={}", cookie::encode(&twin.tag(backend)));
    let set_for = |backend: IpAddr| {
        format!(
            "SLUICE_AFFINITY={}; Path=/; Secure; HttpOnly; SameSite=Lax",
            cookie::encode(&twin.tag(backend))
        )
    };
    // No cookie: the pool's choice, and the answering backend's cookie.
    let choice = sticky.choose(&headers(&["theme=dark"]), &now);
    assert_eq!(choice.prefer, None);
    assert_eq!(
        sticky.answer(&choice, a, &now).unwrap(),
        set_for(a).as_str()
    );
    // A valid one: that backend, and no new cookie...
    let choice = sticky.choose(&headers(&["x=1", &cookie_for(b)]), &now);
    assert_eq!(choice.prefer, Some(Prefer::Backend(b)));
    assert_eq!(sticky.answer(&choice, b, &now), None);
    // ...unless another backend answered (it refused the connection).
    assert_eq!(
        sticky.answer(&choice, a, &now).unwrap(),
        set_for(a).as_str()
    );
    // Draining keeps its sessions.
    let draining = ip("198.18.12.2");
    let choice = sticky.choose(&headers(&[&cookie_for(draining)]), &now);
    assert_eq!(choice.prefer, Some(Prefer::Backend(draining)));
    // Down (a member, not keeping sessions): the pool's choice, and a new cookie.
    let down = ip("198.18.19.2");
    let choice = sticky.choose(&headers(&[&cookie_for(down)]), &now);
    assert_eq!(choice.prefer, None);
    assert_eq!(
        sticky.answer(&choice, a, &now).unwrap(),
        set_for(a).as_str()
    );
    // Forged, another route's, a non-member's, garbage: the pool's choice, a new cookie.
    let mut forged = twin.tag(a);
    forged[15] ^= 1;
    let invalid = [
        format!("SLUICE_AFFINITY={}", cookie::encode(&forged)),
        format!("SLUICE_AFFINITY={}", cookie::encode(&[0; 16])),
        format!(
            "SLUICE_AFFINITY={}",
            cookie::encode(&twin.tag(ip("198.18.99.2")))
        ),
        "SLUICE_AFFINITY=198.18.10.2".to_owned(),
        format!("SLUICE_AFFINITY={}", "A".repeat(4000)),
        "SLUICE_AFFINITY=\"unbalanced".to_owned(),
    ];
    for v in &invalid {
        let choice = sticky.choose(&headers(&[v]), &now);
        assert_eq!(choice.prefer, None, "{v}");
        assert_eq!(
            sticky.answer(&choice, b, &now).unwrap(),
            set_for(b).as_str(),
            "{v}"
        );
    }
    // An empty value is no cookie.
    let choice = sticky.choose(&headers(&["SLUICE_AFFINITY="]), &now);
    assert_eq!(
        sticky.answer(&choice, a, &now).unwrap(),
        set_for(a).as_str()
    );
    // hit, fallback_down, no_cookie, invalid
    assert_eq!(counts(&sticky), vec![2, 1, 2, 6]);
    // The other modes never set a cookie.
    let session = session();
    let choice = session.choose(&headers(&["AUTH_SESSION_ID=abc.kc-0"]), &now);
    assert_eq!(session.answer(&choice, b, &now), None);
}

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
    Sticky::new(&Affinity::AuthSessionRoute { routes }, Counters::default())
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

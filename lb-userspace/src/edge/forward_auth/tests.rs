use hyper::{header::HeaderValue, HeaderMap};

use super::*;

#[test]
fn rd_is_the_whole_url_percent_encoded_and_joins_a_query() {
    let rd = "https://app.test/a b/c?x=1&y=%2F#";
    assert_eq!(
        signin_location("/oauth2/start", rd),
        "/oauth2/start?rd=https%3A%2F%2Fapp.test%2Fa%20b%2Fc%3Fx%3D1%26y%3D%252F%23"
    );
    assert_eq!(
        signin_location("https://sso.test/start?prompt=login", "http://h/"),
        "https://sso.test/start?prompt=login&rd=http%3A%2F%2Fh%2F"
    );
}

#[test]
fn every_spelling_of_a_copied_name_is_removed_and_nothing_else() {
    let mut h = HeaderMap::new();
    for (n, v) in [
        ("x-auth-request-user", "forged"),
        ("x_auth_request_user", "forged"),
        ("X_Auth-Request_USER", "forged"),
        ("authorization", "Bearer forged"),
        ("x-auth-request-userx", "kept"),
        ("x-auth-request", "kept"),
        ("cookie", "a=b"),
    ] {
        h.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_static(v),
        );
    }
    strip(
        &mut h,
        &["x-auth-request-user".to_owned(), "authorization".to_owned()],
    );
    let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["cookie", "x-auth-request", "x-auth-request-userx"]);
}

#[test]
fn the_original_url_is_the_clients_view_of_the_first_hop() {
    let mut sub = Request::new(Empty::<Bytes>::new());
    let h = sub.headers_mut();
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https, http"));
    h.insert(
        X_FORWARDED_HOST,
        HeaderValue::from_static("app.test, lb.internal"),
    );
    h.insert(X_FORWARDED_URI, HeaderValue::from_static("/a/b?c=d"));
    assert_eq!(original_url(&sub), "https://app.test/a/b?c=d");
}

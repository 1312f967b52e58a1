//! A listener's `path_prefix`: the part of the URL the edge owns. Only requests under it are
//! proxied, and the backend sees the path with the prefix removed (so an application that
//! lives at `/` can be published at `/auth`); `X-Forwarded-Prefix` tells it what was removed.
//!
//! The prefix is compared byte for byte with the path as the client sent it. A prefix may not
//! hold `%`, `.`/`..` segments or `//`, so it has exactly one spelling and "under the prefix"
//! cannot be argued about; a client that writes the prefix another way (`/%61uth`) gets 404.

use std::{fmt, str::FromStr};

/// A checked prefix such as `/auth`: leading `/`, no trailing `/`, plain path characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPrefix(String);

/// Why a prefix is refused. Each message follows the prefix as written (`"/auth/" ends
/// with ...`) and says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("does not start with '/'; write it like \"/auth\"")]
    NotAbsolute,
    #[error("is every path; leave path_prefix out to proxy all of them")]
    Root,
    #[error("ends with '/'; leave that off (\"/auth\" covers \"/auth/...\" as well)")]
    TrailingSlash,
    #[error(
        "holds '{0}'; a prefix is a plain path: letters, digits and -._~!$&'()*+;=:@ between \
         single '/' (no query, fragment or percent-encoding)"
    )]
    Char(char),
    #[error("holds \"//\" (an empty segment); use single '/'")]
    EmptySegment,
    #[error("holds a \".\" or \"..\" segment; write the path it stands for")]
    DotSegment,
}

impl FromStr for PathPrefix {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(Error::NotAbsolute);
        };
        if rest.is_empty() {
            return Err(Error::Root);
        }
        // `%` would allow a second spelling of the same path; `?` and `#` end the path;
        // `,` would split X-Forwarded-Prefix into a list.
        if let Some(c) = s.chars().find(|&c| !(c == '/' || is_segment_char(c))) {
            return Err(Error::Char(c));
        }
        if rest.ends_with('/') {
            return Err(Error::TrailingSlash);
        }
        for segment in rest.split('/') {
            match segment {
                "" => return Err(Error::EmptySegment),
                "." | ".." => return Err(Error::DotSegment),
                _ => {}
            }
        }
        Ok(PathPrefix(s.to_owned()))
    }
}

/// RFC 3986 `pchar` without `%` (percent-encoding) and `,`.
fn is_segment_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+;=:@".contains(c)
}

impl PathPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is the prefix itself or below it (`/auth`, `/auth/x`; never `/authx`).
    pub fn covers(&self, path: &str) -> bool {
        path.strip_prefix(self.0.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The backend's path and query for a request's `path_and_query`, or `None` when the
    /// path is not the prefix itself or below it (`/auth`, `/auth/x`; never `/authx`). The
    /// prefix alone becomes `/`; the query is kept as it was.
    pub fn strip(&self, path_and_query: &str) -> Option<String> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if !self.covers(path) {
            return None;
        }
        let mut out = match &path[self.0.len()..] {
            "" => "/".to_owned(),
            rest => rest.to_owned(),
        };
        if let Some(query) = query {
            out.push('?');
            out.push_str(query);
        }
        Some(out)
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> PathPrefix {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn only_paths_under_the_prefix_are_kept_without_it() {
        let auth = prefix("/auth");
        let cases = [
            ("/auth", Some("/")),
            ("/auth?x=1", Some("/?x=1")),
            ("/auth/", Some("/")),
            ("/auth/realms/x?y=1", Some("/realms/x?y=1")),
            (
                "/auth/realms/x?next=/auth/y",
                Some("/realms/x?next=/auth/y"),
            ),
            ("/auth//x", Some("//x")),
            ("/authx", None),
            ("/authx/realms", None),
            ("/Auth/realms", None),
            ("/%61uth/realms", None),
            ("/other", None),
            ("/", None),
            ("/other?p=/auth", None),
            ("*", None),
        ];
        for (path, want) in cases {
            assert_eq!(auth.strip(path).as_deref(), want, "{path}");
        }
        let deep = prefix("/kc/v2");
        assert_eq!(deep.strip("/kc/v2/realms").as_deref(), Some("/realms"));
        assert_eq!(deep.strip("/kc/realms"), None);
        assert_eq!(deep.strip("/kc/v22"), None);
    }

    #[test]
    fn prefixes_with_a_second_spelling_or_no_meaning_are_refused() {
        let cases = [
            ("auth", Error::NotAbsolute),
            ("", Error::NotAbsolute),
            ("/", Error::Root),
            ("/auth/", Error::TrailingSlash),
            ("/auth?x", Error::Char('?')),
            ("/auth#x", Error::Char('#')),
            ("/a%2Fb", Error::Char('%')),
            ("/a b", Error::Char(' ')),
            ("/a,b", Error::Char(',')),
            ("/é", Error::Char('é')),
            ("/a//b", Error::EmptySegment),
            ("//a", Error::EmptySegment),
            ("/a/./b", Error::DotSegment),
            ("/a/..", Error::DotSegment),
            ("/..", Error::DotSegment),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<PathPrefix>(), Err(want), "{text:?}");
        }
        for ok in ["/auth", "/kc/v2", "/a.b/..c/~d", "/x@y:z;v=1"] {
            assert_eq!(prefix(ok).as_str(), ok);
        }
    }
}

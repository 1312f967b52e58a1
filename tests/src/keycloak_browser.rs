//! A scripted browser for Keycloak's login pages: the real curl with a cookie jar of its own,
//! following no redirect by itself (each step is one request, so a test sees every status and
//! `Location`), and the authorization-code flow on top: authorization request, login form,
//! form post with the password, code, token exchange.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::Value;

/// One answer: status, headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn location(&self) -> Result<&str> {
        self.header("location")
            .with_context(|| format!("answer {} has no Location: {}", self.status, self.body))
    }
}

/// A browser: curl run in network namespace `ns` with its own cookie jar.
#[derive(Debug, Clone)]
pub struct Browser {
    ns: String,
    jar: PathBuf,
    /// curl arguments every request gets (`--cacert`, `--resolve`, `--interface`, headers).
    common: Vec<String>,
}

impl Browser {
    /// A browser with an empty jar at `jar`, trusting `ca`.
    pub fn new(ns: &str, jar: PathBuf, ca: &std::path::Path) -> Browser {
        let _ = fs::remove_file(&jar);
        Browser {
            ns: ns.to_owned(),
            jar,
            common: vec!["--cacert".into(), ca.display().to_string()],
        }
    }

    /// `host:port` resolves to `ip` (curl `--resolve`).
    pub fn resolve(mut self, host: &str, port: u16, ip: Ipv4Addr) -> Browser {
        self.common
            .extend(["--resolve".into(), format!("{host}:{port}:{ip}")]);
        self
    }

    /// Connections leave from `source` (an address of the namespace).
    pub fn source(mut self, source: Ipv4Addr) -> Browser {
        self.common
            .extend(["--interface".into(), source.to_string()]);
        self
    }

    /// Every request gets this curl argument (`--http2`, `--http1.1`).
    pub fn arg(mut self, arg: &str) -> Browser {
        self.common.push(arg.to_owned());
        self
    }

    /// Every request carries this header (`Name: value`).
    pub fn header(mut self, header: &str) -> Browser {
        self.common.extend(["-H".into(), header.to_owned()]);
        self
    }

    /// `GET url`.
    pub fn get(&self, url: &str) -> Result<Response> {
        self.request(url, &[])
    }

    /// `POST url` of an `application/x-www-form-urlencoded` form.
    pub fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> Result<Response> {
        let mut args = Vec::new();
        for (name, value) in fields {
            args.push("--data-urlencode".to_owned());
            args.push(format!("{name}={value}"));
        }
        self.request(url, &args)
    }

    fn request(&self, url: &str, extra: &[String]) -> Result<Response> {
        let jar = self.jar.display().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "60"])
            .args(["-D", "-", "-b", &jar, "-c", &jar])
            .args(&self.common)
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {url}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_response(&String::from_utf8_lossy(&out.stdout)).with_context(|| format!("curl {url}"))
    }

    /// The value of cookie `name` in the jar, if the browser holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        let text = fs::read_to_string(&self.jar).ok()?;
        text.lines().find_map(|line| {
            // curl writes HttpOnly cookies as `#HttpOnly_<domain>...`; other `#` lines are
            // comments.
            let line = line.strip_prefix("#HttpOnly_").unwrap_or(line);
            if line.starts_with('#') {
                return None;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            (fields.len() == 7 && fields[5] == name).then(|| fields[6].to_owned())
        })
    }
}

fn parse_response(text: &str) -> Result<Response> {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no header block in {text:?}"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// The `action` of Keycloak's login form (`<form id="kc-form-login" ... action="...">`),
/// HTML entities decoded.
pub fn login_form_action(html: &str) -> Result<String> {
    let form = html
        .find("id=\"kc-form-login\"")
        .with_context(|| format!("no login form in the page:\n{html}"))?;
    let start = html[..form]
        .rfind("<form")
        .context("the login form has no <form tag")?;
    let tag_end = html[start..]
        .find('>')
        .map(|e| start + e)
        .context("unterminated <form tag")?;
    let tag = &html[start..tag_end];
    let at = tag
        .find("action=\"")
        .context("the login form has no action")?
        + "action=\"".len();
    let end = tag[at..].find('"').context("unterminated action")? + at;
    Ok(tag[at..end].replace("&amp;", "&"))
}

/// The value of query parameter `name` in `url` (percent-decoded).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The claims of a JWT (not verified: Keycloak issued it over TLS to this test).
pub fn jwt_claims(jwt: &str) -> Result<Value> {
    let payload = jwt.split('.').nth(1).context("not a JWT")?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).context("JWT payload")?;
    serde_json::from_slice(&bytes).context("JWT claims")
}

/// A public client's authorization-code login, step by step.
#[derive(Debug, Clone)]
pub struct CodeFlow<'a> {
    /// `https://host:port`, what the browser reaches Keycloak at.
    pub base: &'a str,
    pub realm: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// What a started flow holds between the login page and the form post.
#[derive(Debug, Clone)]
pub struct LoginPage {
    /// Where the form posts to.
    pub action: String,
    /// `AUTH_SESSION_ID` as Keycloak set it: `<id>.<route>`.
    pub auth_session_id: String,
}

impl LoginPage {
    /// The route suffix of `AUTH_SESSION_ID` (after the first dot), naming the node that owns
    /// the authentication session.
    pub fn route(&self) -> &str {
        self.auth_session_id
            .split_once('.')
            .map_or("", |(_, route)| route)
    }
}

impl CodeFlow<'_> {
    /// Step 1: the authorization request; Keycloak answers its login page and sets
    /// `AUTH_SESSION_ID`.
    pub fn open(&self, browser: &Browser, state: &str) -> Result<LoginPage> {
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/auth?client_id={}&response_type=code&\
             scope=openid&redirect_uri={}&state={state}",
            self.base,
            self.realm,
            self.client_id,
            form_encode(self.redirect_uri)
        );
        let page = browser.get(&url)?;
        if page.status != 200 {
            bail!(
                "authorization request answered {}: {}",
                page.status,
                page.body
            );
        }
        let action = login_form_action(&page.body)?;
        let auth_session_id = browser
            .cookie("AUTH_SESSION_ID")
            .context("Keycloak set no AUTH_SESSION_ID cookie with its login page")?;
        Ok(LoginPage {
            action,
            auth_session_id,
        })
    }

    /// Step 2: the form post with the password; Keycloak redirects to the client with a code.
    pub fn submit(&self, browser: &Browser, page: &LoginPage) -> Result<String> {
        let answer = browser.post_form(
            &page.action,
            &[
                ("username", self.user),
                ("password", self.password),
                ("credentialId", ""),
            ],
        )?;
        if answer.status != 302 {
            bail!(
                "login form post answered {}: {}",
                answer.status,
                answer.body
            );
        }
        let location = answer.location()?;
        if !location.starts_with(self.redirect_uri) {
            bail!(
                "login redirected to {location}, not to {}",
                self.redirect_uri
            );
        }
        query_param(location, "code").with_context(|| format!("no code in {location}"))
    }

    /// Step 3: the token exchange; returns the access token's `preferred_username`.
    pub fn exchange(&self, browser: &Browser, code: &str) -> Result<String> {
        let url = format!(
            "{}/realms/{}/protocol/openid-connect/token",
            self.base, self.realm
        );
        let answer = browser.post_form(
            &url,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", self.client_id),
                ("redirect_uri", self.redirect_uri),
                ("code", code),
            ],
        )?;
        let json: Value = serde_json::from_str(&answer.body)
            .with_context(|| format!("token answer {}: {}", answer.status, answer.body))?;
        let token = json["access_token"]
            .as_str()
            .with_context(|| format!("no token ({}): {}", answer.status, answer.body))?;
        jwt_claims(token)?["preferred_username"]
            .as_str()
            .map(str::to_owned)
            .context("the access token has no preferred_username")
    }
}

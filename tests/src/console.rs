//! The admin console over plain HTTP, for the console's HTTP tests: a client
//! that keeps the console's cookies (the session, the login form's CSRF
//! cookie) the way a browser does, never follows redirects (a test sees the
//! 303 and its `Location`), and puts the page's `_csrf` into the forms it
//! posts unless told not to.
//!
//! ```ignore
//! let mut console = Console::login(&gateway, "openidm-admin", "openidm-admin").await;
//! let page = console.get("/admin/managed/user").await.expect(200);
//! let fragment = console.fragment("/admin/managed/user").await.expect(200);
//! let saved = console.post("/admin/managed/user/new", &[("userName", "bjensen")]).await;
//! assert_eq!(saved.expect(303).location(), Some("/admin/managed/user/bjensen"));
//! let refused = console.post_without_csrf("/admin/managed/user/new", &[]).await.expect(403);
//! ```

use std::collections::BTreeMap;

use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::scim::{Gateway, self_signed_cert};

/// A console user agent: its cookies and the last `_csrf` it saw.
pub struct Console {
    client: reqwest::Client,
    /// `https://127.0.0.1:<port>`.
    pub origin: String,
    cookies: BTreeMap<String, String>,
    csrf: Option<String>,
}

/// An answer: status, headers, the body as text, and the `Set-Cookie`s.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|h| h.to_str().ok())
    }

    /// Every value of a header (`Set-Cookie` comes once per cookie).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .collect()
    }

    /// `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// Asserts the status, showing the page if it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{:?}\n{}", self.headers, self.body);
        self
    }

    /// Asserts the body contains `text` (as written in the HTML, escaped).
    #[track_caller]
    pub fn expect_text(self, text: &str) -> Self {
        assert!(
            self.body.contains(text),
            "no {text:?} in ({}):\n{}",
            self.status,
            self.body
        );
        self
    }

    pub fn contains(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// Whether this is a whole document (not an htmx fragment).
    pub fn is_document(&self) -> bool {
        self.body
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("<!doctype html")
    }

    /// The `value` of the first `<input>` named `name`, if any.
    pub fn input(&self, name: &str) -> Option<String> {
        let needle = format!("name=\"{name}\"");
        let mut from = 0;
        while let Some(at) = self.body[from..].find(&needle).map(|i| i + from) {
            let start = self.body[..at].rfind('<')?;
            let end = at + self.body[at..].find('>')?;
            let tag = &self.body[start..end];
            from = end;
            if !tag.starts_with("<input") {
                continue;
            }
            return Some(match tag.find("value=\"") {
                Some(v) => {
                    let value = &tag[v + 7..];
                    unescape(&value[..value.find('"').unwrap_or(value.len())])
                }
                None => String::new(),
            });
        }
        None
    }

    /// The page's CSRF token (`<input name="_csrf">`).
    pub fn csrf(&self) -> Option<String> {
        self.input("_csrf")
    }
}

/// The few entities askama writes.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Console {
    /// A user agent without a session, trusting the gateway's certificate.
    pub fn anonymous(gateway: &Gateway) -> Self {
        let builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls();
        let builder = match std::fs::read(self_signed_cert(&gateway.data)) {
            Ok(pem) => builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()),
            // --tls-cert or --no-tls: the test's own CA is not known here.
            Err(_) => builder.danger_accept_invalid_certs(true),
        };
        let origin = gateway
            .base
            .strip_suffix("/scim/v2")
            .unwrap_or(&gateway.base)
            .to_string();
        Console {
            client: builder.build().unwrap(),
            origin,
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    /// Signs in through the login form; panics unless it succeeds.
    pub async fn login(gateway: &Gateway, username: &str, password: &str) -> Self {
        let mut console = Self::anonymous(gateway);
        let answer = console.try_login(username, password).await;
        assert_eq!(
            answer.status, 303,
            "login as {username} failed:\n{}",
            answer.body
        );
        assert!(console.session().is_some(), "no session cookie: {answer:?}");
        // The CSRF token of the session's pages.
        console.get("/admin/").await.expect(200);
        console
    }

    /// Gets the login form and posts it: the answer (303 on success, the
    /// form again with its problem otherwise).
    pub async fn try_login(&mut self, username: &str, password: &str) -> Page {
        self.get("/admin/login").await.expect(200);
        self.post(
            "/admin/login",
            &[("username", username), ("password", password), ("next", "")],
        )
        .await
    }

    /// The session cookie's value, if any.
    pub fn session(&self) -> Option<&str> {
        self.cookies.get("idm_console").map(String::as_str)
    }

    /// The cookies this agent holds.
    pub fn cookies(&self) -> &BTreeMap<String, String> {
        &self.cookies
    }

    /// Forgets a cookie (or sets one: a stolen or forged session).
    pub fn set_cookie(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.cookies.insert(name.into(), value.into()),
            None => self.cookies.remove(name),
        };
    }

    /// The `_csrf` of the last page that had one.
    pub fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }

    /// A whole page.
    pub async fn get(&mut self, path: &str) -> Page {
        self.send(Method::GET, path, &[], None).await
    }

    /// The main block only, as htmx asks for it (`HX-Request`,
    /// `HX-Target: main`).
    pub async fn fragment(&mut self, path: &str) -> Page {
        self.send(
            Method::GET,
            path,
            &[("HX-Request", "true"), ("HX-Target", "main")],
            None,
        )
        .await
    }

    /// Posts a form with the page's `_csrf` added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &csrf)];
        all.extend_from_slice(fields);
        self.send(Method::POST, path, &[], Some(&all)).await
    }

    /// Posts a form as htmx does (boosted: `HX-Request`, `HX-Target: main`).
    pub async fn post_htmx(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", &csrf)];
        all.extend_from_slice(fields);
        self.send(
            Method::POST,
            path,
            &[("HX-Request", "true"), ("HX-Target", "main")],
            Some(&all),
        )
        .await
    }

    /// Posts exactly these fields (no `_csrf` unless given).
    pub async fn post_without_csrf(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(Method::POST, path, &[], Some(fields)).await
    }

    /// Follows a 303/302 answer's `Location` with a GET.
    pub async fn follow(&mut self, page: &Page) -> Page {
        let location = page
            .location()
            .unwrap_or_else(|| panic!("not a redirect: {page:?}"))
            .to_string();
        let path = location
            .strip_prefix(&self.origin)
            .unwrap_or(&location)
            .to_string();
        self.get(&path).await
    }

    /// Any request: `path` under the origin, extra headers, a form body.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Page {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.origin));
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(form) = form {
            let body = serde_urlencoded_pairs(form);
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        let page = Page {
            status,
            headers,
            body,
        };
        for set in page.headers_named("set-cookie") {
            self.take_cookie(set);
        }
        if let Some(csrf) = page.csrf() {
            self.csrf = Some(csrf);
        }
        page
    }

    fn take_cookie(&mut self, set: &str) {
        let mut parts = set.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let expired = parts.any(|p| {
            p.eq_ignore_ascii_case("max-age=0") || p.to_ascii_lowercase().starts_with("max-age=-")
        });
        if expired || value.is_empty() {
            self.cookies.remove(name);
        } else {
            self.cookies.insert(name.to_string(), value.to_string());
        }
    }
}

/// `application/x-www-form-urlencoded` of `pairs`, in order.
fn serde_urlencoded_pairs(pairs: &[(&str, &str)]) -> String {
    fn encode(text: &str) -> String {
        let mut out = String::new();
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    out.push(byte as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{byte:02X}")),
            }
        }
        out
    }
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(body: &str) -> Page {
        Page {
            status: 200,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    #[test]
    fn inputs_are_read_from_the_html() {
        let p = page(
            r#"<form><input type="hidden" name="_csrf" value="abc-_12">
               <textarea name="note">x</textarea><input name="note" value="a &amp; b"></form>"#,
        );
        assert_eq!(p.csrf().as_deref(), Some("abc-_12"));
        assert_eq!(p.input("note").as_deref(), Some("a & b"));
        assert_eq!(p.input("missing"), None);
    }

    #[test]
    fn forms_are_url_encoded_in_order() {
        assert_eq!(
            serde_urlencoded_pairs(&[("_csrf", "a/b"), ("q", "Jon Snow&co")]),
            "_csrf=a%2Fb&q=Jon+Snow%26co"
        );
    }
}

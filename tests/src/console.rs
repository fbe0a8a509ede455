//! A signed-in person's HTTP view of the web console: logs in through the
//! login form, keeps the session cookie, reads the form token out of the
//! pages, and never follows redirects (tests look at them).

use std::sync::Mutex;

use reqwest::header::{self, HeaderMap};
use reqwest::redirect::Policy;

use crate::scim::{Gateway, self_signed_cert};

/// A page as the browser would get it.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    async fn of(response: reqwest::Response) -> Page {
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Location` of a redirect.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// Asserts the status, showing the page when it differs.
    pub fn expect(self, status: u16) -> Page {
        assert_eq!(
            self.status, status,
            "unexpected status; page:\n{}",
            self.body
        );
        self
    }

    /// Asserts a 303 to `location` (a prefix of it).
    pub fn expect_redirect(self, location: &str) -> Page {
        assert_eq!(
            self.status, 303,
            "expected a redirect; page:\n{}",
            self.body
        );
        let to = self.location().unwrap_or_default();
        assert!(
            to.starts_with(location),
            "redirected to {to}, not {location}"
        );
        self
    }

    pub fn contains(&self, text: &str) -> bool {
        self.body.contains(text)
    }

    /// Asserts the page shows `text` (HTML as served: `&` is `&amp;`).
    pub fn shows(self, text: &str) -> Page {
        assert!(
            self.contains(text),
            "the page lacks {text:?}:\n{}",
            self.body
        );
        self
    }

    /// The value of the first hidden `_csrf` field.
    pub fn csrf(&self) -> Option<String> {
        input_value(&self.body, "_csrf")
    }

    /// Whether this is the whole document (not an htmx fragment).
    pub fn is_whole_page(&self) -> bool {
        self.body.trim_start().starts_with("<!doctype html>")
    }

    /// The `Set-Cookie` headers.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }
}

/// The `value` of `<input … name="{name}" value="…">` in `html`.
pub fn input_value(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\""))?;
    let rest = &html[at..];
    let start = rest.find("value=\"")? + "value=\"".len();
    let end = rest[start..].find('"')?;
    Some(rest[start..start + end].to_string())
}

/// A cookie's value from a `Set-Cookie` list.
pub fn cookie_value(set_cookies: &[String], name: &str) -> Option<String> {
    set_cookies.iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.to_string())
    })
}

pub struct Console {
    origin: String,
    client: reqwest::Client,
    /// The session cookie's value; empty before login and after logout.
    session: Mutex<String>,
    /// The session's form token, read from the first page after login.
    csrf: Mutex<String>,
}

impl Console {
    /// Not signed in yet.
    pub fn new(gateway: &Gateway) -> Console {
        let pem = std::fs::read(self_signed_cert(&gateway.data)).unwrap();
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .redirect(Policy::none())
            .build()
            .unwrap();
        Console {
            origin: format!("https://127.0.0.1:{}", gateway.port),
            client,
            session: Mutex::new(String::new()),
            csrf: Mutex::new(String::new()),
        }
    }

    /// Signed in as `username` through the login form; panics if refused.
    pub async fn login(gateway: &Gateway, username: &str, password: &str) -> Console {
        let console = Console::new(gateway);
        let page = console.try_login(username, password).await;
        page.expect_redirect("/admin/");
        console
    }

    /// Posts the login form as a browser would (its CSRF cookie and field);
    /// on success the session is kept.
    pub async fn try_login(&self, username: &str, password: &str) -> Page {
        let form = self.get("/admin/login").await.expect(200);
        let pair = cookie_value(&form.set_cookies(), "idm_console_login").unwrap();
        let csrf = form.csrf().unwrap();
        let response = self
            .client
            .post(self.url("/admin/login"))
            .header(header::COOKIE, format!("idm_console_login={pair}"))
            .form(&[
                ("_csrf", csrf.as_str()),
                ("username", username),
                ("password", password),
                ("next", ""),
            ])
            .send()
            .await
            .unwrap();
        let page = Page::of(response).await;
        if let Some(session) = cookie_value(&page.set_cookies(), "idm_console") {
            *self.session.lock().unwrap() = session;
            let dashboard = self.get("/admin/").await;
            *self.csrf.lock().unwrap() = dashboard.csrf().unwrap_or_default();
        }
        page
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The session cookie's value (the core's session token).
    pub fn session(&self) -> String {
        self.session.lock().unwrap().clone()
    }

    /// The form token of this session.
    pub fn csrf(&self) -> String {
        self.csrf.lock().unwrap().clone()
    }

    fn with_session(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let session = self.session();
        if session.is_empty() {
            request
        } else {
            request.header(header::COOKIE, format!("idm_console={session}"))
        }
    }

    /// The whole page, as a browser without JavaScript gets it.
    pub async fn get(&self, path: &str) -> Page {
        let request = self.with_session(self.client.get(self.url(path)));
        Page::of(request.send().await.unwrap()).await
    }

    /// The main block alone, as htmx asks for it.
    pub async fn get_fragment(&self, path: &str) -> Page {
        let request = self
            .with_session(self.client.get(self.url(path)))
            .header("hx-request", "true")
            .header("hx-target", "main");
        Page::of(request.send().await.unwrap()).await
    }

    /// Posts a form with this session's `_csrf` added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_exactly(path, &all).await
    }

    /// Posts exactly these fields (no `_csrf` unless given).
    pub async fn post_exactly(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self
            .with_session(self.client.post(self.url(path)))
            .form(fields);
        Page::of(request.send().await.unwrap()).await
    }

    /// Posts a form as htmx does (`HX-Request`, `HX-Target: main`).
    pub async fn post_fragment(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.csrf();
        let mut all: Vec<(&str, &str)> = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let request = self
            .with_session(self.client.post(self.url(path)))
            .header("hx-request", "true")
            .header("hx-target", "main")
            .form(&all);
        Page::of(request.send().await.unwrap()).await
    }

    /// Signs out through the console's form; the cookie is forgotten.
    pub async fn logout(&self) -> Page {
        let page = self.post("/admin/logout", &[]).await;
        *self.session.lock().unwrap() = String::new();
        page
    }
}

impl Console {
    /// Uses `token` as the session cookie (to replay an ended session).
    pub fn set_session(&self, token: &str) {
        *self.session.lock().unwrap() = token.to_string();
    }
}

/// A running idmd and gateway, with the console signed in as
/// `openidm-admin`.
pub struct Running {
    pub idmd: crate::Idmd,
    pub gateway: Gateway,
    pub admin: Console,
    /// The conf directory idmd reads (kept until the test ends).
    pub conf: Option<crate::TempDir>,
}

/// An idmd (with `options`, and `openidm-admin`'s password
/// [`ADMIN_PASSWORD`](crate::rest::ADMIN_PASSWORD)), a gateway in front of
/// it, and the console signed in as `openidm-admin`.
pub async fn start_with(mut options: crate::IdmdOptions, conf: Option<crate::TempDir>) -> Running {
    options.env.push((
        "IDM_ADMIN_PASSWORD".into(),
        crate::rest::ADMIN_PASSWORD.into(),
    ));
    if let Some(conf) = &conf {
        options.conf = Some(conf.path().to_path_buf());
    }
    let idmd = crate::Idmd::start_with(options).await;
    let gateway = Gateway::start(&idmd).await;
    let admin = Console::login(&gateway, crate::rest::ADMIN, crate::rest::ADMIN_PASSWORD).await;
    Running {
        idmd,
        gateway,
        admin,
        conf,
    }
}

/// [`start_with`] on the `idm-sync` fixture (`tests/fixtures/idm-sync`: a
/// CSV → user mapping, user and group types).
pub async fn start() -> Running {
    start_with(crate::IdmdOptions::default(), Some(crate::idm_conf("sync"))).await
}

/// The password [`Running::signed_in_as`] gives the accounts it makes.
pub const ACCOUNT_PASSWORD: &str = "Console-Pass-1";

impl Running {
    /// Creates the account `name` with `role` (`read`, `scim`, `admin`) and
    /// [`ACCOUNT_PASSWORD`], and signs it in to the console.
    pub async fn signed_in_as(&self, name: &str, role: &str) -> Console {
        let created = self.idmd.idmctl_with(
            &self.idmd.admin_token,
            &["accounts", "create", name, "--role", role],
            Some(&format!("{ACCOUNT_PASSWORD}\n")),
        );
        assert!(
            created.status.success(),
            "idmctl accounts create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Console::login(&self.gateway, name, ACCOUNT_PASSWORD).await
    }
}

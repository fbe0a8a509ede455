//! Wren's REST API (`/openidm`) of a test gateway: an idmd whose
//! `openidm-admin` has [`ADMIN_PASSWORD`], a gateway in front of it, and
//! requests with each of Wren's ways to authenticate.

use reqwest::Method;
use serde_json::Value;

use crate::scim::{Gateway, Reply};
use crate::{Idmd, IdmdOptions};

/// The password of `openidm-admin` (`IDM_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "Openidm-Admin-1";
pub const ADMIN: &str = "openidm-admin";

/// How a request authenticates.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// `Authorization: Basic`.
    Basic(&'a str, &'a str),
    /// `X-OpenIDM-Username` + `X-OpenIDM-Password`, as given (encode them
    /// yourself for RFC 5987).
    Headers(&'a str, &'a str),
    /// `Authorization: Bearer`.
    Bearer(&'a str),
    None,
}

/// The admin by HTTP Basic.
pub const AS_ADMIN: Auth<'static> = Auth::Basic(ADMIN, ADMIN_PASSWORD);

/// An idmd with `IDM_ADMIN_PASSWORD` (and `options`' other settings) and a
/// gateway in front of it.
pub async fn start_with(mut options: IdmdOptions) -> (Idmd, Rest) {
    options
        .env
        .push(("IDM_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let idmd = Idmd::start_with(options).await;
    let gateway = Gateway::start(&idmd).await;
    (idmd, Rest::new(gateway))
}

pub async fn start() -> (Idmd, Rest) {
    start_with(IdmdOptions::default()).await
}

/// A gateway seen through `/openidm`.
pub struct Rest {
    pub gateway: Gateway,
    /// `https://127.0.0.1:<port>/openidm`.
    pub base: String,
}

impl Rest {
    pub fn new(gateway: Gateway) -> Self {
        let base = gateway.base.replace("/scim/v2", "/openidm");
        Rest { gateway, base }
    }

    /// Sends a request; `path` is relative to `/openidm` (`/managed/user`).
    pub async fn send(
        &self,
        auth: Auth<'_>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .gateway
            .client()
            .request(method, format!("{}{path}", self.base));
        request = match auth {
            Auth::Basic(name, password) => request.basic_auth(name, Some(password)),
            Auth::Headers(name, password) => request
                .header("X-OpenIDM-Username", name)
                .header("X-OpenIDM-Password", password),
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::None => request,
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::of(request.send().await.unwrap()).await
    }

    /// As the admin, by Basic.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(AS_ADMIN, "GET", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(AS_ADMIN, "POST", path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.send(AS_ADMIN, "PUT", path, Some(body), headers).await
    }
    pub async fn patch(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        self.send(AS_ADMIN, "PATCH", path, Some(body), headers)
            .await
    }
    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(AS_ADMIN, "DELETE", path, None, headers).await
    }
}

impl Reply {
    /// Asserts Wren's error body with this code.
    #[track_caller]
    pub fn expect_wren_error(self, code: u16) -> Self {
        assert_eq!(self.status, code, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert!(self.body["reason"].is_string(), "{}", self.body);
        assert!(self.body["message"].is_string(), "{}", self.body);
        self
    }
}

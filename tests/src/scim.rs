//! A real `idm-gateway` process in front of a test's idmd, and a small
//! HTTP(S) client for it that trusts only the certificate the gateway serves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use crate::{Idmd, binary, free_port};

/// How the gateway serves, and so what its client trusts.
#[derive(Clone, Default)]
pub enum GatewayTls {
    /// HTTPS with the self-signed certificate it makes (and keeps) under its
    /// data directory; the client trusts exactly that certificate.
    #[default]
    SelfSigned,
    /// HTTPS with `--tls-cert`/`--tls-key`; the client trusts only `ca_pem`.
    Own {
        cert: PathBuf,
        key: PathBuf,
        ca_pem: String,
    },
    /// `--no-tls`: plain HTTP.
    Plain,
}

/// How to start a gateway.
#[derive(Clone, Default)]
pub struct GatewayOptions {
    pub tls: GatewayTls,
    /// `--data`; default: a fresh directory under the idmd's.
    pub data: Option<PathBuf>,
    /// `--core`; default: the idmd's endpoint.
    pub core: Option<String>,
    pub args: Vec<String>,
    /// Extra environment (`RUST_LOG`, …) for this gateway only.
    pub env: Vec<(String, String)>,
}

/// A running idm-gateway; killed on drop.
pub struct Gateway {
    child: Child,
    /// `https://127.0.0.1:<port>/scim/v2` (`http://` with `--no-tls`).
    pub base: String,
    /// The token requests carry unless told otherwise (idmd's admin token).
    pub token: String,
    pub log_path: PathBuf,
    /// `--data`: the self-signed certificate is in `tls/cert.pem`.
    pub data: PathBuf,
    pub port: u16,
    client: reqwest::Client,
}

/// Where a gateway with `--data dir` keeps its self-signed certificate.
pub fn self_signed_cert(data: &Path) -> PathBuf {
    data.join("tls").join("cert.pem")
}

/// A client that trusts only `pem` (no system roots).
pub fn client_trusting(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
        .build()
        .unwrap()
}

/// A response: status, headers and the JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// A response read whole; its body must be JSON or empty (`Null`).
    pub async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|h| h.to_str().ok())
    }

    /// The `scimType` of an error body.
    pub fn scim_type(&self) -> Option<&str> {
        self.body.get("scimType").and_then(Value::as_str)
    }

    /// Asserts the status, showing the body if it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    /// Asserts a SCIM error with this status and scimType.
    #[track_caller]
    pub fn expect_error(self, status: u16, scim_type: Option<&str>) -> Self {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status.to_string());
        assert_eq!(self.scim_type(), scim_type, "{}", self.body);
        self
    }
}

impl Gateway {
    pub async fn start(idmd: &Idmd) -> Self {
        Self::start_with(idmd, &[]).await
    }

    /// HTTPS with the self-signed certificate, and extra arguments.
    pub async fn start_with(idmd: &Idmd, args: &[&str]) -> Self {
        Self::start_opts(
            idmd,
            GatewayOptions {
                args: args.iter().map(|a| a.to_string()).collect(),
                ..GatewayOptions::default()
            },
        )
        .await
    }

    pub async fn start_opts(idmd: &Idmd, options: GatewayOptions) -> Self {
        let port = free_port();
        let log_path = idmd.dir.path().join(format!("idm-gateway-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let data = options
            .data
            .clone()
            .unwrap_or_else(|| idmd.dir.path().join(format!("gateway-{port}")));
        let mut command = Command::new(binary("idm-gateway"));
        command
            .arg("--core")
            .arg(options.core.as_deref().unwrap_or(&idmd.endpoint))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&data);
        let scheme = match &options.tls {
            GatewayTls::SelfSigned => "https",
            GatewayTls::Own { cert, key, .. } => {
                command
                    .arg("--tls-cert")
                    .arg(cert)
                    .arg("--tls-key")
                    .arg(key);
                "https"
            }
            GatewayTls::Plain => {
                command.arg("--no-tls");
                "http"
            }
        };
        let child = command
            .args(&options.args)
            .env("RUST_LOG", "info,idm_gateway=debug")
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            child,
            base: format!("{scheme}://127.0.0.1:{port}/scim/v2"),
            token: idmd.admin_token.clone(),
            log_path,
            data,
            port,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("idm-gateway exited ({status}):\n{}", gateway.log());
            }
            // The self-signed certificate appears once the gateway made it;
            // read it again each time until the gateway answers with it.
            let client = match &options.tls {
                GatewayTls::SelfSigned => std::fs::read(self_signed_cert(&gateway.data))
                    .ok()
                    .map(|pem| client_trusting(&pem)),
                GatewayTls::Own { ca_pem, .. } => Some(client_trusting(ca_pem.as_bytes())),
                GatewayTls::Plain => Some(reqwest::Client::new()),
            };
            if let Some(client) = client {
                let probe = client
                    .get(format!("{}/ServiceProviderConfig", gateway.base))
                    .send()
                    .await;
                if probe.is_ok_and(|r| r.status() == 200) {
                    gateway.client = client;
                    return gateway;
                }
            }
            assert!(
                Instant::now() < deadline,
                "idm-gateway did not start:\n{}",
                gateway.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client the harness uses: it trusts only the gateway's certificate.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request with the gateway's token, a JSON body if given, and
    /// extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.send_as(Some(&self.token), method, path, body, headers)
            .await
    }

    pub async fn send_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::of(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send("PUT", path, Some(body), &[]).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send("PATCH", path, Some(body), &[]).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send("DELETE", path, None, &[]).await
    }

    /// A raw request with any body bytes and content type.
    pub async fn raw(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Gateway {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

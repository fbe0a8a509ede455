//! The audit trail of admin actions and password checks: a tower layer around
//! the gRPC services records, once each listed call has its answer, who made
//! it (the token the interceptor accepted), what it was (`ACTIONS`), on what
//! (the target the handler names with [`target`]) and how it ended (`success`,
//! a password check's `valid` / `invalid`, or the status code of a failure:
//! `PERMISSION_DENIED`, `INVALID_ARGUMENT` …). A call without a valid token is
//! not recorded: its caller is unknown; but a login (which needs none) is,
//! with the name tried as its actor. Entries name things, never values.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tonic::Request;
use tonic::codegen::{Service, http};

use idm_proto::code_name;

use crate::store::{ActionRecord, Store};

/// The audited RPCs and the action each is recorded as.
const ACTIONS: &[(&str, &str)] = &[
    ("/idm.v1.TokenService/CreateToken", "token.create"),
    ("/idm.v1.TokenService/RevokeToken", "token.revoke"),
    ("/idm.v1.ConfigService/PutConnector", "connector.put"),
    ("/idm.v1.ConfigService/DeleteConnector", "connector.delete"),
    ("/idm.v1.ConfigService/PutMapping", "mapping.put"),
    ("/idm.v1.ConfigService/DeleteMapping", "mapping.delete"),
    ("/idm.v1.ScheduleService/CreateSchedule", "schedule.create"),
    ("/idm.v1.ScheduleService/UpdateSchedule", "schedule.update"),
    ("/idm.v1.ScheduleService/DeleteSchedule", "schedule.delete"),
    ("/idm.v1.ScheduleService/PauseSchedule", "schedule.pause"),
    ("/idm.v1.ScheduleService/ResumeSchedule", "schedule.resume"),
    ("/idm.v1.ScheduleService/RunSchedule", "schedule.run"),
    ("/idm.v1.ReconService/StartRecon", "recon.start"),
    ("/idm.v1.ReconService/ReconById", "recon.start"),
    ("/idm.v1.ReconService/CancelRecon", "recon.cancel"),
    ("/idm.v1.SyncService/RetrySyncEntries", "sync.retry"),
    ("/idm.v1.SyncService/DiscardSyncEntries", "sync.discard"),
    ("/idm.v1.ObjectService/VerifyPassword", "password.verify"),
    ("/idm.v1.KeyService/RotateKey", "key.rotate"),
    ("/idm.v1.SystemService/Backup", "system.backup"),
    // Logins are recorded whatever their outcome, actor the name tried.
    ("/idm.v1.AuthService/Login", "auth.login"),
    ("/idm.v1.AuthService/Logout", "auth.logout"),
    ("/idm.v1.AccountService/CreateAccount", "account.create"),
    (
        "/idm.v1.AccountService/SetAccountPassword",
        "account.set-password",
    ),
    // `account.disable` when the handler says so (`action`).
    ("/idm.v1.AccountService/SetAccountEnabled", "account.enable"),
    ("/idm.v1.AccountService/SetAccountRole", "account.set-role"),
    ("/idm.v1.AccountService/DeleteAccount", "account.delete"),
];

/// What one audited call learns as it runs: shared by the layer, the
/// interceptor (the actor) and the handler (target, outcome, detail).
#[derive(Clone, Default)]
pub struct Note(Arc<Mutex<Noted>>);

#[derive(Default)]
struct Noted {
    actor: Option<String>,
    /// Replaces the listed action (one RPC, two actions: enable / disable).
    action: Option<&'static str>,
    target: String,
    outcome: Option<String>,
    detail: Option<String>,
}

impl Note {
    fn update(&self, change: impl FnOnce(&mut Noted)) {
        if let Ok(mut noted) = self.0.lock() {
            change(&mut noted);
        }
    }
}

fn note_of<T>(request: &Request<T>) -> Option<&Note> {
    request.extensions().get::<Note>()
}

/// Names what an audited call acts on (`tokens/<id>`, `connectors/<name>`).
/// Call it before anything can fail, so refusals name it too.
pub fn target<T>(request: &Request<T>, target: &str) {
    if let Some(note) = note_of(request) {
        let target = truncate(target, 512);
        note.update(|n| n.target = target);
    }
}

/// [`target`] as `<prefix><name>` whether `name` came with the prefix or not.
pub fn target_named<T>(request: &Request<T>, prefix: &str, name: &str) {
    target(
        request,
        &format!("{prefix}{}", name.strip_prefix(prefix).unwrap_or(name)),
    );
}

/// Records the call as `action` instead of the one `ACTIONS` lists.
pub fn action<T>(request: &Request<T>, action: &'static str) {
    if let Some(note) = note_of(request) {
        note.update(|n| n.action = Some(action));
    }
}

/// Replaces `success` for a call that answered: a password check's verdict.
pub fn outcome<T>(request: &Request<T>, outcome: &str) {
    if let Some(note) = note_of(request) {
        note.update(|n| n.outcome = Some(outcome.to_string()));
    }
}

/// A note on the action, never a secret: a token's scope, a document's field names.
pub fn detail<T>(request: &Request<T>, detail: &str) {
    if let Some(note) = note_of(request) {
        let detail = truncate(detail, 1024);
        note.update(|n| n.detail = Some(detail));
    }
}

/// The interceptor's half: who is calling.
pub(super) fn actor(extensions: &tonic::Extensions, actor: &str) {
    if let Some(note) = extensions.get::<Note>() {
        note.update(|n| n.actor = Some(actor.to_string()));
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Records an admin action in the audit trail; a failure to record is logged,
/// not the caller's problem (the action has happened).
pub async fn record(store: &Store, action: ActionRecord<'_>) {
    if let Err(e) = store.record_action(&action).await {
        tracing::error!(error = %e, action = action.action, target = action.target,
            "the audit entry of an admin action was not written");
    }
}

/// The layer: wraps every service; only `ACTIONS` are recorded.
#[derive(Clone)]
pub struct AuditLayer {
    pub store: Store,
}

impl<S> tower_layer::Layer<S> for AuditLayer {
    type Service = Audited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audited {
            inner,
            store: self.store.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audited<S> {
    inner: S,
    store: Store,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

impl<S, B, R> Service<http::Request<B>> for Audited<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let action = ACTIONS
            .iter()
            .find(|(path, _)| *path == request.uri().path())
            .map(|(_, action)| *action);
        let Some(action) = action else {
            return Box::pin(self.inner.call(request));
        };
        let note = Note::default();
        request.extensions_mut().insert(note.clone());
        let answer = self.inner.call(request);
        let store = self.store.clone();
        Box::pin(async move {
            let response = answer.await?;
            // A failure answers "trailers only": its status is in the headers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from_i32);
            let noted = match note.0.lock() {
                Ok(mut noted) => std::mem::take(&mut *noted),
                Err(_) => return Ok(response),
            };
            let Some(actor) = noted.actor else {
                return Ok(response);
            };
            let outcome = match code {
                tonic::Code::Ok => noted.outcome.unwrap_or_else(|| "success".into()),
                failed => code_name(failed).to_string(),
            };
            record(
                &store,
                ActionRecord {
                    actor: &actor,
                    action: noted.action.unwrap_or(action),
                    target: &noted.target,
                    outcome: &outcome,
                    detail: noted.detail.as_deref(),
                },
            )
            .await;
            Ok(response)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_audited_path_names_a_method_once() {
        for (i, (path, action)) in ACTIONS.iter().enumerate() {
            assert!(path.starts_with("/idm.v1.") && path.contains("Service/"));
            assert!(action.contains('.'));
            assert!(ACTIONS[i + 1..].iter().all(|(p, _)| p != path));
        }
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(
            idm_proto::FILE_DESCRIPTOR_SET,
        )
        .unwrap();
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|file| {
                file.service.iter().flat_map(move |service| {
                    service.method.iter().map(move |method| {
                        format!("/{}.{}/{}", file.package(), service.name(), method.name())
                    })
                })
            })
            .collect();
        for (path, _) in ACTIONS {
            assert!(methods.iter().any(|m| m == path), "{path} is not an RPC");
        }
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

//! `idm.v1.SystemService`: objects of external systems read through their
//! connectors, as Wren's `/openidm/system/<connector>/<type>` shows them.
//! Read-only, admin scope; password attributes and the connector's own
//! configuration never leave.

use futures::StreamExt;
use idm_proto::json::to_proto_struct;
use idm_proto::v1::system_service_server::SystemService;
use idm_proto::v1::{
    BackupChunk, BackupRequest, GetSystemObjectRequest, QuerySystemObjectsRequest,
    QuerySystemObjectsResponse, Scope, SystemObject,
};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::paging::Page;
use super::trail;
use crate::backup::{self, BackupError};
use crate::connector::{self, Connector, ConnectorError, ConnectorObject, SourceItem};
use crate::managed::ManagedObjects;
use crate::store::Store;
use idm_proto::filter_match;

pub struct SystemApi {
    pub store: Store,
    /// The secrets that open sealed connector credentials.
    pub objects: ManagedObjects,
    /// Relative paths in connector documents start here.
    pub conf_dir: PathBuf,
}

fn shown(connector: &str, object_type: &str, object: ConnectorObject) -> SystemObject {
    let attributes: Map<String, Value> = object
        .attributes
        .into_iter()
        .filter(|(key, _)| !connector::is_password_attribute(key))
        .collect();
    SystemObject {
        name: format!("system/{connector}/{object_type}/{}", object.uid),
        id: object.uid,
        attributes: Some(to_proto_struct(&attributes)),
    }
}

/// A connector error as a status; its message names the connector and the
/// object, never a secret (`connector::build` scrubs them).
pub(super) fn status_of(error: ConnectorError) -> Status {
    let message = error.to_string();
    match error {
        ConnectorError::UnknownObjectType { .. } | ConnectorError::NotFound { .. } => {
            Status::not_found(message)
        }
        ConnectorError::Config { .. } | ConnectorError::Rejected { .. } => {
            Status::failed_precondition(message)
        }
        ConnectorError::Unsupported { .. } => Status::unimplemented(message),
        ConnectorError::Timeout { .. } => Status::deadline_exceeded(message),
        ConnectorError::Unavailable { .. } | ConnectorError::Io { .. } => {
            Status::unavailable(message)
        }
        ConnectorError::AlreadyExists { .. } => Status::already_exists(message),
    }
}

fn plain_name<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.is_empty() || value.contains('/') || value.len() > 256 {
        return Err(Status::invalid_argument(format!(
            "{field}: a name without '/' is required"
        )));
    }
    Ok(value)
}

/// The connector named, built from its stored document, and offering `object_type`.
pub(super) async fn open_connector(
    store: &Store,
    objects: &ManagedObjects,
    conf_dir: &Path,
    name: &str,
    object_type: &str,
) -> Result<Arc<dyn Connector>, Status> {
    let name = plain_name("connector", name)?;
    let object_type = plain_name("object_type", object_type)?;
    let document = store
        .get_config("connector", name)
        .await?
        .ok_or_else(|| Status::not_found(format!("connector \"{name}\" not found")))?;
    let built =
        connector::build(name, &document.body, conf_dir, objects.secrets()).map_err(status_of)?;
    if !built.object_types().iter().any(|t| t.name == object_type) {
        return Err(status_of(ConnectorError::UnknownObjectType {
            connector: name.to_string(),
            object_type: object_type.to_string(),
        }));
    }
    Ok(built)
}

impl SystemApi {
    async fn open(&self, name: &str, object_type: &str) -> Result<Arc<dyn Connector>, Status> {
        open_connector(
            &self.store,
            &self.objects,
            &self.conf_dir,
            name,
            object_type,
        )
        .await
    }
}

/// The chunks of a backup as gRPC messages.
pub type BackupChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<BackupChunk, Status>> + Send>>;

fn backup_status(error: BackupError) -> Status {
    match error {
        BackupError::Store(e) => Status::from(e),
        refused @ (BackupError::Rotating { .. } | BackupError::NoKey | BackupError::OnServer) => {
            Status::failed_precondition(refused.to_string())
        }
    }
}

#[tonic::async_trait]
impl SystemService for SystemApi {
    type BackupStream = BackupChunks;

    /// The store in idm's backup file, streamed (see `crate::backup`).
    #[tracing::instrument(skip_all)]
    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        trail::target(&request, "store");
        caller(&request)?.require(Scope::Admin)?;
        let outgoing = backup::start(&self.store).await.map_err(backup_status)?;
        trail::detail(
            &request,
            &format!(
                "schema {}, key {}",
                outgoing.header.schema_version, outgoing.header.key_fingerprint
            ),
        );
        let chunks = tokio_stream::wrappers::ReceiverStream::new(outgoing.chunks).map(|chunk| {
            chunk
                .map(|data| BackupChunk { data })
                .map_err(backup_status)
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    #[tracing::instrument(skip_all, fields(connector = %request.get_ref().connector))]
    async fn get_system_object(
        &self,
        request: Request<GetSystemObjectRequest>,
    ) -> Result<Response<SystemObject>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let request = request.into_inner();
        let built = self.open(&request.connector, &request.object_type).await?;
        let object = format!(
            "system/{}/{}/{}",
            request.connector, request.object_type, request.id
        );
        let found = connector::time_limited(
            &request.connector,
            &object,
            connector::DEFAULT_CALL_TIMEOUT,
            built.get(&request.object_type, &request.id),
        )
        .await
        .map_err(status_of)?
        .ok_or_else(|| Status::not_found(format!("{object} not found")))?;
        Ok(Response::new(shown(
            &request.connector,
            &request.object_type,
            found,
        )))
    }

    #[tracing::instrument(skip_all, fields(connector = %request.get_ref().connector))]
    async fn query_system_objects(
        &self,
        request: Request<QuerySystemObjectsRequest>,
    ) -> Result<Response<QuerySystemObjectsResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let request = request.into_inner();
        let filter = if request.filter.trim().is_empty() {
            None
        } else {
            Some(
                idm_proto::filter::parse(&request.filter)
                    .map_err(|e| Status::invalid_argument(format!("filter: {e}")))?,
            )
        };
        let page = Page::of(
            request.page_size,
            &request.page_token,
            &[
                "system",
                &request.connector,
                &request.object_type,
                &request.filter,
            ],
        )?;
        let built = self.open(&request.connector, &request.object_type).await?;
        let object_type = request.object_type.as_str();
        let what = format!("system/{}/{object_type}", request.connector);
        let read = async {
            // The system searches when it can; otherwise every object is
            // read and the filter applied here.
            let mut in_memory = false;
            let mut items = match &filter {
                None => built.query(object_type),
                Some(f) => {
                    let mut searched = built.search(object_type, f).peekable();
                    let unsupported = matches!(
                        std::pin::Pin::new(&mut searched).peek().await,
                        Some(Err(ConnectorError::Unsupported { .. }))
                    );
                    if unsupported {
                        in_memory = true;
                        built.query(object_type)
                    } else {
                        searched.boxed()
                    }
                }
            };
            let mut matched = 0usize;
            let mut page_items = Vec::new();
            while let Some(item) = items.next().await {
                // A source's bad record is no object: left out, as a recon reports it.
                let SourceItem::Object(object) = item? else {
                    continue;
                };
                if in_memory
                    && !filter.as_ref().is_some_and(|f| {
                        filter_match::matches(f, &object.attributes, Some(&object.uid))
                    })
                {
                    continue;
                }
                matched += 1;
                if matched <= page.offset {
                    continue;
                }
                page_items.push(object);
                if page_items.len() > page.limit {
                    break;
                }
            }
            Ok::<_, ConnectorError>(page_items)
        };
        let mut found = connector::time_limited(
            &request.connector,
            &what,
            connector::DEFAULT_CALL_TIMEOUT,
            read,
        )
        .await
        .map_err(status_of)?;
        let next_page_token = page.trim(&mut found);
        let objects = found
            .into_iter()
            .map(|o| shown(&request.connector, object_type, o))
            .collect();
        Ok(Response::new(QuerySystemObjectsResponse {
            objects,
            next_page_token,
        }))
    }
}

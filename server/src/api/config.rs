//! `idm.v1.ConfigService`: connectors and mappings as stored documents. Their
//! engines arrive with the reconciliation and LDAP work; here they are kept,
//! listed and replaced. A connector is stored in idm's shape only; Wren's
//! provisioner shape is translated to it on a write and back on a read.

use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::config_service_server::ConfigService;
use idm_proto::v1::{
    Connector, ConnectorView, DeleteConnectorRequest, DeleteConnectorResponse,
    DeleteMappingRequest, DeleteMappingResponse, GetConnectorRequest, GetMappingRequest,
    ListConnectorsRequest, ListConnectorsResponse, ListMappingsRequest, ListMappingsResponse,
    Mapping, PutConnectorRequest, PutMappingRequest, Scope, TestConnectorRequest,
    TestConnectorResponse,
};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::short_name;
use super::trail;
use crate::config::{self, ApiDocumentPolicy};
use crate::connector;
use crate::managed::ManagedObjects;
use crate::store::{ConfigDocument, Store};
use crate::sync::Mapping as SyncMapping;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::sync::outbox::ImplicitSync;
use tonic_types::StatusExt;

pub struct ConfigApi {
    pub store: Store,
    /// For schema checks of mappings (managed types must be declared).
    pub objects: ManagedObjects,
    /// Script files in mappings are relative to it.
    pub conf_dir: PathBuf,
    /// Told when mappings or connectors change, so writes feed the right outboxes.
    pub implicit: Arc<ImplicitSync>,
    /// What documents sent here may refer to (`$env` names, file paths).
    pub policy: Arc<ApiDocumentPolicy>,
}

/// As a read shows it: secrets and `$env` defaults redacted (see `config::redact`).
fn connector(doc: ConfigDocument) -> Connector {
    let body = config::redact("connector", &doc.body);
    Connector {
        name: format!("connectors/{}", doc.name),
        connector_type: body
            .get("connectorType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        configuration: Some(to_proto_struct(&body)),
    }
}

/// A connector as a read shows it, in Wren's provisioner shape.
fn provisioner(doc: ConfigDocument) -> Result<Connector, Status> {
    let mut shown = connector(doc);
    let name = shown
        .name
        .strip_prefix("connectors/")
        .unwrap_or(&shown.name);
    let body = shown
        .configuration
        .as_ref()
        .map(from_proto_struct)
        .unwrap_or_default();
    let icf = config::provisioner_of(name, &body)
        .map_err(|e| Status::unimplemented(format!("connector \"{name}\": {e}")))?;
    shown.configuration = Some(to_proto_struct(&icf));
    Ok(shown)
}

/// Whether a configuration is in Wren's provisioner shape.
fn is_provisioner(configuration: &Map<String, Value>) -> bool {
    configuration.contains_key("connectorRef")
}

/// Wren's provisioner document as idm's connector document, translated as
/// idmd reads a `provisioner.openicf-<name>.json`; the settings idm does not
/// act on are logged.
fn from_provisioner(
    name: &str,
    connector_type: &str,
    icf: &Map<String, Value>,
) -> Result<Map<String, Value>, Status> {
    let document = format!("provisioner.openicf/{name}");
    let translated = config::translate_provisioner(Path::new(&document), name, icf)
        .map_err(|e| match e {
            config::ConfError::Invalid { field, message, .. } => invalid_field(field, message),
            other => Status::invalid_argument(other.to_string()),
        })?
        .ok_or_else(|| {
            invalid_field(
                "enabled".into(),
                "false: idm keeps no disabled connector; delete it instead".into(),
            )
        })?;
    if translated.name != name {
        return Err(invalid_field(
            "name".into(),
            format!(
                "\"{}\" is not the connector's name \"{name}\"",
                translated.name
            ),
        ));
    }
    if let Some(key) = translated.unreadable.first() {
        return Err(invalid_field(
            key.clone(),
            "encrypted by Wren ({\"$crypto\": …}), which idm cannot decrypt: send the password itself"
                .into(),
        ));
    }
    let translated_type = translated
        .body
        .get("connectorType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !connector_type.is_empty() && connector_type != translated_type {
        return Err(invalid_field(
            "connector_type".into(),
            format!("\"{connector_type}\", but connectorRef names the {translated_type} connector"),
        ));
    }
    if !translated.ignored.is_empty() {
        tracing::warn!(
            connector = %name,
            settings = %translated.ignored.join("; "),
            "settings of a Wren provisioner document that idm does not support are ignored"
        );
    }
    Ok(translated.body)
}

fn mapping(doc: ConfigDocument) -> Mapping {
    let shown = config::redact("mapping", &doc.body);
    let text = |key: &str| {
        doc.body
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Mapping {
        name: format!("mappings/{}", doc.name),
        source: text("source"),
        target: text("target"),
        enable_sync: doc
            .body
            .get("enableSync")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        definition: Some(to_proto_struct(&shown)),
    }
}

impl ConfigApi {
    async fn get(&self, kind: &str, name: &str) -> Result<ConfigDocument, Status> {
        self.store
            .get_config(kind, name)
            .await?
            .ok_or_else(|| Status::not_found(format!("{kind} \"{name}\" not found")))
    }

    /// A document a client sent, ready to check and store: refused if it
    /// names an `$env` variable or a path the operator does not allow, or
    /// carries a sealed value; `{"$redacted": true}` markers replaced by the
    /// stored values (it read a redacted document and writes it back).
    async fn admit(
        &self,
        kind: &str,
        name: &str,
        mut body: Map<String, Value>,
    ) -> Result<Map<String, Value>, Status> {
        if let Some(at) = config::find_sealed(&body) {
            return Err(invalid_field(
                at,
                "\"$sealed\" values are written by idmd only; send the secret itself".into(),
            ));
        }
        let current = self.store.get_config(kind, name).await?;
        let stored = current.as_ref().map(|c| &c.body);
        self.policy
            .check(&body, stored)
            .map_err(|e| invalid_field(e.field, e.message))?;
        config::check_kept_secrets(kind, &body, stored)
            .map_err(|e| invalid_field(e.field, e.message))?;
        config::restore_redacted(&mut body, stored).map_err(|at| {
            invalid_field(
                at,
                "{\"$redacted\": true} stands for a stored value, and none is stored".into(),
            )
        })?;
        Ok(body)
    }

    /// Stores an admitted document, its secrets sealed.
    async fn put(
        &self,
        kind: &str,
        name: &str,
        body: Map<String, Value>,
    ) -> Result<ConfigDocument, Status> {
        // Sealed and committed under one key: a rotation waits for this write.
        let _hold = self.objects.secrets().hold().await;
        let body = config::seal(kind, &body, self.objects.secrets())
            .map_err(|e| Status::internal(format!("sealing {kind} {name}: {e}")))?;
        let doc = ConfigDocument {
            kind: kind.into(),
            name: name.into(),
            body,
            source: "api".into(),
        };
        self.store.put_config(&doc).await?;
        Ok(doc)
    }
}

fn invalid_field(field: String, message: String) -> Status {
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {message}"),
        tonic_types::ErrorDetails::with_bad_request_violation(field, message),
    )
}

#[tonic::async_trait]
impl ConfigService for ConfigApi {
    async fn list_connectors(
        &self,
        request: Request<ListConnectorsRequest>,
    ) -> Result<Response<ListConnectorsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let connectors = self
            .store
            .list_config("connector")
            .await?
            .into_iter()
            .map(connector)
            .collect();
        Ok(Response::new(ListConnectorsResponse { connectors }))
    }

    async fn get_connector(
        &self,
        request: Request<GetConnectorRequest>,
    ) -> Result<Response<Connector>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let name = short_name(&request.get_ref().name, "connectors/")?;
        let document = self.get("connector", name).await?;
        let shown = match request.get_ref().view() {
            ConnectorView::Unspecified => connector(document),
            ConnectorView::Provisioner => provisioner(document)?,
        };
        Ok(Response::new(shown))
    }

    async fn put_connector(
        &self,
        request: Request<PutConnectorRequest>,
    ) -> Result<Response<Connector>, Status> {
        let named = request
            .get_ref()
            .connector
            .as_ref()
            .map(|c| c.name.as_str());
        trail::target_named(&request, "connectors/", named.unwrap_or_default());
        caller(&request)?.require(Scope::Admin)?;
        let given = request
            .into_inner()
            .connector
            .ok_or_else(|| Status::invalid_argument("connector: required"))?;
        let name = short_name(&given.name, "connectors/")?;
        let mut body = given
            .configuration
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let in_provisioner_shape = is_provisioner(&body);
        if in_provisioner_shape {
            body = from_provisioner(name, &given.connector_type, &body)?;
        } else if !given.connector_type.is_empty() {
            body.insert("connectorType".into(), Value::String(given.connector_type));
        }
        let body = self.admit("connector", name, body).await?;
        // Checked before storing: what was written in Wren's shape reads back in it.
        if in_provisioner_shape {
            config::provisioner_of(name, &body)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        let stored = self.put("connector", name, body).await?;
        connector::warn_insecure(name, &stored.body);
        self.implicit.reload().await?;
        let shown = if in_provisioner_shape {
            provisioner(stored)?
        } else {
            connector(stored)
        };
        Ok(Response::new(shown))
    }

    async fn delete_connector(
        &self,
        request: Request<DeleteConnectorRequest>,
    ) -> Result<Response<DeleteConnectorResponse>, Status> {
        trail::target_named(&request, "connectors/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "connectors/")?;
        let existed = self.store.delete_config("connector", name).await?;
        self.implicit.reload().await?;
        Ok(Response::new(DeleteConnectorResponse { existed }))
    }

    async fn test_connector(
        &self,
        request: Request<TestConnectorRequest>,
    ) -> Result<Response<TestConnectorResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "connectors/")?;
        let document = self.get("connector", name).await?;
        let built =
            match connector::build(name, &document.body, &self.conf_dir, self.objects.secrets()) {
                Ok(built) => built,
                Err(e) => {
                    return Ok(Response::new(TestConnectorResponse {
                        ok: false,
                        message: e.to_string(),
                        object_types: Vec::new(),
                    }));
                }
            };
        let object_types: Vec<String> = built.object_types().into_iter().map(|t| t.name).collect();
        // Reading the first object of each type proves the address, the
        // credentials and the read rights.
        for object_type in &object_types {
            let first = connector::time_limited(
                name,
                object_type,
                connector::DEFAULT_CALL_TIMEOUT,
                async { built.query(object_type).next().await.transpose() },
            )
            .await;
            if let Err(e) = first {
                return Ok(Response::new(TestConnectorResponse {
                    ok: false,
                    message: e.to_string(),
                    object_types,
                }));
            }
        }
        Ok(Response::new(TestConnectorResponse {
            ok: true,
            message: format!("{name} answered for {}", object_types.join(", ")),
            object_types,
        }))
    }

    async fn list_mappings(
        &self,
        request: Request<ListMappingsRequest>,
    ) -> Result<Response<ListMappingsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let mappings = self
            .store
            .list_config("mapping")
            .await?
            .into_iter()
            .map(mapping)
            .collect();
        Ok(Response::new(ListMappingsResponse { mappings }))
    }

    async fn get_mapping(
        &self,
        request: Request<GetMappingRequest>,
    ) -> Result<Response<Mapping>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let name = short_name(&request.get_ref().name, "mappings/")?;
        Ok(Response::new(mapping(self.get("mapping", name).await?)))
    }

    async fn put_mapping(
        &self,
        request: Request<PutMappingRequest>,
    ) -> Result<Response<Mapping>, Status> {
        let named = request.get_ref().mapping.as_ref().map(|m| m.name.as_str());
        trail::target_named(&request, "mappings/", named.unwrap_or_default());
        caller(&request)?.require(Scope::Admin)?;
        let given = request
            .into_inner()
            .mapping
            .ok_or_else(|| Status::invalid_argument("mapping: required"))?;
        let name = short_name(&given.name, "mappings/")?.to_string();
        let mut body = given
            .definition
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        body.insert("name".into(), Value::String(name.clone()));
        // Paths and `$env` first: the checks below read script files.
        let body = self.admit("mapping", &name, body).await?;
        // The same checks as a sync.json entry at start-up, scripts compiled.
        SyncMapping::from_json("definition", &body, &self.conf_dir, self.objects.schema())
            .map_err(|e| {
                Status::with_error_details(
                    tonic::Code::InvalidArgument,
                    e.to_string(),
                    tonic_types::ErrorDetails::with_bad_request_violation(e.field, e.message),
                )
            })?;
        let stored = self.put("mapping", &name, body).await?;
        self.implicit.reload().await?;
        Ok(Response::new(mapping(stored)))
    }

    async fn delete_mapping(
        &self,
        request: Request<DeleteMappingRequest>,
    ) -> Result<Response<DeleteMappingResponse>, Status> {
        trail::target_named(&request, "mappings/", &request.get_ref().name);
        caller(&request)?.require(Scope::Admin)?;
        let name = short_name(&request.get_ref().name, "mappings/")?;
        let existed = self.store.delete_config("mapping", name).await?;
        self.implicit.reload().await?;
        Ok(Response::new(DeleteMappingResponse { existed }))
    }
}

//! The discovery documents (RFC 7644 §4): what this service provider supports,
//! its resource types and its schemas.

use serde::Serialize;
use serde_json::Value;

use super::schema::{Kind, Registry, schema_document};
use super::urn;

/// Limits the gateway enforces and advertises.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest page a list returns.
    pub max_results: u64,
    pub bulk_max_operations: usize,
    pub bulk_max_payload: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceProviderConfig {
    schemas: [&'static str; 1],
    documentation_uri: &'static str,
    patch: Supported,
    bulk: Bulk,
    filter: Filter,
    change_password: Supported,
    sort: Supported,
    etag: Supported,
    authentication_schemes: [AuthenticationScheme; 1],
    meta: Meta,
}

#[derive(Serialize)]
struct Supported {
    supported: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bulk {
    supported: bool,
    max_operations: usize,
    max_payload_size: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    supported: bool,
    max_results: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationScheme {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'static str,
    description: &'static str,
    primary: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    resource_type: &'static str,
    location: String,
}

pub fn service_provider_config(base: &str, limits: Limits) -> Value {
    let config = ServiceProviderConfig {
        schemas: [urn::SERVICE_PROVIDER_CONFIG],
        documentation_uri: "https://datatracker.ietf.org/doc/html/rfc7644",
        patch: Supported { supported: true },
        bulk: Bulk {
            supported: true,
            max_operations: limits.bulk_max_operations,
            max_payload_size: limits.bulk_max_payload,
        },
        filter: Filter {
            supported: true,
            max_results: limits.max_results,
        },
        change_password: Supported { supported: true },
        sort: Supported { supported: true },
        etag: Supported { supported: true },
        authentication_schemes: [AuthenticationScheme {
            kind: "oauthbearertoken",
            name: "Bearer token",
            description: "An idm API token with scim or admin scope: `Authorization: Bearer <token>`",
            primary: true,
        }],
        meta: Meta {
            resource_type: "ServiceProviderConfig",
            location: format!("{base}/ServiceProviderConfig"),
        },
    };
    serde_json::to_value(config).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceTypeDocument {
    schemas: [&'static str; 1],
    id: &'static str,
    name: &'static str,
    description: &'static str,
    endpoint: &'static str,
    schema: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    schema_extensions: Vec<SchemaExtension>,
    meta: Meta,
}

#[derive(Serialize)]
struct SchemaExtension {
    schema: String,
    required: bool,
}

pub fn resource_type(registry: &Registry, kind: Kind, base: &str) -> Value {
    let resource_type = registry.resource_type(kind);
    let document = ResourceTypeDocument {
        schemas: [urn::RESOURCE_TYPE],
        id: kind.name(),
        name: kind.name(),
        description: match kind {
            Kind::User => "User Account",
            Kind::Group => "Group",
        },
        endpoint: kind.endpoint(),
        schema: resource_type.core.id.clone(),
        schema_extensions: resource_type
            .extensions
            .iter()
            .map(|e| SchemaExtension {
                schema: e.id.clone(),
                required: false,
            })
            .collect(),
        meta: Meta {
            resource_type: "ResourceType",
            location: format!("{base}/ResourceTypes/{}", kind.name()),
        },
    };
    serde_json::to_value(document).unwrap_or_default()
}

pub fn schemas(registry: &Registry, base: &str) -> Vec<Value> {
    registry
        .schemas
        .iter()
        .map(|s| schema_document(s, base))
        .collect()
}

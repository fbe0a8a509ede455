//! `idm.v1.ObjectService`: transport only — decode, call the domain, encode.

use idm_proto::json::{from_proto_struct, from_proto_value, to_proto_struct};
use idm_proto::v1::object_service_server::ObjectService;
use idm_proto::v1::{
    CountObjectsRequest, CountObjectsResponse, CreateObjectRequest, DeleteObjectRequest,
    DeleteObjectResponse, GetObjectRequest, ListObjectTypesRequest, ListObjectTypesResponse,
    ManagedObject, ObjectType, PatchObjectRequest, PolicyFailure, QueryObjectsRequest,
    QueryObjectsResponse, ReplaceObjectRequest, ReverseProperty, Scope, ValidateObjectRequest,
    ValidateObjectResponse, VerifyPasswordRequest, VerifyPasswordResponse,
};
use tonic::{Request, Response, Status};

use super::auth::caller;
use super::timestamp;
use super::trail;
use crate::managed::{ManagedObjects, ObjectView, PatchOp, Query};

pub struct ObjectApi {
    pub objects: ManagedObjects,
}

/// `managed/<type>` → type.
fn parse_parent(parent: &str) -> Result<&str, Status> {
    parent
        .strip_prefix("managed/")
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "\"{parent}\" is not a collection such as managed/user"
            ))
        })
}

/// `managed/<type>/<id>` → (type, id).
fn parse_name(name: &str) -> Result<(&str, &str), Status> {
    name.strip_prefix("managed/")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(t, id)| !t.is_empty() && !id.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "\"{name}\" is not an object name such as managed/user/123"
            ))
        })
}

fn to_proto(view: ObjectView) -> ManagedObject {
    ManagedObject {
        name: view.name(),
        r#type: view.type_name,
        id: view.id,
        revision: view.rev,
        attributes: Some(to_proto_struct(&view.attributes)),
        create_time: timestamp(&view.created),
        update_time: timestamp(&view.modified),
    }
}

fn usize_of(value: i32, field: &str) -> Result<usize, Status> {
    usize::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field} must not be negative")))
}

/// The names of a declaration's `schema.properties` in `managed.json`'s
/// order: those in Wren's `schema.order` first, then the rest as written.
fn property_order(declaration: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let schema = declaration.get("schema");
    let Some(properties) = schema
        .and_then(|s| s.get("properties"))
        .and_then(serde_json::Value::as_object)
    else {
        return Vec::new();
    };
    let listed = schema
        .and_then(|s| s.get("order"))
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .filter(|name| properties.contains_key(*name));
    let mut order: Vec<String> = Vec::with_capacity(properties.len());
    for name in listed.chain(properties.keys().map(String::as_str)) {
        if !order.iter().any(|seen| seen == name) {
            order.push(name.to_string());
        }
    }
    order
}

#[tonic::async_trait]
impl ObjectService for ObjectApi {
    async fn create_object(
        &self,
        request: Request<CreateObjectRequest>,
    ) -> Result<Response<ManagedObject>, Status> {
        let caller = caller(&request)?;
        caller.require(Scope::Scim)?;
        let request = request.into_inner();
        let type_name = parse_parent(&request.parent)?;
        let attributes = request
            .attributes
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let id = Some(request.object_id).filter(|id| !id.is_empty());
        let view = self
            .objects
            .create(caller.actor(), type_name, id, attributes)
            .await?;
        Ok(Response::new(to_proto(view)))
    }

    async fn get_object(
        &self,
        request: Request<GetObjectRequest>,
    ) -> Result<Response<ManagedObject>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let (type_name, id) = parse_name(&request.name)?;
        let fields = request.read_mask.map(|m| m.paths).unwrap_or_default();
        let view = self.objects.get(type_name, id, &fields).await?;
        Ok(Response::new(to_proto(view)))
    }

    async fn replace_object(
        &self,
        request: Request<ReplaceObjectRequest>,
    ) -> Result<Response<ManagedObject>, Status> {
        let caller = caller(&request)?;
        caller.require(Scope::Scim)?;
        let request = request.into_inner();
        let (type_name, id) = parse_name(&request.name)?;
        let attributes = request
            .attributes
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let view = self
            .objects
            .replace(
                caller.actor(),
                type_name,
                id,
                attributes,
                request.expected_revision,
            )
            .await?;
        Ok(Response::new(to_proto(view)))
    }

    async fn patch_object(
        &self,
        request: Request<PatchObjectRequest>,
    ) -> Result<Response<ManagedObject>, Status> {
        let caller = caller(&request)?;
        caller.require(Scope::Scim)?;
        let request = request.into_inner();
        let (type_name, id) = parse_name(&request.name)?;
        let ops = request
            .operations
            .iter()
            .map(|op| {
                PatchOp::with_from(
                    &op.operation,
                    &op.field,
                    Some(op.from.as_str()).filter(|from| !from.is_empty()),
                    op.value.as_ref().map(from_proto_value),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let view = self
            .objects
            .patch(
                caller.actor(),
                type_name,
                id,
                ops,
                request.expected_revision,
            )
            .await?;
        Ok(Response::new(to_proto(view)))
    }

    async fn delete_object(
        &self,
        request: Request<DeleteObjectRequest>,
    ) -> Result<Response<DeleteObjectResponse>, Status> {
        let caller = caller(&request)?;
        caller.require(Scope::Scim)?;
        let request = request.into_inner();
        let (type_name, id) = parse_name(&request.name)?;
        let deleted = self
            .objects
            .delete(caller.actor(), type_name, id, request.expected_revision)
            .await?;
        Ok(Response::new(DeleteObjectResponse {
            existed: deleted.is_some(),
            object: deleted.map(to_proto),
        }))
    }

    async fn query_objects(
        &self,
        request: Request<QueryObjectsRequest>,
    ) -> Result<Response<QueryObjectsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let type_name = parse_parent(&request.parent)?;
        let query = Query {
            filter: request.filter,
            order_by: request.order_by,
            page_size: usize_of(request.page_size, "page_size")?,
            page_token: request.page_token,
            offset: usize_of(request.offset, "offset")?,
            fields: request.read_mask.map(|m| m.paths).unwrap_or_default(),
            estimate_total: request.estimate_total,
        };
        let page = self.objects.query(type_name, &query).await?;
        Ok(Response::new(QueryObjectsResponse {
            objects: page.objects.into_iter().map(to_proto).collect(),
            next_page_token: page.next_page_token,
            total_size: i64::try_from(page.total).unwrap_or(i64::MAX),
            total_size_estimated: page.estimated,
        }))
    }

    async fn count_objects(
        &self,
        request: Request<CountObjectsRequest>,
    ) -> Result<Response<CountObjectsResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let request = request.into_inner();
        let type_name = parse_parent(&request.parent)?;
        let count = self.objects.count(type_name, &request.filter).await?;
        Ok(Response::new(CountObjectsResponse {
            count: i64::try_from(count).unwrap_or(i64::MAX),
        }))
    }

    async fn verify_password(
        &self,
        request: Request<VerifyPasswordRequest>,
    ) -> Result<Response<VerifyPasswordResponse>, Status> {
        let caller = caller(&request)?;
        trail::target(&request, &request.get_ref().name);
        caller.require(Scope::VerifyPassword)?;
        let (type_name, id) = parse_name(&request.get_ref().name)?;
        let property = match request.get_ref().property.as_str() {
            "" => "password",
            given => given,
        };
        let valid = self
            .objects
            .verify_password(
                caller.actor(),
                type_name,
                id,
                property,
                &request.get_ref().password,
            )
            .await?;
        trail::outcome(&request, if valid { "valid" } else { "invalid" });
        Ok(Response::new(VerifyPasswordResponse { valid }))
    }

    async fn list_object_types(
        &self,
        request: Request<ListObjectTypesRequest>,
    ) -> Result<Response<ListObjectTypesResponse>, Status> {
        caller(&request)?.require(Scope::Read)?;
        let types = self
            .objects
            .schema()
            .types()
            .map(|t| ObjectType {
                name: format!("managed/{}", t.name),
                schema: Some(to_proto_struct(&t.declaration)),
                property_order: property_order(&t.declaration),
                reverse_properties: t
                    .reverse
                    .iter()
                    .map(|r| ReverseProperty {
                        name: r.name.clone(),
                        source_collection: format!("managed/{}", r.source_type),
                        source_property: r.source_property.clone(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(ListObjectTypesResponse { types }))
    }

    async fn validate_object(
        &self,
        request: Request<ValidateObjectRequest>,
    ) -> Result<Response<ValidateObjectResponse>, Status> {
        caller(&request)?.require(Scope::Scim)?;
        let request = request.into_inner();
        let (type_name, id) = match parse_name(&request.name) {
            Ok((type_name, id)) => (type_name, Some(id)),
            Err(_) => (parse_parent(&request.name)?, None),
        };
        let attributes = request
            .attributes
            .as_ref()
            .map(from_proto_struct)
            .unwrap_or_default();
        let failures = self
            .objects
            .validate(type_name, id, &attributes, request.properties_only)
            .await?;
        let failed_policy_requirements = failures
            .0
            .into_iter()
            .map(|failure| PolicyFailure {
                property: failure.property,
                policy_requirements: failure
                    .policy_requirements
                    .iter()
                    .filter_map(serde_json::Value::as_object)
                    .map(to_proto_struct)
                    .collect(),
            })
            .collect::<Vec<_>>();
        Ok(Response::new(ValidateObjectResponse {
            result: failed_policy_requirements.is_empty(),
            failed_policy_requirements,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::property_order;
    use serde_json::json;

    #[test]
    fn properties_come_in_schema_order_then_as_written() {
        let declaration = json!({"name": "user", "schema": {
            "order": ["_id", "userName", "sn", "gone"],
            "properties": {"mail": {}, "sn": {}, "_id": {}, "userName": {}, "city": {}}}});
        assert_eq!(
            property_order(declaration.as_object().unwrap()),
            ["_id", "userName", "sn", "mail", "city"]
        );
        let unordered =
            json!({"name": "group", "schema": {"properties": {"name": {}, "members": {}}}});
        assert_eq!(
            property_order(unordered.as_object().unwrap()),
            ["name", "members"]
        );
    }
}

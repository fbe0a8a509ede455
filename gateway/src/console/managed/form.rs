//! The forms of a managed object: edit (`/{id}/edit`), create (`/new`), set
//! password (`/{id}/password`), and adding to or removing from a list of
//! references (a group's `members`).
//!
//! - An edit is one `PatchObject` at the revision the form was opened at
//!   (a hidden field): a concurrent change makes it fail, and the form says
//!   so with the person's values kept, instead of overwriting.
//! - The core's policy failures come back beside their fields (400); the
//!   form keeps what was typed, except passwords, which are never sent back.
//! - Private properties never appear with a value: create asks for them,
//!   the password page sets them, edit leaves them alone.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use idm_proto::json::{to_proto_struct, to_proto_value};
use idm_proto::v1::object_service_client::ObjectServiceClient;
use idm_proto::v1::{CreateObjectRequest, PatchObjectRequest, PatchOperation};
use serde_json::{Map, Value, json};

use super::object::{attributes_of, get_object, heading, revision_of};
use super::{Kind, Prop, TypeSchema, schema_of, shown};
use crate::console::error::FieldProblem;
use crate::console::page::url_part;
use crate::console::{
    Chrome, ConsoleError, ConsoleState, Form, Nav, Viewer, console_call, render, see_other,
};

/// The most characters taken from one field.
const MAX_FIELD: usize = 4096;

/// One input of a form.
pub struct Field {
    pub name: String,
    pub title: String,
    pub hint: String,
    /// `text`, `number`, `integer`, `boolean` or `password`.
    pub input: &'static str,
    /// What the input shows: never anything for a password.
    pub value: String,
    pub required: bool,
    pub problem: String,
}

#[derive(Template)]
#[template(path = "console/managed/form.html")]
struct FormPage {
    chrome: Chrome,
    type_name: String,
    type_title: String,
    heading: String,
    /// Where the form posts.
    action: String,
    /// Where Cancel goes.
    back: String,
    /// The id field of a create form (`None` when editing).
    new_id: Option<String>,
    revision: Option<i64>,
    fields: Vec<Field>,
    /// What went wrong that belongs to no field.
    problems: Vec<String>,
    /// A concurrent change: the link to the current version.
    conflict: Option<String>,
    submit: &'static str,
}

#[derive(Template)]
#[template(path = "console/managed/password.html")]
struct PasswordPage {
    chrome: Chrome,
    type_name: String,
    type_title: String,
    id: String,
    heading: String,
    base: String,
    fields: Vec<Field>,
    problems: Vec<String>,
}

fn object_href(schema: &TypeSchema, id: &str) -> String {
    format!("/admin/managed/{}/{}", url_part(&schema.name), url_part(id))
}

fn input_of(prop: &Prop) -> &'static str {
    match prop.kind {
        Kind::Number => "number",
        Kind::Integer => "integer",
        Kind::Boolean => "boolean",
        _ if prop.private => "password",
        _ => "text",
    }
}

/// The form's fields for `props`, filled from `values` (never a private one).
fn fields_of<'a>(
    props: impl Iterator<Item = &'a Prop>,
    values: &Map<String, Value>,
    problems: &[FieldProblem],
) -> Vec<Field> {
    props
        .map(|p| Field {
            name: p.name.clone(),
            title: p.title.clone(),
            hint: p.description.clone(),
            input: input_of(p),
            value: if p.private {
                String::new()
            } else {
                values.get(&p.name).map(form_text).unwrap_or_default()
            },
            required: p.required,
            problem: problems
                .iter()
                .filter(|f| f.property == p.name)
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect()
}

/// A value as an input holds it (`true`, not `yes`).
fn form_text(value: &Value) -> String {
    match value {
        Value::Bool(b) => b.to_string(),
        other => shown(other),
    }
}

/// The problems that belong to none of `fields`, as lines.
fn other_problems(schema: &TypeSchema, fields: &[Field], problems: &[FieldProblem]) -> Vec<String> {
    problems
        .iter()
        .filter(|p| !fields.iter().any(|f| f.name == p.property))
        .map(|p| {
            if p.property.is_empty() {
                return p.message.clone();
            }
            let title = schema
                .prop(&p.property)
                .map(|prop| prop.title.clone())
                .unwrap_or_else(|| p.property.clone());
            format!("{title} {}", p.message)
        })
        .collect()
}

/// The values typed for `props`: `None` for an empty input, the property's
/// JSON type otherwise; a value that is not of its type is a problem.
fn read_values<'a>(
    form: &Form,
    props: impl Iterator<Item = &'a Prop>,
) -> (Vec<(String, Option<Value>)>, Vec<FieldProblem>) {
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for prop in props {
        let raw: String = form
            .get(&prop.name)
            .unwrap_or_default()
            .chars()
            .take(MAX_FIELD)
            .collect();
        let text = raw.trim();
        let value = if text.is_empty() {
            Ok(None)
        } else {
            match prop.kind {
                Kind::Integer => text
                    .parse::<i64>()
                    .map(|n| Some(json!(n)))
                    .map_err(|_| "must be a whole number"),
                Kind::Number => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(|n| Some(Value::Number(n)))
                    .ok_or("must be a number"),
                Kind::Boolean => match text {
                    "true" => Ok(Some(Value::Bool(true))),
                    "false" => Ok(Some(Value::Bool(false))),
                    _ => Err("must be yes or no"),
                },
                // Strings are kept as typed (a password's spaces count).
                _ => Ok(Some(Value::String(raw.clone()))),
            }
        };
        match value {
            Ok(value) => values.push((prop.name.clone(), value)),
            Err(message) => problems.push(FieldProblem {
                property: prop.name.clone(),
                message: message.into(),
            }),
        }
    }
    (values, problems)
}

/// The values as they were typed, for a form shown again.
fn typed(
    values: &[(String, Option<Value>)],
    form: &Form,
    schema: &TypeSchema,
) -> Map<String, Value> {
    let mut map: Map<String, Value> = values
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect();
    // Inputs that did not convert keep their text.
    for prop in schema.editable() {
        if !map.contains_key(&prop.name)
            && let Some(text) = form.get(&prop.name).filter(|t| !t.trim().is_empty())
        {
            map.insert(
                prop.name.clone(),
                Value::String(text.chars().take(MAX_FIELD).collect()),
            );
        }
    }
    map
}

// ---- edit ----

pub async fn edit(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let schema = schema_of(&state, &viewer, &type_name).await?;
    let object = get_object(&state, &viewer, &schema, &id).await?;
    let attributes = attributes_of(&object);
    let page = edit_page(
        &state,
        &viewer,
        &schema,
        &object.id,
        &heading(&schema, &attributes, &object.id),
        object.revision,
        &attributes,
        &[],
        None,
    )
    .await;
    Ok(render(&page))
}

#[allow(clippy::too_many_arguments)]
async fn edit_page(
    state: &ConsoleState,
    viewer: &Viewer,
    schema: &TypeSchema,
    id: &str,
    heading: &str,
    revision: i64,
    values: &Map<String, Value>,
    problems: &[FieldProblem],
    conflict: Option<String>,
) -> FormPage {
    let fields = fields_of(schema.editable(), values, problems);
    let href = object_href(schema, id);
    FormPage {
        chrome: Chrome::new(
            state,
            viewer,
            Nav::Managed(schema.name.clone()),
            &format!("Edit {} {heading}", schema.title),
        )
        .await,
        type_name: schema.name.clone(),
        type_title: schema.title.clone(),
        heading: format!("Edit {heading}"),
        action: format!("{href}/edit"),
        back: href,
        new_id: None,
        revision: Some(revision),
        problems: other_problems(schema, &fields, problems),
        fields,
        conflict,
        submit: "Save",
    }
}

/// The form again, with `status`.
fn again(page: &FormPage, status: StatusCode) -> Response {
    let mut response = render(page);
    *response.status_mut() = status;
    response
}

/// The heading of an object as stored, not as typed (an emptied userName
/// would leave only the id): read again for a form shown with its problems.
async fn stored_heading(
    state: &ConsoleState,
    viewer: &Viewer,
    schema: &TypeSchema,
    id: &str,
) -> String {
    match get_object(state, viewer, schema, id).await {
        Ok(object) => heading(schema, &attributes_of(&object), &object.id),
        Err(_) => id.to_string(),
    }
}

pub async fn save(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let revision = revision_of(&form)?.ok_or_else(|| {
        ConsoleError::BadRequest("The form lacks the revision it was opened at.".into())
    })?;
    let (values, problems) = read_values(&form, schema.editable());
    if !problems.is_empty() {
        let heading_text = stored_heading(&state, &form.viewer, &schema, &id).await;
        let page = edit_page(
            &state,
            &form.viewer,
            &schema,
            &id,
            &heading_text,
            revision,
            &typed(&values, &form, &schema),
            &problems,
            None,
        )
        .await;
        return Ok(again(&page, StatusCode::BAD_REQUEST));
    }
    let operations = values
        .iter()
        .map(|(name, value)| PatchOperation {
            operation: if value.is_some() { "replace" } else { "remove" }.into(),
            field: format!("/{name}"),
            value: value.as_ref().map(to_proto_value),
            ..Default::default()
        })
        .collect();
    let result = console_call!(
        &state,
        &form.viewer,
        ObjectServiceClient.patch_object(PatchObjectRequest {
            name: schema.object_name(&id),
            operations,
            expected_revision: Some(revision),
        })
    )
    .await;
    let (status, problems, conflict) = match result {
        Ok(_) => {
            return Ok(see_other(&format!(
                "{}?done=saved",
                object_href(&schema, &id)
            )));
        }
        Err(ConsoleError::Invalid { message, problems }) => {
            let problems = if problems.is_empty() {
                vec![FieldProblem {
                    property: String::new(),
                    message,
                }]
            } else {
                problems
            };
            (StatusCode::BAD_REQUEST, problems, None)
        }
        Err(ConsoleError::Conflict(_)) => (
            StatusCode::CONFLICT,
            Vec::new(),
            Some(format!("{}/edit", object_href(&schema, &id))),
        ),
        Err(other) => return Err(other),
    };
    let heading_text = stored_heading(&state, &form.viewer, &schema, &id).await;
    let page = edit_page(
        &state,
        &form.viewer,
        &schema,
        &id,
        &heading_text,
        revision,
        &typed(&values, &form, &schema),
        &problems,
        conflict,
    )
    .await;
    Ok(again(&page, status))
}

// ---- create ----

async fn new_page(
    state: &ConsoleState,
    viewer: &Viewer,
    schema: &TypeSchema,
    new_id: String,
    values: &Map<String, Value>,
    problems: &[FieldProblem],
) -> FormPage {
    let props = schema.editable().chain(schema.secrets());
    let fields = fields_of(props, values, problems);
    let list = format!("/admin/managed/{}", url_part(&schema.name));
    FormPage {
        chrome: Chrome::new(
            state,
            viewer,
            Nav::Managed(schema.name.clone()),
            &format!("New {}", schema.title),
        )
        .await,
        type_name: schema.name.clone(),
        type_title: schema.title.clone(),
        heading: format!("New {}", schema.title),
        action: format!("{list}/new"),
        back: list,
        new_id: Some(new_id),
        revision: None,
        problems: other_problems(schema, &fields, problems),
        fields,
        conflict: None,
        submit: "Create",
    }
}

pub async fn new(
    State(state): State<ConsoleState>,
    Path(type_name): Path<String>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let schema = schema_of(&state, &viewer, &type_name).await?;
    let page = new_page(&state, &viewer, &schema, String::new(), &Map::new(), &[]).await;
    Ok(render(&page))
}

pub async fn create(
    State(state): State<ConsoleState>,
    Path(type_name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let new_id: String = form
        .get("_id")
        .unwrap_or_default()
        .trim()
        .chars()
        .take(256)
        .collect();
    let (values, problems) = read_values(&form, schema.editable().chain(schema.secrets()));
    let shown_again = |values: &[(String, Option<Value>)]| typed(values, &form, &schema);
    let problems = if problems.is_empty() {
        let attributes: Map<String, Value> = values
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        let result = console_call!(
            &state,
            &form.viewer,
            ObjectServiceClient.create_object(CreateObjectRequest {
                parent: format!("managed/{}", schema.name),
                object_id: new_id.clone(),
                attributes: Some(to_proto_struct(&attributes)),
            })
        )
        .await;
        match result {
            Ok(created) => {
                return Ok(see_other(&format!(
                    "{}?done=created",
                    object_href(&schema, &created.id)
                )));
            }
            Err(ConsoleError::Invalid { message, problems }) if problems.is_empty() => {
                vec![FieldProblem {
                    property: String::new(),
                    message,
                }]
            }
            Err(ConsoleError::Invalid { problems, .. }) => problems,
            Err(ConsoleError::Conflict(message)) => vec![FieldProblem {
                property: "_id".into(),
                message,
            }],
            Err(other) => return Err(other),
        }
    } else {
        problems
    };
    let status = if problems.iter().any(|p| p.property == "_id") {
        StatusCode::CONFLICT
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = new_page(
        &state,
        &form.viewer,
        &schema,
        new_id,
        &shown_again(&values),
        &problems,
    )
    .await;
    Ok(again(&page, status))
}

// ---- set password ----

async fn password_page(
    state: &ConsoleState,
    viewer: &Viewer,
    schema: &TypeSchema,
    id: &str,
    heading: &str,
    problems: &[FieldProblem],
) -> Result<PasswordPage, ConsoleError> {
    if schema.secrets().next().is_none() {
        return Err(ConsoleError::NotFound(format!(
            "{} objects have no password.",
            schema.title
        )));
    }
    let fields = fields_of(schema.secrets(), &Map::new(), problems);
    Ok(PasswordPage {
        chrome: Chrome::new(
            state,
            viewer,
            Nav::Managed(schema.name.clone()),
            &format!("Set the password of {heading}"),
        )
        .await,
        type_name: schema.name.clone(),
        type_title: schema.title.clone(),
        id: id.to_string(),
        heading: heading.to_string(),
        base: object_href(schema, id),
        problems: other_problems(schema, &fields, problems),
        fields,
    })
}

pub async fn password(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    viewer.require_change()?;
    let schema = schema_of(&state, &viewer, &type_name).await?;
    let object = get_object(&state, &viewer, &schema, &id).await?;
    let attributes = attributes_of(&object);
    let heading = heading(&schema, &attributes, &object.id);
    let page = password_page(&state, &viewer, &schema, &object.id, &heading, &[]).await?;
    Ok(render(&page))
}

pub async fn set_password(
    State(state): State<ConsoleState>,
    Path((type_name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let (values, mut problems) = read_values(&form, schema.secrets());
    for (name, value) in &values {
        let confirm = form.get(&format!("{name}.confirm")).unwrap_or_default();
        match value {
            None => problems.push(FieldProblem {
                property: name.clone(),
                message: "is required".into(),
            }),
            Some(Value::String(typed)) if typed.as_str() != confirm => {
                problems.push(FieldProblem {
                    property: name.clone(),
                    message: "and its confirmation differ".into(),
                })
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        let operations = values
            .iter()
            .map(|(name, value)| PatchOperation {
                operation: "replace".into(),
                field: format!("/{name}"),
                value: value.as_ref().map(to_proto_value),
                ..Default::default()
            })
            .collect();
        let result = console_call!(
            &state,
            &form.viewer,
            ObjectServiceClient.patch_object(PatchObjectRequest {
                name: schema.object_name(&id),
                operations,
                expected_revision: None,
            })
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(see_other(&format!(
                    "{}?done=password",
                    object_href(&schema, &id)
                )));
            }
            Err(ConsoleError::Invalid {
                message,
                problems: found,
            }) => {
                problems = if found.is_empty() {
                    vec![FieldProblem {
                        property: String::new(),
                        message,
                    }]
                } else {
                    found
                };
            }
            Err(other) => return Err(other),
        }
    }
    let page = password_page(&state, &form.viewer, &schema, &id, &id, &problems).await?;
    let mut response = render(&page);
    *response.status_mut() = StatusCode::BAD_REQUEST;
    Ok(response)
}

// ---- lists of references ----

/// The relationship-list property `name` of the type, or 404.
fn relation<'a>(schema: &'a TypeSchema, name: &str) -> Result<&'a Prop, ConsoleError> {
    schema.relations().find(|p| p.name == name).ok_or_else(|| {
        ConsoleError::NotFound(format!(
            "{} objects have no list of references \"{name}\".",
            schema.title
        ))
    })
}

/// Reads the object at the form's revision, changes the list `property`
/// with `change`, and writes it back at that revision.
async fn change_related(
    state: &ConsoleState,
    form: &Form,
    schema: &TypeSchema,
    id: &str,
    property: &Prop,
    change: impl FnOnce(&mut Vec<Value>) -> Result<(), ConsoleError>,
) -> Result<(), ConsoleError> {
    let object = get_object(state, &form.viewer, schema, id).await?;
    let posted = revision_of(form)?;
    if posted.is_some_and(|r| r != object.revision) {
        return Err(ConsoleError::Conflict(format!(
            "Someone changed this {} after you opened the page; nothing was changed. Look at it again first.",
            schema.title
        )));
    }
    let attributes = attributes_of(&object);
    let mut list: Vec<Value> = attributes
        .get(&property.name)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    change(&mut list)?;
    console_call!(
        state,
        &form.viewer,
        ObjectServiceClient.patch_object(PatchObjectRequest {
            name: schema.object_name(id),
            operations: vec![PatchOperation {
                operation: "replace".into(),
                field: format!("/{}", property.name),
                value: Some(to_proto_value(&Value::Array(list))),
                ..Default::default()
            }],
            expected_revision: Some(object.revision),
        })
    )
    .await?;
    Ok(())
}

fn is_ref(item: &Value, reference: &str) -> bool {
    item.get("_ref").and_then(Value::as_str) == Some(reference)
}

pub async fn add_related(
    State(state): State<ConsoleState>,
    Path((type_name, id, property)): Path<(String, String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let prop = relation(&schema, &property)?;
    let collection = prop.collection.clone().ok_or_else(|| {
        ConsoleError::BadRequest(format!("{} names no resourceCollection.", prop.title))
    })?;
    let added = form.get("id").unwrap_or_default().trim().to_string();
    if added.is_empty() || added.len() > 256 {
        return Err(ConsoleError::BadRequest(
            "Give the id of the object to add.".into(),
        ));
    }
    let reference = format!("{collection}/{added}");
    change_related(&state, &form, &schema, &id, prop, |list| {
        if !list.iter().any(|item| is_ref(item, &reference)) {
            list.push(json!({ "_ref": reference }));
        }
        Ok(())
    })
    .await?;
    Ok(see_other(&format!(
        "{}?done=added",
        object_href(&schema, &id)
    )))
}

pub async fn remove_related(
    State(state): State<ConsoleState>,
    Path((type_name, id, property)): Path<(String, String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.viewer.require_change()?;
    let schema = schema_of(&state, &form.viewer, &type_name).await?;
    let prop = relation(&schema, &property)?;
    let reference = form.get("ref").unwrap_or_default().to_string();
    change_related(&state, &form, &schema, &id, prop, |list| {
        list.retain(|item| !is_ref(item, &reference));
        Ok(())
    })
    .await?;
    Ok(see_other(&format!(
        "{}?done=removed",
        object_href(&schema, &id)
    )))
}

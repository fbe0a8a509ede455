//! The CSV file connector (`org.forgerock.openicf.csvfile.CSVFileConnector`)
//! as idm's `csv` connector.

use serde_json::{Map, Value, json};

use super::{Gaps, Reader, check_properties, keep_shared, object_type, text};
use crate::config::ConfError;

const AT: &str = "configurationProperties";

/// The keys of idm's `csv` connector document, and of each of its types.
const IDM_KEYS: &[&str] = &["connectorType", "file", "objectTypes"];
const IDM_TYPE_KEYS: &[&str] = &["file", "uidColumn", "delimiter", "quote", "escape"];

pub(super) fn translate(
    reader: &mut Reader<'_>,
    properties: &Map<String, Value>,
    types: &Map<String, Value>,
) -> Result<Map<String, Value>, ConfError> {
    let file = reader
        .string(properties, AT, "csvFile")?
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| {
            reader.invalid(
                "configurationProperties.csvFile",
                "required: the CSV file's path",
            )
        })?;
    let header_uid = reader
        .string(properties, AT, "headerUid")?
        .unwrap_or_else(|| "uid".into());
    let header_name = reader
        .string(properties, AT, "headerName")?
        .unwrap_or_else(|| header_uid.clone());
    let header_password = reader
        .string(properties, AT, "headerPassword")?
        .unwrap_or_else(|| "password".into());
    let delimiter = reader
        .string(properties, AT, "fieldDelimiter")?
        .unwrap_or_else(|| ",".into());
    let quote = reader
        .string(properties, AT, "quoteCharacter")?
        .unwrap_or_else(|| "\"".into());
    if let Some(encoding) = reader.string(properties, AT, "encoding")?
        && !matches!(encoding.to_ascii_lowercase().as_str(), "utf-8" | "utf8")
    {
        reader.ignore(
            "configurationProperties.encoding",
            "idm reads CSV files as UTF-8",
        );
    }
    reader.ignore_rest(
        AT,
        properties,
        &[
            "csvFile",
            "headerUid",
            "headerName",
            "headerPassword",
            "fieldDelimiter",
            "quoteCharacter",
            "encoding",
        ],
        &[
            ("newlineString", json!("\n")),
            ("syncFileRetentionCount", json!(3)),
        ],
        "the CSV connector is read-only in idm and has no such setting",
    );
    let mut object_types = Map::new();
    for (type_name, declaration) in types {
        let declaration = declaration.as_object().ok_or_else(|| {
            reader.invalid(format!("objectTypes.{type_name}"), "expected an object")
        })?;
        check_properties(reader, type_name, declaration, |native| match native {
            "__NAME__" => Some(header_name.clone()),
            "__UID__" => Some(header_uid.clone()),
            "__PASSWORD__" => Some(header_password.clone()),
            _ => None,
        });
        object_types.insert(
            type_name.clone(),
            json!({"uidColumn": header_uid, "delimiter": delimiter, "quote": quote}),
        );
    }
    Ok(
        json!({"connectorType": "csv", "file": file, "objectTypes": object_types})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

/// Wren's CSV file connector, as its provisioner files name it.
pub(super) fn connector_ref() -> Value {
    json!({
        "bundleName": "org.forgerock.openicf.connectors.csvfile-connector",
        "bundleVersion": "[1.4.0.0,2.0.0.0)",
        "connectorName": "org.forgerock.openicf.csvfile.CSVFileConnector"
    })
}

/// How a type's file is read. The provisioner shape has one for the whole
/// connector.
#[derive(Debug, PartialEq)]
struct Format {
    file: String,
    uid_column: String,
    delimiter: String,
    quote: String,
}

/// idm's `csv` document as `configurationProperties` and `objectTypes`.
pub(super) fn to_provisioner(
    body: &Map<String, Value>,
    gaps: &mut Gaps,
) -> (Map<String, Value>, Map<String, Value>) {
    gaps.unknown_keys("", body, IDM_KEYS, "not a setting of idm's CSV connector");
    let default_file = body.get("file").and_then(Value::as_str);
    let Some(declared) = gaps.declared_types(body) else {
        return (Map::new(), Map::new());
    };
    let mut shared: Option<(&str, Format)> = None;
    let mut types = Map::new();
    for (type_name, declaration) in declared {
        let at = format!("objectTypes.{type_name}");
        let Some(this) = type_format(&at, declaration, default_file, gaps) else {
            continue;
        };
        keep_shared(&mut shared, type_name, this, &at, gaps);
        types.insert(type_name.clone(), object_type("__ACCOUNT__"));
    }
    let mut properties = Map::new();
    if let Some((_, format)) = shared {
        properties.insert("csvFile".into(), json!(format.file));
        properties.insert("headerUid".into(), json!(format.uid_column));
        properties.insert("fieldDelimiter".into(), json!(format.delimiter));
        properties.insert("quoteCharacter".into(), json!(format.quote));
    }
    (properties, types)
}

/// How the connector reads one type, with its defaults filled in.
fn type_format(
    at: &str,
    declaration: &Value,
    default_file: Option<&str>,
    gaps: &mut Gaps,
) -> Option<Format> {
    let Some(declaration) = declaration.as_object() else {
        gaps.note(at, "expected an object");
        return None;
    };
    gaps.unknown_keys(
        at,
        declaration,
        IDM_TYPE_KEYS,
        "not a setting of idm's CSV connector",
    );
    if !declaration.get("escape").is_none_or(Value::is_null) {
        gaps.note(
            format!("{at}.escape"),
            "Wren's CSV file connector has no escape character",
        );
    }
    let mut setting = |key: &str, default: &str| match text(declaration, key) {
        Ok(value) => Some(value.unwrap_or_else(|| default.to_string())),
        Err(()) => {
            gaps.note(format!("{at}.{key}"), "expected a string");
            None
        }
    };
    let uid_column = setting("uidColumn", "uid");
    let delimiter = setting("delimiter", ",");
    let quote = setting("quote", "\"");
    let file = declaration
        .get("file")
        .and_then(Value::as_str)
        .or(default_file)
        .map(str::to_string);
    if file.is_none() {
        gaps.note(format!("{at}.file"), "csvFile is a path");
    }
    Some(Format {
        file: file?,
        uid_column: uid_column?,
        delimiter: delimiter?,
        quote: quote?,
    })
}

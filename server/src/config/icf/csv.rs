//! The CSV file connector (`org.forgerock.openicf.csvfile.CSVFileConnector`)
//! as idm's `csv` connector.

use serde_json::{Map, Value, json};

use super::{Reader, check_properties};
use crate::config::ConfError;

const AT: &str = "configurationProperties";

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

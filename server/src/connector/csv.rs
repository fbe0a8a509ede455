//! The CSV connector: a file per object type, read as a stream.
//!
//! `connector-<name>.json`:
//! `{"connectorType": "csv", "file": "data/hr.csv", "objectTypes": {"employee":
//! {"uidColumn": "uid", "delimiter": ",", "quote": "\"", "escape": null}}}`
//! (`file` may also sit in an object type). Header row, UTF-8 with or without
//! BOM, LF or CRLF, quoted fields with delimiters and newlines inside.
//! A row that cannot become an object (wrong field count, invalid UTF-8, empty
//! or duplicate uid, broken quoting) is reported with its line number and the
//! read goes on. CSV is a source: writes are refused.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    BadRecord, Capabilities, Connector, ConnectorError, ConnectorObject, ObjectTypeInfo, SourceItem,
};

mod rows;

use rows::{Format, Row, Rows};

/// A CSV connector holds no secrets.
pub const SECRET_FIELDS: &[&str] = &[];
/// Nor sends any anywhere.
pub const DESTINATION_FIELDS: &[&str] = &[];

/// Rows read ahead of the consumer: bounds memory whatever the file size.
const READ_AHEAD: usize = 1024;

pub struct CsvConnector {
    name: String,
    types: BTreeMap<String, CsvType>,
}

#[derive(Debug, Clone)]
struct CsvType {
    file: PathBuf,
    uid_column: String,
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
}

impl CsvConnector {
    pub fn from_config(
        name: &str,
        body: &Map<String, Value>,
        conf_dir: &Path,
    ) -> Result<Self, ConnectorError> {
        let config_error = |field: String, message: &str| ConnectorError::Config {
            connector: name.to_string(),
            field,
            message: message.to_string(),
        };
        let default_file = body.get("file").and_then(Value::as_str);
        let declared = body
            .get("objectTypes")
            .and_then(Value::as_object)
            .ok_or_else(|| {
                config_error(
                    "objectTypes".into(),
                    "required: {\"<type>\": {\"uidColumn\": …}}",
                )
            })?;
        let mut types = BTreeMap::new();
        for (type_name, decl) in declared {
            let at = format!("objectTypes.{type_name}");
            let decl = decl
                .as_object()
                .ok_or_else(|| config_error(at.clone(), "expected an object"))?;
            let file = decl
                .get("file")
                .and_then(Value::as_str)
                .or(default_file)
                .ok_or_else(|| {
                    config_error(format!("{at}.file"), "required (here or at the top level)")
                })?;
            let byte = |key: &str, default: Option<u8>| -> Result<Option<u8>, ConnectorError> {
                match decl.get(key) {
                    None => Ok(default),
                    Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if s.len() == 1 && s.is_ascii() => Ok(s.bytes().next()),
                    Some(_) => Err(config_error(
                        format!("{at}.{key}"),
                        "one ASCII character, or null",
                    )),
                }
            };
            let csv_type = CsvType {
                file: crate::config::resolve_path(conf_dir, file),
                uid_column: decl
                    .get("uidColumn")
                    .and_then(Value::as_str)
                    .unwrap_or("uid")
                    .to_string(),
                delimiter: byte("delimiter", Some(b','))?
                    .ok_or_else(|| config_error(format!("{at}.delimiter"), "required"))?,
                quote: byte("quote", Some(b'"'))?
                    .ok_or_else(|| config_error(format!("{at}.quote"), "required"))?,
                escape: byte("escape", None)?,
            };
            types.insert(type_name.clone(), csv_type);
        }
        Ok(CsvConnector {
            name: name.to_string(),
            types,
        })
    }

    fn csv_type(&self, object_type: &str) -> Result<&CsvType, ConnectorError> {
        self.types
            .get(object_type)
            .ok_or_else(|| ConnectorError::UnknownObjectType {
                connector: self.name.clone(),
                object_type: object_type.to_string(),
            })
    }

    fn refuse<T>(&self, operation: &'static str, object: String) -> Result<T, ConnectorError> {
        Err(ConnectorError::Unsupported {
            connector: self.name.clone(),
            operation,
            object,
        })
    }
}

impl Connector for CsvConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read: true,
            create: false,
            update: false,
            delete: false,
        }
    }

    fn object_types(&self) -> Vec<ObjectTypeInfo> {
        self.types
            .iter()
            .map(|(name, t)| ObjectTypeInfo {
                name: name.clone(),
                uid_attribute: t.uid_column.clone(),
                attributes: read_header(t).unwrap_or_default(),
                display_attribute: None,
            })
            .collect()
    }

    fn get<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConnectorObject>, ConnectorError>> {
        async move {
            let mut items = self.query(object_type);
            while let Some(item) = items.next().await {
                if let SourceItem::Object(object) = item?
                    && object.uid == uid
                {
                    return Ok(Some(object));
                }
            }
            Ok(None)
        }
        .boxed()
    }

    fn query<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxStream<'a, Result<SourceItem, ConnectorError>> {
        let csv_type = match self.csv_type(object_type) {
            Ok(t) => t.clone(),
            Err(e) => return futures::stream::once(async { Err(e) }).boxed(),
        };
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        let reader = RowReader {
            connector: self.name.clone(),
            object_type: object_type.to_string(),
            csv_type,
        };
        tokio::task::spawn_blocking(move || reader.run(&sender));
        ReceiverStream::new(receiver).boxed()
    }

    /// The file's size and modification time.
    fn change_token<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ConnectorError>> {
        async move {
            let csv_type = self.csv_type(object_type)?;
            let metadata =
                tokio::fs::metadata(&csv_type.file)
                    .await
                    .map_err(|e| ConnectorError::Io {
                        connector: self.name.clone(),
                        object: format!("system/{}/{object_type}", self.name),
                        message: format!("{}: {e}", csv_type.file.display()),
                    })?;
            let modified = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            Ok(Some(format!("{}:{modified}", metadata.len())))
        }
        .boxed()
    }

    /// Records after the header, counted in one quick pass (no decoding).
    fn count<'a>(
        &'a self,
        object_type: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, ConnectorError>> {
        async move {
            let csv_type = self.csv_type(object_type)?.clone();
            let object = format!("system/{}/{object_type}", self.name);
            let counted = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
                let (mut reader, _) = open(&csv_type)?;
                let mut record = ByteRecord::new();
                let mut records = 0u64;
                // A record the parser rejects still counts: it is reported, not skipped.
                loop {
                    match reader.read_byte_record(&mut record) {
                        Ok(false) => break,
                        Err(e) if e.is_io_error() => return Err(std::io::Error::other(e)),
                        Ok(true) | Err(_) => records += 1,
                    }
                }
                Ok(records.saturating_sub(1))
            })
            .await;
            match counted {
                Ok(Ok(records)) => Ok(Some(records)),
                Ok(Err(e)) => Err(ConnectorError::Io {
                    connector: self.name.clone(),
                    object,
                    message: e.to_string(),
                }),
                Err(e) => Err(ConnectorError::Io {
                    connector: self.name.clone(),
                    object,
                    message: e.to_string(),
                }),
            }
        }
        .boxed()
    }

    fn create<'a>(
        &'a self,
        object_type: &'a str,
        _: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        async move { self.refuse("create", format!("system/{}/{object_type}", self.name)) }.boxed()
    }

    fn update<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
        _: &'a Map<String, Value>,
    ) -> BoxFuture<'a, Result<String, ConnectorError>> {
        async move {
            self.refuse(
                "update",
                format!("system/{}/{object_type}/{uid}", self.name),
            )
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        object_type: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ConnectorError>> {
        async move {
            self.refuse(
                "delete",
                format!("system/{}/{object_type}/{uid}", self.name),
            )
        }
        .boxed()
    }
}

type Input = BufReader<std::fs::File>;

fn input(csv_type: &CsvType) -> std::io::Result<Input> {
    Ok(BufReader::with_capacity(
        64 * 1024,
        std::fs::File::open(&csv_type.file)?,
    ))
}

/// Opens the file past any BOM.
fn open(csv_type: &CsvType) -> std::io::Result<(rows::CsvReader<Input>, rows::Lines)> {
    rows::reader(input(csv_type)?, csv_type.format())
}

impl CsvType {
    fn format(&self) -> Format {
        Format {
            delimiter: self.delimiter,
            quote: self.quote,
            escape: self.escape,
        }
    }
}

fn read_header(csv_type: &CsvType) -> Option<Vec<String>> {
    let (mut reader, _) = open(csv_type).ok()?;
    let mut header = ByteRecord::new();
    reader.read_byte_record(&mut header).ok()?;
    header
        .iter()
        .map(|f| std::str::from_utf8(f).ok().map(str::to_string))
        .collect()
}

/// Reads one file on a blocking thread and feeds the stream.
struct RowReader {
    connector: String,
    object_type: String,
    csv_type: CsvType,
}

type Sender = mpsc::Sender<Result<SourceItem, ConnectorError>>;

impl RowReader {
    fn io_error(&self, message: String) -> ConnectorError {
        ConnectorError::Io {
            connector: self.connector.clone(),
            object: format!(
                "system/{}/{} ({})",
                self.connector,
                self.object_type,
                self.csv_type.file.display()
            ),
            message,
        }
    }

    fn run(self, sender: &Sender) {
        if let Err(error) = self.read(sender) {
            // The consumer may be gone already; then nobody needs the error.
            let _ = sender.blocking_send(Err(error));
        }
    }

    fn read(&self, sender: &Sender) -> Result<(), ConnectorError> {
        let input = input(&self.csv_type).map_err(|e| self.io_error(e.to_string()))?;
        let mut rows = Rows::open(input, self.csv_type.format(), &self.csv_type.uid_column)
            .map_err(|e| self.io_error(e.to_string()))?;
        while let Some(row) = rows.next_row().map_err(|e| self.io_error(e.to_string()))? {
            let item = match row {
                Row::Object {
                    uid,
                    attributes,
                    line,
                } => SourceItem::Object(ConnectorObject {
                    uid,
                    attributes,
                    line: Some(line),
                }),
                Row::Bad { line, uid, reason } => SourceItem::Bad(BadRecord { line, uid, reason }),
            };
            if sender.blocking_send(Ok(item)).is_err() {
                return Ok(()); // the consumer stopped reading (cancelled)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connector(dir: &Path, file_body: &[u8], extra: Value) -> CsvConnector {
        std::fs::write(dir.join("hr.csv"), file_body).unwrap();
        let mut employee = json!({"uidColumn": "uid"});
        if let (Some(e), Some(x)) = (employee.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        let body = json!({"connectorType": "csv", "file": "hr.csv", "objectTypes": {"employee": employee}});
        CsvConnector::from_config("csv", body.as_object().unwrap(), dir).unwrap()
    }

    async fn read(connector: &CsvConnector) -> Vec<SourceItem> {
        connector
            .query("employee")
            .map(|r| r.unwrap())
            .collect()
            .await
    }

    fn temp_dir() -> crate::scratch::Scratch {
        crate::scratch::Scratch::new("idm-csv")
    }

    fn object(item: &SourceItem) -> &ConnectorObject {
        match item {
            SourceItem::Object(o) => o,
            SourceItem::Bad(b) => panic!("unexpected bad row {b:?}"),
        }
    }

    fn bad(item: &SourceItem) -> &BadRecord {
        match item {
            SourceItem::Bad(b) => b,
            SourceItem::Object(o) => panic!("unexpected object {o:?}"),
        }
    }

    #[tokio::test]
    async fn the_cookbook_hr_file_reads_as_three_employees() {
        let dir = temp_dir();
        let csv = connector(&dir, b"uid,firstName,lastName,telephoneNumber\n123,Jon,Snow,5551234\n456,John,Doe,5554567\n789,Jane,Doe,5558901\n", json!({}));
        let items = read(&csv).await;
        assert_eq!(items.len(), 3);
        assert_eq!(object(&items[0]).uid, "123");
        assert_eq!(object(&items[0]).attributes["lastName"], "Snow");
        assert_eq!(object(&items[2]).line, Some(4));
        assert_eq!(
            csv.get("employee", "456")
                .await
                .unwrap()
                .unwrap()
                .attributes["firstName"],
            "John"
        );
        assert!(csv.get("employee", "999").await.unwrap().is_none());
        assert_eq!(
            csv.object_types()[0].attributes,
            ["uid", "firstName", "lastName", "telephoneNumber"]
        );
    }

    #[tokio::test]
    async fn bom_crlf_quotes_newlines_and_non_ascii_survive() {
        let dir = temp_dir();
        let body = "\u{FEFF}uid,name,note\r\n1,\"Snow, Jon\",\"line one\r\nline two\"\r\n2,Zoë Ŝtark,\"say \"\"hi\"\"\"\r\n";
        let items = read(&connector(&dir, body.as_bytes(), json!({}))).await;
        assert_eq!(object(&items[0]).attributes["name"], "Snow, Jon");
        assert_eq!(object(&items[0]).attributes["note"], "line one\r\nline two");
        assert_eq!(object(&items[1]).attributes["name"], "Zoë Ŝtark");
        assert_eq!(object(&items[1]).attributes["note"], "say \"hi\"");
        assert_eq!(
            object(&items[1]).line,
            Some(4),
            "the quoted newline moves the line count"
        );
    }

    #[tokio::test]
    async fn bad_rows_are_reported_by_line_and_the_read_goes_on() {
        let dir = temp_dir();
        let mut body = b"uid,firstName,lastName\n1,Jon,Snow\n2,John\n,Nobody,Here\n3,Bad,\xff\xfe\n1,Jon,Again\n4,Jane,Doe\n".to_vec();
        body.extend_from_slice(b"5,\"Unterminated,Quote\n");
        let items = read(&connector(&dir, &body, json!({}))).await;
        let reasons: Vec<(u64, &str)> = items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Bad(b) => Some((b.line, b.reason.as_str())),
                SourceItem::Object(_) => None,
            })
            .collect();
        assert_eq!(reasons[0], (3, "expected 3 fields, got 2"));
        assert_eq!(reasons[1], (4, "empty uid (column uid)"));
        assert_eq!(reasons[2], (5, "field 3 (lastName) is not valid UTF-8"));
        assert_eq!(reasons[3], (6, "duplicate uid \"1\" (first on line 2)"));
        let good: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Object(o) => Some(o.uid.as_str()),
                SourceItem::Bad(_) => None,
            })
            .collect();
        assert_eq!(good, ["1", "4"]);
        assert_eq!(
            bad(items.last().unwrap()).line,
            8,
            "an unterminated quote is reported too"
        );
    }

    #[tokio::test]
    async fn line_numbers_match_an_editor_with_crlf_and_blank_lines() {
        let dir = temp_dir();
        let items = read(&connector(
            &dir,
            b"uid,n\r\n1,a\r\n\r\n2,b\r\n3\r\n",
            json!({}),
        ))
        .await;
        assert_eq!(object(&items[0]).line, Some(2));
        assert_eq!(
            object(&items[1]).line,
            Some(4),
            "the blank line 3 still counts"
        );
        assert_eq!(bad(&items[2]).line, 5);
    }

    /// Fuzzing (csv_rows): the csv crate ends a record at a lone CR, the line
    /// count did not, so rows after one were reported on the header's line and
    /// a duplicate uid on the same "line" passed as a second object.
    #[tokio::test]
    async fn a_lone_carriage_return_ends_a_line() {
        let dir = temp_dir();
        let items = read(&connector(
            &dir,
            b"uid,n\r,x\r1,a\r1,b\r\n\r2,c\n",
            json!({}),
        ))
        .await;
        assert_eq!(bad(&items[0]).line, 2);
        assert_eq!(bad(&items[0]).reason, "empty uid (column uid)");
        assert_eq!(object(&items[1]).line, Some(3));
        assert_eq!(
            bad(&items[2]),
            &BadRecord {
                line: 4,
                uid: Some("1".into()),
                reason: "duplicate uid \"1\" (first on line 3)".into()
            }
        );
        assert_eq!(object(&items[3]).line, Some(6), "line 5 is blank");
        assert_eq!(items.len(), 4);
    }

    #[tokio::test]
    async fn delimiter_quote_and_escape_are_configurable() {
        let dir = temp_dir();
        let items = read(&connector(
            &dir,
            b"uid;name\n1;'O\\'Brien; Pat'\n",
            json!({"delimiter": ";", "quote": "'", "escape": "\\"}),
        ))
        .await;
        assert_eq!(object(&items[0]).attributes["name"], "O'Brien; Pat");
    }

    #[tokio::test]
    async fn problems_name_the_connector_and_the_object() {
        let dir = temp_dir();
        let csv = connector(&dir, b"id,name\n1,x\n", json!({}));
        let err = csv
            .query("employee")
            .next()
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connector csv") && err.contains("no \"uid\" column"),
            "{err}"
        );
        let err = csv
            .query("department")
            .next()
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no object type \"department\""), "{err}");
        let err = csv
            .create("employee", &Map::new())
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(err, "connector csv cannot create (system/csv/employee)");
        std::fs::remove_file(dir.join("hr.csv")).unwrap();
        let err = csv
            .query("employee")
            .next()
            .await
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("hr.csv"), "{err}");
    }

    #[tokio::test]
    async fn a_dropped_stream_stops_the_reader() {
        let dir = temp_dir();
        let mut body = String::from("uid,n\n");
        for n in 0..50_000 {
            body.push_str(&format!("{n},x\n"));
        }
        let csv = connector(&dir, body.as_bytes(), json!({}));
        let first: Vec<_> = csv.query("employee").take(10).collect().await;
        assert_eq!(first.len(), 10);
    }
}

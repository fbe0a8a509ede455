//! Rendering: tables, JSON, and errors on stderr.

use std::collections::BTreeSet;
use std::io::Write;

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use idm_proto::code_name;
use serde_json::{Map, Value as Json};
use tonic::Status;
use tonic_types::StatusExt;

/// How lists are printed. Single objects are always pretty JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table on stdout, counts and paging hints on stderr.
    Table,
    /// JSON on stdout.
    Json,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    /// No connection could be made.
    #[error("cannot reach idmd at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// Bad local input: unreadable `--data`, malformed JSON, a bad `--ttl`.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The server did what was asked and the answer is a failure (a
    /// connector that cannot reach its system).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn input(message: impl Into<String>) -> Self {
        Self::Input(message.into())
    }
}

/// The lines printed under an error: google.rpc details of a status.
pub fn error_details(error: &CliError) -> Vec<String> {
    let CliError::Status(status) = error else {
        return Vec::new();
    };
    let details = status.get_error_details();
    let mut lines = Vec::new();
    if let Some(info) = details.error_info() {
        match info.metadata.get("position") {
            Some(position) if info.reason == "FILTER_SYNTAX" => {
                lines.push(format!("at position {position}"));
            }
            _ => {
                let mut metadata: Vec<_> = info.metadata.iter().collect();
                metadata.sort();
                let metadata: Vec<String> =
                    metadata.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                lines.push(format!("reason {}{}", info.reason, metadata.concat()));
            }
        }
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            lines.push(format!(
                "field {}: {}",
                violation.field, violation.description
            ));
        }
    }
    if let Some(failure) = details.precondition_failure() {
        for violation in &failure.violations {
            lines.push(format!(
                "{} {}: {}",
                violation.r#type, violation.subject, violation.description
            ));
        }
    }
    lines
}

/// Prints an error to stderr: `idmctl: <CODE>: <message>`, then its details.
pub fn print_error(error: &CliError, hint: Option<&str>) {
    let mut stderr = std::io::stderr().lock();
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(stderr, "idmctl: {error}");
    for line in error_details(error) {
        let _ = writeln!(stderr, "  {line}");
    }
    if let Some(hint) = hint {
        let _ = writeln!(stderr, "  hint: {hint}");
    }
}

/// Writes `text` and a newline to stdout.
pub fn print_line(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// Writes a JSON value to stdout, pretty.
pub fn print_json(value: &Json) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::input(format!("encoding JSON: {e}")))?;
    print_line(&text)
}

/// A note on stderr (counts, paging hints), never mixed into the data on stdout.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `1 token`, `2 tokens`: the count note under a list.
pub fn count_note(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The paging footer: `3 of 10 (next page: <token>)`.
pub fn page_footer(shown: usize, total: i64, next_page_token: &str) -> String {
    if next_page_token.is_empty() {
        format!("{shown} of {total}")
    } else {
        format!("{shown} of {total} (next page: {next_page_token})")
    }
}

/// The footer of a page with no total: `4 executions (next page: <token>)`.
pub fn cursor_footer(count: &str, next_page_token: &str) -> String {
    if next_page_token.is_empty() {
        count.to_string()
    } else {
        format!("{count} (next page: {next_page_token})")
    }
}

/// The JSON form of a page with no total: `{"result", "nextPageToken"}`
/// (`nextPageToken` is null on the last page).
pub fn cursor_json(result: Vec<Json>, next_page_token: &str) -> Json {
    let mut page = page_json(result, 0, next_page_token);
    if let Some(page) = page.as_object_mut() {
        page.remove("totalSize");
    }
    page
}

/// The JSON form of one page of a list: `{"result", "totalSize", "nextPageToken"}`
/// (`nextPageToken` is null on the last page).
pub fn page_json(result: Vec<Json>, total: i64, next_page_token: &str) -> Json {
    let next = if next_page_token.is_empty() {
        Json::Null
    } else {
        Json::String(next_page_token.to_string())
    };
    serde_json::json!({ "result": result, "totalSize": total, "nextPageToken": next })
}

/// A table with the house style: UTF-8 borders, no colours, wrapped to the
/// terminal width when there is a terminal.
pub fn table<H: Into<String>>(headers: impl IntoIterator<Item = H>) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.into_iter().map(Into::into).collect::<Vec<String>>());
    table
}

/// A JSON value as a table cell: strings as they are, the rest as compact JSON.
pub fn cell(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Managed objects in Wren JSON form as a table: `_id`, `_rev`, then every
/// attribute present in any of them, sorted. `_meta` is left out.
pub fn objects_table(objects: &[Json]) -> Table {
    let empty = Map::new();
    let maps: Vec<&Map<String, Json>> = objects
        .iter()
        .map(|o| o.as_object().unwrap_or(&empty))
        .collect();
    let attributes: BTreeSet<&str> = maps
        .iter()
        .flat_map(|m| m.keys())
        .map(String::as_str)
        .filter(|k| !matches!(*k, "_id" | "_rev" | "_meta"))
        .collect();
    let columns: Vec<&str> = ["_id", "_rev"].into_iter().chain(attributes).collect();
    let mut table = table(columns.iter().copied());
    for map in maps {
        table.add_row(
            columns
                .iter()
                .map(|c| map.get(*c).map(cell).unwrap_or_default())
                .collect::<Vec<_>>(),
        );
    }
    table
}

/// A run's length for a table cell: `0.06s` under ten seconds, `42s` above.
pub fn duration_cell(millis: i64) -> String {
    if millis < 10_000 {
        format!("{:.2}s", millis as f64 / 1000.0)
    } else {
        format!("{}s", millis / 1000)
    }
}

/// A timestamp to the second, for table cells; empty when unset.
pub fn time_cell(time: Option<&prost_types::Timestamp>) -> String {
    time.map(|t| {
        prost_types::Timestamp {
            seconds: t.seconds,
            nanos: 0,
        }
        .to_string()
    })
    .unwrap_or_default()
}

/// A timestamp as JSON: RFC 3339, or null when unset.
pub fn time_json(time: Option<&prost_types::Timestamp>) -> Json {
    time.map_or(Json::Null, |t| Json::String(t.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use tonic::Code;
    use tonic_types::ErrorDetails;

    fn plain(table: &mut Table) -> String {
        table
            .set_content_arrangement(ContentArrangement::Disabled)
            .to_string()
    }

    #[test]
    fn objects_table_has_id_rev_then_sorted_attributes() {
        let objects = vec![
            json!({"_id": "a1", "_rev": "2", "userName": "alice", "sn": "Smith",
                   "_meta": {"created": "x"}}),
            json!({"_id": "b2", "_rev": "1", "userName": "bob", "roles": ["x", "y"], "age": 7}),
        ];
        let text = plain(&mut objects_table(&objects));
        let expected = "\
┌─────┬──────┬─────┬───────────┬───────┬──────────┐
│ _id ┆ _rev ┆ age ┆ roles     ┆ sn    ┆ userName │
╞═════╪══════╪═════╪═══════════╪═══════╪══════════╡
│ a1  ┆ 2    ┆     ┆           ┆ Smith ┆ alice    │
│ b2  ┆ 1    ┆ 7   ┆ [\"x\",\"y\"] ┆       ┆ bob      │
└─────┴──────┴─────┴───────────┴───────┴──────────┘";
        assert_eq!(text, expected);
    }

    #[test]
    fn empty_object_list_has_just_id_and_rev_columns() {
        let text = plain(&mut objects_table(&[]));
        assert!(text.contains("│ _id ┆ _rev │"), "{text}");
    }

    #[test]
    fn footer_mentions_the_next_page_only_when_there_is_one() {
        assert_eq!(page_footer(3, 3, ""), "3 of 3");
        assert_eq!(page_footer(2, 9, "abc"), "2 of 9 (next page: abc)");
        assert_eq!(page_json(vec![], 0, "")["nextPageToken"], Json::Null);
        let cursor = cursor_json(vec![Json::Null], "t");
        assert_eq!(cursor["nextPageToken"], "t");
        assert!(cursor.get("totalSize").is_none());
        assert_eq!(cursor_footer("2 entries", ""), "2 entries");
        assert_eq!(cursor_footer("2 entries", "t"), "2 entries (next page: t)");
        assert_eq!(count_note(1, "token"), "1 token");
        assert_eq!(count_note(0, "token"), "0 tokens");
    }

    #[test]
    fn filter_errors_show_the_position_and_bad_requests_the_fields() {
        let status = Status::with_error_details(
            Code::InvalidArgument,
            "invalid filter at position 9: expected a value",
            ErrorDetails::with_error_info(
                "FILTER_SYNTAX",
                "idm.v1",
                std::collections::HashMap::from([("position".into(), "9".into())]),
            ),
        );
        let error = CliError::Status(status);
        assert_eq!(
            error.to_string(),
            "INVALID_ARGUMENT: invalid filter at position 9: expected a value"
        );
        assert_eq!(error_details(&error), vec!["at position 9"]);

        let status = Status::with_error_details(
            Code::InvalidArgument,
            "userName: is required",
            ErrorDetails::with_bad_request_violation("userName", "is required"),
        );
        assert_eq!(
            error_details(&CliError::Status(status)),
            vec!["field userName: is required"]
        );
    }

    #[test]
    fn cells_are_plain_strings_or_compact_json() {
        assert_eq!(cell(&json!("x y")), "x y");
        assert_eq!(
            cell(&json!({"_ref": "managed/user/1"})),
            r#"{"_ref":"managed/user/1"}"#
        );
        assert_eq!(cell(&json!(null)), "null");
    }
}

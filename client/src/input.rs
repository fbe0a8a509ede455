//! Local input: `--data` (inline JSON, `@file` or `@-` for stdin), passwords
//! from stdin, `--fields` lists.

use std::io::{BufRead, IsTerminal, Read, Write};

use serde_json::{Map, Value as Json};

use crate::output::CliError;

/// Reads `--data`: inline JSON, `@path` for a file, `@-` for stdin.
pub fn read_data(arg: &str) -> Result<Json, CliError> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::input(format!("--data @-: reading stdin: {e}")))?;
            parse_json(&text, "stdin")
        }
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::input(format!("--data @{path}: {e}")))?;
            parse_json(&text, path)
        }
        None => parse_json(arg, "--data"),
    }
}

/// Reads `--data` that must be a JSON object (attributes, configurations).
pub fn read_object(arg: &str) -> Result<Map<String, Json>, CliError> {
    match read_data(arg)? {
        Json::Object(map) => Ok(map),
        other => Err(CliError::input(format!(
            "--data must be a JSON object, not {}",
            kind(&other)
        ))),
    }
}

fn parse_json(text: &str, origin: &str) -> Result<Json, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::input(format!("{origin}: not valid JSON: {e}")))
}

/// The JSON type of a value, in words.
pub fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Reads one line from stdin (without its line ending), prompting on stderr
/// when stdin is a terminal. Passwords never come from argv.
pub fn read_secret_line(prompt: &str) -> Result<String, CliError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
    }
    first_line(stdin.lock())
}

fn first_line(mut reader: impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .map_err(|e| CliError::input(format!("reading stdin: {e}")))?;
    if read == 0 {
        return Err(CliError::input(
            "expected the password on stdin; got nothing",
        ));
    }
    let trimmed = line.strip_suffix('\n').unwrap_or(&line);
    Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string())
}

/// `--fields a,b` as field-mask paths (blank entries dropped).
pub fn field_mask(fields: &[String]) -> Option<prost_types::FieldMask> {
    let paths: Vec<String> = fields
        .iter()
        .map(|f| f.trim())
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect();
    (!paths.is_empty()).then_some(prost_types::FieldMask { paths })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inline_data_is_parsed() {
        assert_eq!(read_data(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        let error = read_data("{oops").unwrap_err().to_string();
        assert!(error.starts_with("--data: not valid JSON"), "{error}");
    }

    #[test]
    fn at_file_data_is_read_from_the_file() {
        let path = std::env::temp_dir().join(format!("idmctl-data-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"userName": "snow", "tags": [1, 2]}"#).unwrap();
        let arg = format!("@{}", path.display());
        let data = read_object(&arg).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            Json::Object(data),
            json!({"userName": "snow", "tags": [1, 2]})
        );
    }

    #[test]
    fn missing_files_and_non_objects_are_reported() {
        let error = read_data("@/nonexistent/idmctl.json")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--data @/nonexistent/idmctl.json: "),
            "{error}"
        );
        let error = read_object("[1]").unwrap_err().to_string();
        assert_eq!(error, "--data must be a JSON object, not an array");
    }

    #[test]
    fn only_the_first_line_is_the_password() {
        assert_eq!(
            first_line(&b"FooBar123\r\nmore\n"[..]).unwrap(),
            "FooBar123"
        );
        assert_eq!(first_line(&b"no newline"[..]).unwrap(), "no newline");
        assert_eq!(first_line(&b"\n"[..]).unwrap(), "");
        assert!(first_line(&b""[..]).is_err());
    }

    #[test]
    fn field_masks_drop_blanks() {
        assert_eq!(field_mask(&[]), None);
        let mask = field_mask(&["sn".into(), " givenName ".into(), String::new()]).unwrap();
        assert_eq!(mask.paths, vec!["sn", "givenName"]);
    }
}

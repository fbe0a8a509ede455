//! `&{property}` substitution, as Wren's property resolver does it: a string
//! value of a conf file may hold `&{name}` or `&{name|default}` anywhere in
//! it. A name resolves, first found wins, from the environment (the name as
//! written, then upper-cased with `.` and `-` as `_`: `openidm.ldap.host` →
//! `OPENIDM_LDAP_HOST`), then `conf/boot/boot.properties`, then the project's
//! `resolver/boot.properties`, then `launcher.project.location` /
//! `launcher.install.location` / `launcher.working.location` (the project
//! directory), then the default after `|`. A name that resolves nowhere
//! stops start-up naming the file and the key. Substitution happens when the
//! file is read; `$env` references stay as they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ConfError, invalid};

/// The largest properties file read.
const MAX_PROPERTIES_BYTES: u64 = 1 << 20;
/// Substitutions in one string: a bound on what a value can expand into.
const MAX_SUBSTITUTIONS: usize = 64;

/// The names a conf tree may use.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    /// From the properties files, the first file's value winning.
    files: BTreeMap<String, String>,
    project: String,
    /// The environment to read instead of the process's (tests).
    environment: Option<BTreeMap<String, String>>,
}

impl Properties {
    /// Reads `<files>/boot/boot.properties` and `<project>/resolver/boot.properties`
    /// when they exist.
    pub fn load(project: &Path, files_dir: &Path) -> Result<Properties, ConfError> {
        let mut properties = Properties {
            files: BTreeMap::new(),
            project: project
                .canonicalize()
                .unwrap_or_else(|_| project.to_path_buf())
                .display()
                .to_string(),
            environment: None,
        };
        let candidates: [PathBuf; 2] = [
            files_dir.join("boot/boot.properties"),
            project.join("resolver/boot.properties"),
        ];
        for file in candidates.iter().filter(|f| f.is_file()) {
            let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            if size > MAX_PROPERTIES_BYTES {
                return Err(ConfError::Read {
                    file: file.display().to_string(),
                    message: format!("larger than {MAX_PROPERTIES_BYTES} bytes"),
                });
            }
            let text = std::fs::read_to_string(file).map_err(|e| ConfError::Read {
                file: file.display().to_string(),
                message: e.to_string(),
            })?;
            for (key, value) in parse(&text) {
                properties.files.entry(key).or_insert(value);
            }
        }
        Ok(properties)
    }

    /// Properties from text alone (tests).
    #[cfg(test)]
    pub fn from_text(text: &str, project: &str, environment: &[(&str, &str)]) -> Properties {
        Properties {
            files: parse(text).into_iter().collect(),
            project: project.to_string(),
            environment: Some(
                environment
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        match &self.environment {
            Some(environment) => environment.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        let upper: String = name
            .chars()
            .map(|c| match c {
                '.' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        self.env(name)
            .or_else(|| self.env(&upper))
            .or_else(|| self.files.get(name).cloned())
            .or_else(|| match name {
                "launcher.project.location"
                | "launcher.install.location"
                | "launcher.working.location" => Some(self.project.clone()),
                _ => None,
            })
    }

    /// Substitutes every `&{…}` in the string values of `value`, walking it
    /// with a stack (no recursion). `file` names the file in errors; the key
    /// is the JSON path of the value.
    pub fn substitute(&self, file: &Path, value: &mut Value) -> Result<(), ConfError> {
        let mut pending: Vec<(String, &mut Value)> = vec![(String::new(), value)];
        while let Some((at, value)) = pending.pop() {
            match value {
                Value::String(text) if text.contains("&{") => {
                    *text = self.expand(text).map_err(|m| invalid(file, &at, m))?;
                }
                Value::Object(map) => {
                    for (key, child) in map.iter_mut() {
                        let path = if at.is_empty() {
                            key.clone()
                        } else {
                            format!("{at}.{key}")
                        };
                        pending.push((path, child));
                    }
                }
                Value::Array(items) => {
                    for (index, child) in items.iter_mut().enumerate() {
                        pending.push((format!("{at}[{index}]"), child));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn expand(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        let mut count = 0;
        while let Some(start) = rest.find("&{") {
            count += 1;
            if count > MAX_SUBSTITUTIONS {
                return Err(format!("more than {MAX_SUBSTITUTIONS} &{{…}} in one value"));
            }
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| "an &{ without its closing }".to_string())?;
            let token = &after[..end];
            let (name, default) = match token.split_once('|') {
                Some((name, default)) => (name.trim(), Some(default)),
                None => (token.trim(), None),
            };
            if name.is_empty() {
                return Err("an empty &{} names no property".into());
            }
            let value = self
                .lookup(name)
                .or_else(|| default.map(str::to_string))
                .ok_or_else(|| {
                    format!(
                        "&{{{name}}} is not set (not in the environment, boot/boot.properties \
                         or resolver/boot.properties, and no &{{{name}|default}})"
                    )
                })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Java `.properties` text: `key=value`, `key: value` or `key value`; `#` and
/// `!` comments; a trailing `\` continues a line; `\t \n \r \f \\ \uXXXX`
/// escapes.
fn parse(text: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        let trailing = line.chars().rev().take_while(|c| *c == '\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        if let Some(entry) = split_entry(&logical) {
            entries.push(entry);
        }
        logical.clear();
    }
    if !logical.is_empty()
        && let Some(entry) = split_entry(&logical)
    {
        entries.push(entry);
    }
    entries
}

fn split_entry(line: &str) -> Option<(String, String)> {
    let mut key_end = line.len();
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                key_end = i;
                break;
            }
            _ => {}
        }
    }
    let key = unescape(&line[..key_end]);
    let mut value = line[key_end..].trim_start_matches([' ', '\t']);
    if let Some(stripped) = value.strip_prefix(['=', ':']) {
        value = stripped.trim_start_matches([' ', '\t']);
    }
    (!key.is_empty()).then(|| (key, unescape(value)))
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn properties_files_read_as_java_reads_them() {
        let text = "# comment\n! also\nopenidm.port.http=8080\nkey2 : spaced value\nkey3 plain\n\
                    long=one \\\n    two\nesc\\=aped=a\\tb\\u00e9\n";
        let parsed: BTreeMap<_, _> = parse(text).into_iter().collect();
        assert_eq!(parsed["openidm.port.http"], "8080");
        assert_eq!(parsed["key2"], "spaced value");
        assert_eq!(parsed["key3"], "plain");
        assert_eq!(parsed["long"], "one two");
        assert_eq!(parsed["esc=aped"], "a\tbé");
    }

    #[test]
    fn references_resolve_from_files_defaults_and_the_project() {
        let props = Properties::from_text(
            "ldap.host=ldap.example\nldap.port=389\n",
            "/srv/project",
            &[],
        );
        let mut doc = json!({
            "host": "&{ldap.host}",
            "url": "ldap://&{ldap.host}:&{ldap.port}",
            "file": "&{launcher.project.location}/data/hr.csv",
            "list": ["&{idm.test.unset.name|fallback}", 3],
            "plain": "no & here {}"
        });
        props.substitute(Path::new("p.json"), &mut doc).unwrap();
        assert_eq!(doc["host"], "ldap.example");
        assert_eq!(doc["url"], "ldap://ldap.example:389");
        assert_eq!(doc["file"], "/srv/project/data/hr.csv");
        assert_eq!(doc["list"][0], "fallback");
        assert_eq!(doc["plain"], "no & here {}");
    }

    #[test]
    fn the_environment_wins_under_both_spellings() {
        let env = [
            ("IDM_TEST_PROPS_UPPER_NAME", "from-env"),
            ("exact.name", "exact"),
        ];
        let props = Properties::from_text(
            "idm.test.props.upper.name=from-file\nexact.name=file\n",
            "/p",
            &env,
        );
        let mut doc = json!({"a": "&{idm.test.props.upper.name}", "b": "&{exact.name}"});
        props.substitute(Path::new("p.json"), &mut doc).unwrap();
        assert_eq!(doc["a"], "from-env");
        assert_eq!(doc["b"], "exact");
    }

    #[test]
    fn an_unknown_property_names_the_file_and_the_key() {
        let props = Properties::from_text("", "/p", &[]);
        let mut doc = json!({"configurationProperties": {"host": "&{idm.test.nowhere.set}"}});
        let err = props
            .substitute(Path::new("conf/provisioner.openicf-ldap.json"), &mut doc)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conf/provisioner.openicf-ldap.json")
                && err.contains("configurationProperties.host")
                && err.contains("&{idm.test.nowhere.set}"),
            "{err}"
        );
        let mut open = json!({"a": "&{never closed"});
        assert!(props.substitute(Path::new("x.json"), &mut open).is_err());
    }
}

//! Wren's script hooks on managed objects (`onCreate`, `postUpdate`, …).
//!
//! idm does not run them yet. Each one declared is named in the start-up
//! warning with what it would have run (the Wren built-in modules it
//! `require`s, or its `file`), so nothing is skipped silently.

use serde_json::Value;

/// The warning for one declared hook: `user.onCreate: …`.
pub fn describe(type_name: &str, hook: &str, declaration: &Value) -> String {
    let mut names: Vec<String> = Vec::new();
    if let Some(file) = declaration.get("file").and_then(Value::as_str) {
        names.push(file.to_string());
    }
    if let Some(source) = declaration.get("source").and_then(Value::as_str) {
        let mut rest = source;
        while let Some(start) = rest.find("require(") {
            rest = &rest[start + "require(".len()..];
            let quoted = rest.trim_start();
            let Some(quote) = quoted.chars().next().filter(|c| *c == '\'' || *c == '"') else {
                continue;
            };
            let inner = &quoted[1..];
            if let Some(end) = inner.find(quote) {
                let module = inner[..end].to_string();
                if !names.contains(&module) && names.len() < 8 {
                    names.push(module);
                }
            }
        }
    }
    let what = if names.is_empty() {
        "its inline script".to_string()
    } else {
        names.join(", ")
    };
    format!("{type_name}.{hook}: not run (idm does not run managed-object hooks); it names {what}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hook_is_named_with_the_wren_scripts_it_needs() {
        let hook = json!({"type": "text/javascript",
            "source": "require('ui/onCreateUser').setDefaultFields(object);require(\"roles/conditionalRoles\").x(object);require('ui/onCreateUser').y();"});
        assert_eq!(
            describe("user", "onCreate", &hook),
            "user.onCreate: not run (idm does not run managed-object hooks); it names ui/onCreateUser, roles/conditionalRoles"
        );
        let file = json!({"type": "text/javascript", "file": "roles/postOperation-roles.js"});
        assert!(describe("role", "postDelete", &file).contains("roles/postOperation-roles.js"));
    }
}

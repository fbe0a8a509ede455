//! What an account name and a password must be. Checked before anything is
//! hashed or stored; messages never quote a password.

/// The prefix of an account's resource name.
pub const PREFIX: &str = "internal/user/";
pub const MAX_NAME_CHARS: usize = 64;
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longer passwords are refused before hashing (argon2 work is bounded).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Names an account may not have: the audit trail's actor for IDM_ADMIN_TOKEN.
const RESERVED: &[&str] = &[crate::api::auth::BOOTSTRAP_ACTOR];

/// A broken rule: the field and what is wrong, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub message: String,
}

/// `internal/user/<name>` or `<name>` → `<name>`, checked.
pub fn account_name(given: &str) -> Result<&str, Violation> {
    let name = given.strip_prefix(PREFIX).unwrap_or(given);
    let violation = |message: String| Violation {
        field: "name",
        message,
    };
    if name.is_empty() {
        return Err(violation("an account name is required".into()));
    }
    if name.len() > MAX_NAME_CHARS {
        return Err(violation(format!(
            "an account name is at most {MAX_NAME_CHARS} characters"
        )));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err(violation(
            "an account name has only letters, digits and . _ @ -".into(),
        ));
    }
    if RESERVED.contains(&name) {
        return Err(violation(format!("\"{name}\" is reserved")));
    }
    Ok(name)
}

/// A new password: at least 8 characters, at most 1024 bytes.
pub fn new_password(password: &str) -> Result<(), Violation> {
    let violation = |message: String| Violation {
        field: "password",
        message,
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(violation(format!(
            "a password is at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(violation(format!(
            "a password must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_and_may_come_with_their_prefix() {
        assert_eq!(account_name("alice").unwrap(), "alice");
        assert_eq!(
            account_name("internal/user/a.b_c@d-e").unwrap(),
            "a.b_c@d-e"
        );
        assert_eq!(account_name(&"x".repeat(64)).unwrap().len(), 64);
        for bad in [
            "",
            "internal/user/",
            "a b",
            "a/b",
            "é",
            "bootstrap",
            &"x".repeat(65),
        ] {
            let v = account_name(bad).unwrap_err();
            assert_eq!(v.field, "name", "{bad}");
        }
    }

    #[test]
    fn passwords_are_eight_characters_to_1024_bytes_and_never_quoted() {
        assert!(new_password("12345678").is_ok());
        assert!(new_password("ééééééée").is_ok(), "characters, not bytes");
        let short = new_password("Secret1").unwrap_err();
        assert_eq!(short.message, "a password must be at least 8 characters");
        assert!(!short.message.contains("Secret1"));
        assert!(new_password(&"x".repeat(1024)).is_ok());
        let long = new_password(&"x".repeat(1025)).unwrap_err();
        assert_eq!(
            (long.field, long.message.as_str()),
            ("password", "a password is at most 1024 bytes")
        );
    }
}

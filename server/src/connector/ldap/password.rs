//! Passwords written as `{SSHA}` hashes, and checking a plaintext against
//! what the directory holds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// `{SSHA}` of a password: base64(SHA-1(password + salt) + salt), 8 random
/// salt bytes.
pub(super) fn ssha(password: &str) -> String {
    let salt: [u8; 8] = rand::random();
    let mut hasher = Sha1::new();
    hasher.update(password.as_bytes());
    hasher.update(salt);
    let mut bytes = hasher.finalize().to_vec();
    bytes.extend_from_slice(&salt);
    format!("{{SSHA}}{}", BASE64.encode(bytes))
}

/// Whether a value already is a `{SCHEME}` hash (written as it is).
pub(super) fn is_hashed(value: &str) -> bool {
    let upper = value
        .get(..7)
        .map(str::to_ascii_uppercase)
        .unwrap_or_default();
    upper.starts_with("{SSHA}")
        || upper.starts_with("{SHA}")
        || upper.starts_with("{CRYPT}")
        || upper.starts_with("{SSHA5")
        || upper.starts_with("{SHA5")
        || upper.starts_with("{ARGON")
        || upper.starts_with("{PBKDF")
}

/// Whether a stored `{SSHA}` / `{SHA}` hash (or cleartext) is this password.
pub(super) fn verify_password(stored: &str, password: &str) -> bool {
    let scheme_end = stored.find('}').filter(|_| stored.starts_with('{'));
    let Some(end) = scheme_end else {
        return bool::from(stored.as_bytes().ct_eq(password.as_bytes()));
    };
    let scheme = stored[1..end].to_ascii_uppercase();
    let Ok(decoded) = BASE64.decode(stored[end + 1..].trim()) else {
        return false;
    };
    match scheme.as_str() {
        "SSHA" if decoded.len() > 20 => {
            let (digest, salt) = decoded.split_at(20);
            let mut hasher = Sha1::new();
            hasher.update(password.as_bytes());
            hasher.update(salt);
            bool::from(hasher.finalize().as_slice().ct_eq(digest))
        }
        "SHA" if decoded.len() == 20 => {
            bool::from(Sha1::digest(password.as_bytes()).as_slice().ct_eq(&decoded))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssha_hashes_verify_and_match_slappasswd() {
        let hash = ssha("Secr3t!");
        assert!(hash.starts_with("{SSHA}"));
        assert_ne!(hash, ssha("Secr3t!"), "salted");
        assert!(verify_password(&hash, "Secr3t!"));
        assert!(!verify_password(&hash, "secr3t!"));
        // Made by `slappasswd -h {SSHA} -s secret` / `-h {SHA}`.
        assert!(verify_password(
            "{SSHA}XXsU0ZUUb2BfvTTYmdfYJ1/BXqI0tRcm",
            "secret"
        ));
        assert!(!verify_password(
            "{SSHA}XXsU0ZUUb2BfvTTYmdfYJ1/BXqI0tRcm",
            "secret2"
        ));
        assert!(verify_password(
            "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
            "secret"
        ));
        assert!(verify_password("plain", "plain"));
        assert!(!verify_password("{SSHA}not base64!", "x"));
        assert!(!verify_password("{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==", "secret"));
    }
}

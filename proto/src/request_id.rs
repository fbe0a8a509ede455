//! The request id that follows one call from a client through the gateway to
//! the core, its log lines and its audit entries: HTTP header `X-Request-Id`,
//! gRPC metadata `x-request-id`. An incoming id is kept only if it is 1–64
//! characters of `[A-Za-z0-9._:-]` (nothing a log or a header could be
//! forged with); otherwise the receiver makes its own (a UUIDv7).

/// The gRPC metadata key (HTTP/2 header names are lower case).
pub const METADATA_KEY: &str = "x-request-id";

/// The HTTP header, as clients write it.
pub const HEADER: &str = "X-Request-Id";

/// The longest id accepted from a client.
pub const MAX_LEN: usize = 64;

/// Whether `id` may be used as it came.
pub fn is_valid(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `incoming` if it is valid, else `make()`.
pub fn accept_or(incoming: Option<&str>, make: impl FnOnce() -> String) -> String {
    match incoming {
        Some(id) if is_valid(id) => id.to_string(),
        _ => make(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_ids_are_kept() {
        assert!(is_valid("abc-123"));
        assert!(is_valid("0192f1c4-7b5e-7c3a-9d1e-1a2b3c4d5e6f"));
        assert!(is_valid("a.b_c:d"));
        assert!(is_valid(&"x".repeat(64)));
        assert!(!is_valid(""));
        assert!(!is_valid(&"x".repeat(65)));
        assert!(!is_valid("a b"));
        assert!(!is_valid("a\nb"));
        assert!(!is_valid("é"));
        assert!(!is_valid("a\"b"));
        assert_eq!(accept_or(Some("ok-1"), || "new".into()), "ok-1");
        assert_eq!(accept_or(Some("no way"), || "new".into()), "new");
        assert_eq!(accept_or(None, || "new".into()), "new");
    }
}

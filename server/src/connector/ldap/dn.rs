//! DNs (RFC 4514): escaping values the way OpenLDAP prints them, splitting,
//! and comparing.

use super::check_attribute_name;

/// Escapes an attribute value for a DN the way OpenLDAP prints DNs back
/// (`\2C` for `,` …), so a uid built here equals the uid read later.
pub(crate) fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let escape = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=')
            || c.is_ascii_control()
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if escape {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Undoes `\XX` and `\c` escapes of a DN attribute value.
pub(super) fn unescape_dn_value(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(bytes[i + 1]);
                    i += 2;
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a uid is a DN (`attribute=value,…`) rather than a naming value
/// (which may contain `=` and `,` too).
pub(super) fn looks_like_dn(uid: &str) -> bool {
    let (rdn, _) = split_dn(uid);
    rdn.split_once('=')
        .is_some_and(|(attribute, _)| check_attribute_name(attribute.trim()).is_ok())
}

/// Splits a DN at its first unescaped comma: (first RDN, parent DN).
pub(super) fn split_dn(dn: &str) -> (&str, &str) {
    let mut escaped = false;
    for (i, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' | ';' => return (&dn[..i], dn[i + 1..].trim_start()),
            _ => {}
        }
    }
    (dn, "")
}

/// The RDNs of a DN, each `attribute=value` with value escapes undone.
fn dn_parts(dn: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let mut rest = dn.trim();
    while !rest.is_empty() {
        let (rdn, parent) = split_dn(rest);
        let (attribute, value) = rdn.split_once('=').unwrap_or((rdn, ""));
        let value = value.trim_start();
        // A trailing space is the value's only if escaped.
        let value = if value.ends_with("\\ ") {
            value
        } else {
            value.trim_end()
        };
        parts.push((attribute.trim().to_string(), unescape_dn_value(value)));
        rest = parent;
    }
    parts
}

/// A DN for comparing: attribute names and values lower-cased, spaces around
/// separators dropped, escapes in one form.
pub(crate) fn normalize_dn(dn: &str) -> String {
    dn_parts(dn)
        .into_iter()
        .map(|(a, v)| {
            format!(
                "{}={}",
                a.to_lowercase(),
                escape_dn_value(&v.to_lowercase())
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `dn` names an entry strictly below `base`: every RDN of it is a
/// plain `attribute=value` with a value, and its last RDNs are `base`'s. A
/// DN a mapping computes must stay inside the connector's tree.
pub(super) fn is_below(dn: &str, base: &str) -> bool {
    let parts = dn_parts(dn);
    let base = dn_parts(base);
    let well_formed = parts
        .iter()
        .all(|(a, v)| check_attribute_name(a).is_ok() && !v.is_empty());
    let normal = |(a, v): &(String, String)| (a.to_lowercase(), v.to_lowercase());
    well_formed
        && parts.len() > base.len()
        && parts[parts.len() - base.len()..]
            .iter()
            .map(normal)
            .eq(base.iter().map(normal))
}

pub(super) fn same_dn(a: &str, b: &str) -> bool {
    a == b || normalize_dn(a) == normalize_dn(b)
}

/// A configured DN in the form servers print: no spaces around `,` and `=`,
/// lower-case attribute names (`DC=Example, DC=org` → `dc=Example,dc=org`).
pub(super) fn tidy_dn(dn: &str) -> String {
    dn_parts(dn)
        .into_iter()
        .map(|(a, v)| format!("{}={}", a.to_lowercase(), escape_dn_value(&v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped_as_openldap_prints_them() {
        assert_eq!(escape_dn_value("jdoe"), "jdoe");
        assert_eq!(
            escape_dn_value(r#"a,b+c"d\e<f>g;h=i"#),
            r"a\2Cb\2Bc\22d\5Ce\3Cf\3Eg\3Bh\3Di"
        );
        assert_eq!(escape_dn_value("#lead and trail "), r"\23lead and trail\20");
        assert_eq!(escape_dn_value(" "), r"\20");
        assert_eq!(escape_dn_value("Zoë*(x)"), "Zoë*(x)");
        assert_eq!(escape_dn_value("a\nb"), r"a\0Ab");

        assert_eq!(unescape_dn_value(r"a\2Cb\,c\\d"), r"a,b,c\d");
        assert_eq!(split_dn(r"uid=a\,b,ou=x,dc=y"), (r"uid=a\,b", "ou=x,dc=y"));
        assert_eq!(split_dn("dc=org"), ("dc=org", ""));

        assert!(same_dn(
            "UID=JDoe , DC=Example,dc=org",
            "uid=jdoe,dc=example,dc=org"
        ));
        assert!(same_dn(r"cn=a\,b,dc=x", r"cn=a\2Cb,dc=x"));
        assert!(!same_dn("uid=a,dc=x", "uid=b,dc=x"));
        assert!(!same_dn(r"cn=a\,b,dc=x", "cn=a,b,dc=x"));
        assert_eq!(
            tidy_dn("OU=People, DC=Example , dc=org"),
            "ou=People,dc=Example,dc=org"
        );
    }

    #[test]
    fn only_dns_strictly_below_the_base_are_inside_it() {
        let base = "dc=example,dc=org";
        assert!(is_below("uid=jdoe,dc=example,dc=org", base));
        assert!(is_below("UID=jdoe, ou=People ,DC=Example,DC=org", base));
        assert!(is_below(r"cn=a\,b,dc=example,dc=org", base));
        for outside in [
            "dc=example,dc=org",
            "uid=jdoe,dc=other,dc=org",
            "cn=admin,dc=org",
            "uid=jdoe,dc=example,dc=org,dc=evil",
            r"uid=jdoe\,dc=example\,dc=org,dc=evil",
            "uid=jdoe,dc=examples,dc=org",
            "uid=,dc=example,dc=org",
            "uid=x,,dc=example,dc=org",
            "not a dn,dc=example,dc=org",
            "",
        ] {
            assert!(!is_below(outside, base), "{outside}");
        }
    }
}

//! SCIM filters as LDAP filters (RFC 4515).

use idm_proto::filter::{AttrPath, CompareOp, Filter, Value as FilterValue};

use super::check_attribute_name;

/// Escapes a filter assertion value: `*`, `(`, `)`, `\` and NUL as `\XX`.
pub(crate) fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// A SCIM filter as an LDAP filter; attribute names are the directory's own.
/// Value paths (`emails[…]`), sub-attributes and schema URNs have no LDAP
/// form and are refused.
pub(crate) fn ldap_filter(filter: &Filter) -> Result<String, String> {
    Ok(match filter {
        Filter::And(operands) => format!("(&{})", ldap_filters(operands)?),
        Filter::Or(operands) => format!("(|{})", ldap_filters(operands)?),
        Filter::Not(inner) => format!("(!{})", ldap_filter(inner)?),
        Filter::Present(path) => format!("({}=*)", filter_attribute(path)?),
        Filter::ValuePath(path, _) => {
            return Err(format!(
                "value filters ({path}[…]) have no LDAP equivalent: LDAP attributes have no sub-attributes"
            ));
        }
        Filter::Compare(path, op, value) => {
            let attribute = filter_attribute(path)?;
            let value = match value {
                FilterValue::Null => {
                    return match op {
                        CompareOp::Eq => Ok(format!("(!({attribute}=*))")),
                        CompareOp::Ne => Ok(format!("({attribute}=*)")),
                        _ => Err(format!(
                            "{attribute} {op} null: only eq and ne compare with null"
                        )),
                    };
                }
                FilterValue::Bool(true) => "TRUE".to_string(),
                FilterValue::Bool(false) => "FALSE".to_string(),
                FilterValue::Number(n) => n.to_string(),
                FilterValue::String(s) => escape_filter_value(s),
            };
            match op {
                CompareOp::Eq => format!("({attribute}={value})"),
                CompareOp::Ne => format!("(!({attribute}={value}))"),
                // An empty substring matches every value: presence.
                CompareOp::Co | CompareOp::Sw | CompareOp::Ew if value.is_empty() => {
                    format!("({attribute}=*)")
                }
                CompareOp::Co => format!("({attribute}=*{value}*)"),
                CompareOp::Sw => format!("({attribute}={value}*)"),
                CompareOp::Ew => format!("({attribute}=*{value})"),
                CompareOp::Ge => format!("({attribute}>={value})"),
                CompareOp::Le => format!("({attribute}<={value})"),
                CompareOp::Gt => format!("(&({attribute}>={value})(!({attribute}={value})))"),
                CompareOp::Lt => format!("(&({attribute}<={value})(!({attribute}={value})))"),
            }
        }
    })
}

/// The operands of an `&`/`|`, concatenated.
fn ldap_filters(operands: &[Filter]) -> Result<String, String> {
    let mut out = String::new();
    for operand in operands {
        out.push_str(&ldap_filter(operand)?);
    }
    Ok(out)
}

fn filter_attribute(path: &AttrPath) -> Result<&str, String> {
    if path.urn.is_some() {
        return Err(format!("{path}: schema URNs have no LDAP equivalent"));
    }
    if let Some(sub) = &path.sub_attr {
        return Err(format!(
            "{path}: LDAP attributes have no sub-attributes (.{sub})"
        ));
    }
    check_attribute_name(&path.attr)?;
    Ok(&path.attr)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scim_filters_translate_to_ldap_filters_with_escaped_values() {
        let ldap = |scim: &str| ldap_filter(&idm_proto::filter::parse(scim).unwrap());
        let cases = [
            (r#"uid eq "jdoe""#, "(uid=jdoe)"),
            (r#"uid ne "jdoe""#, "(!(uid=jdoe))"),
            (r#"cn co "oh""#, "(cn=*oh*)"),
            (r#"cn sw "Jo""#, "(cn=Jo*)"),
            (r#"cn ew "hn""#, "(cn=*hn)"),
            ("mail pr", "(mail=*)"),
            (
                "uidNumber gt 1000",
                "(&(uidNumber>=1000)(!(uidNumber=1000)))",
            ),
            ("uidNumber ge 1000", "(uidNumber>=1000)"),
            (
                "uidNumber lt 1000",
                "(&(uidNumber<=1000)(!(uidNumber=1000)))",
            ),
            ("uidNumber le 1000", "(uidNumber<=1000)"),
            ("active eq true", "(active=TRUE)"),
            ("mail eq null", "(!(mail=*))"),
            ("mail ne null", "(mail=*)"),
            (r#"cn co """#, "(cn=*)"),
            (
                r#"uid eq "a" and (cn sw "b" or not (mail pr))"#,
                "(&(uid=a)(|(cn=b*)(!(mail=*))))",
            ),
            (
                r#"description eq "a*(b)\\c""#,
                r"(description=a\2a\28b\29\5cc)",
            ),
            (r#"cn co "*""#, r"(cn=*\2a*)"),
        ];
        for (scim, expected) in cases {
            assert_eq!(ldap(scim).as_deref(), Ok(expected), "{scim}");
        }
        // A NUL cannot come from the parser's strings easily; build it.
        let nul = Filter::Compare(
            AttrPath {
                urn: None,
                attr: "cn".into(),
                sub_attr: None,
            },
            CompareOp::Eq,
            FilterValue::String("a\0b".into()),
        );
        assert_eq!(ldap_filter(&nul).unwrap(), r"(cn=a\00b)");

        for (scim, refusal) in [
            (r#"emails[type eq "work"]"#, "value filters"),
            (r#"name.givenName eq "x""#, "sub-attributes"),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "x""#,
                "schema URNs",
            ),
            (r#"_id eq "x""#, "not an LDAP attribute name"),
            ("uid gt null", "only eq and ne"),
        ] {
            let message = ldap(scim).unwrap_err();
            assert!(message.contains(refusal), "{scim}: {message}");
        }
    }
}

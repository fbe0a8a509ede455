//! Writes: JSON attributes as LDAP entries and modifications, the DN a new
//! entry gets, and create, update (with its rename), delete.

use std::collections::HashSet;

use ldap3::{LdapResult, Mod};
use serde_json::{Map, Value};

use super::connection::Retry;
use super::dn::{escape_dn_value, is_below, same_dn, split_dn, unescape_dn_value};
use super::password::{is_hashed, ssha};
use super::{LdapConnector, LdapType, PasswordHashing, check_attribute_name};
use crate::connector::ConnectorError;

impl LdapConnector {
    /// The attributes of a new entry, as LDAP value sets.
    fn entry_attributes(
        &self,
        object: &str,
        ldap_type: &LdapType,
        attributes: &Map<String, Value>,
    ) -> Result<Vec<(String, HashSet<String>)>, ConnectorError> {
        let mut entry = Vec::new();
        if !attributes
            .keys()
            .any(|k| k.eq_ignore_ascii_case("objectClass"))
        {
            entry.push((
                "objectClass".to_string(),
                ldap_type.object_classes.iter().cloned().collect(),
            ));
        }
        for (name, value) in attributes {
            if name.eq_ignore_ascii_case("dn") {
                continue;
            }
            let values = self.ldap_values(object, ldap_type, name, value)?;
            if !values.is_empty() {
                entry.push((name.clone(), values));
            }
        }
        Ok(entry)
    }

    /// One attribute's JSON value as the set of LDAP values to write: the
    /// password hashed, an empty member list as the placeholder.
    fn ldap_values(
        &self,
        object: &str,
        ldap_type: &LdapType,
        name: &str,
        value: &Value,
    ) -> Result<HashSet<String>, ConnectorError> {
        check_attribute_name(name).map_err(|m| self.rejected(object, m))?;
        let mut values: HashSet<String> = text_values(value)
            .map_err(|m| self.rejected(object, format!("{name}: {m}")))?
            .into_iter()
            .collect();
        if ldap_type.is_password(name) && self.hashing == PasswordHashing::Ssha {
            values = values
                .into_iter()
                .map(|v| if is_hashed(&v) { v } else { ssha(&v) })
                .collect();
        }
        if ldap_type.is_member(name)
            && let Some(placeholder) = &ldap_type.placeholder_member
        {
            values.retain(|v| !same_dn(v, placeholder));
            if values.is_empty() {
                values.insert(placeholder.clone());
            }
        }
        Ok(values)
    }

    /// The DN a new entry gets: its `dn`, else `<naming>=<value>,<type baseDn>`;
    /// refused unless it lies below the connector's `baseDn`.
    pub(super) fn dn_for(
        &self,
        ldap_type: &LdapType,
        attributes: &Map<String, Value>,
    ) -> Result<String, String> {
        let dn = self.wanted_dn(ldap_type, attributes)?;
        self.check_inside(&dn)?;
        Ok(dn)
    }

    /// A DN a write would create or move an entry to must lie below `baseDn`.
    fn check_inside(&self, dn: &str) -> Result<(), String> {
        if is_below(dn, &self.base_dn) {
            Ok(())
        } else {
            Err(format!(
                "dn \"{dn}\" is not below the connector's baseDn \"{}\"",
                self.base_dn
            ))
        }
    }

    fn wanted_dn(
        &self,
        ldap_type: &LdapType,
        attributes: &Map<String, Value>,
    ) -> Result<String, String> {
        if let Some((_, dn)) = attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("dn"))
        {
            return match dn {
                Value::String(dn) if !dn.trim().is_empty() => Ok(dn.clone()),
                _ => Err("dn must be a non-empty string".into()),
            };
        }
        let naming = &ldap_type.naming_attribute;
        let value = attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(naming))
            .map(|(_, v)| v)
            .ok_or_else(|| {
                format!("no dn and no {naming} (the naming attribute) to name the entry")
            })?;
        let value = match text_values(value)?.as_slice() {
            [one] if !one.is_empty() => one.clone(),
            _ => {
                return Err(format!(
                    "{naming} (the naming attribute) needs exactly one value"
                ));
            }
        };
        Ok(format!(
            "{naming}={},{}",
            escape_dn_value(&value),
            ldap_type.base_dn
        ))
    }

    pub(super) async fn create_entry(
        &self,
        object_type: &str,
        attributes: &Map<String, Value>,
    ) -> Result<String, ConnectorError> {
        let ldap_type = self.ldap_type(object_type)?;
        let dn = self
            .dn_for(ldap_type, attributes)
            .map_err(|m| self.rejected(&format!("system/{}/{object_type}", self.name), m))?;
        tracing::debug!(%dn, "LDAP add");
        let object = self.object_name(object_type, &dn);
        let entry = self.entry_attributes(&object, ldap_type, attributes)?;
        let timeout = self.timeout;
        self.run(&object, Retry::IfUnsent, |mut ldap| {
            let (dn, entry) = (dn.as_str(), entry.clone());
            async move {
                ldap.with_timeout(timeout)
                    .add(dn, entry)
                    .await
                    .and_then(LdapResult::success)
            }
        })
        .await?;
        self.uid_at(object_type, ldap_type, &dn).await
    }

    pub(super) async fn update_entry(
        &self,
        object_type: &str,
        uid: &str,
        changes: &Map<String, Value>,
    ) -> Result<String, ConnectorError> {
        let ldap_type = self.ldap_type(object_type)?;
        if changes.is_empty() {
            return Ok(uid.to_string());
        }
        let timeout = self.timeout;
        let current = self
            .dn_of(object_type, ldap_type, uid)
            .await?
            .ok_or_else(|| ConnectorError::NotFound {
                connector: self.name.clone(),
                object: self.object_name(object_type, uid),
            })?;
        let mut dn = current.clone();
        let mut renamed = false;

        if let Some(rename) = self.rename_for(ldap_type, &current, changes)? {
            let object = self.object_name(object_type, uid);
            self.run(&object, Retry::IfUnsent, |mut ldap| {
                let (rename, current) = (&rename, current.as_str());
                async move {
                    ldap.with_timeout(timeout)
                        .modifydn(current, &rename.rdn, true, rename.new_superior.as_deref())
                        .await
                        .and_then(LdapResult::success)
                }
            })
            .await?;
            tracing::debug!(from = %current, to = %rename.dn, "LDAP entry renamed");
            dn = rename.dn;
            renamed = true;
        }
        tracing::debug!(%dn, "LDAP modify");

        let object = self.object_name(object_type, &dn);
        let mut mods = Vec::new();
        for (name, value) in changes {
            if name.eq_ignore_ascii_case("dn") {
                continue;
            }
            // An empty set replaces the attribute with nothing: it goes, and
            // an attribute already absent is no error (RFC 4511 §4.6).
            mods.push(Mod::Replace(
                name.clone(),
                self.ldap_values(&object, ldap_type, name, value)?,
            ));
        }
        if !mods.is_empty() {
            self.run(&object, Retry::Always, |mut ldap| {
                let (dn, mods) = (dn.as_str(), mods.clone());
                async move {
                    ldap.with_timeout(timeout)
                        .modify(dn, mods)
                        .await
                        .and_then(LdapResult::success)
                }
            })
            .await?;
        }
        match &self.uid_attribute {
            None => Ok(dn),
            // The uid moves only if the change touched its attribute (a
            // uid named by `uid`, say); entryUUID never does.
            Some(attribute)
                if renamed || changes.keys().any(|k| k.eq_ignore_ascii_case(attribute)) =>
            {
                self.uid_at(object_type, ldap_type, &dn).await
            }
            Some(_) => Ok(uid.to_string()),
        }
    }

    /// The rename `changes` ask for, if any: a `dn` other than `uid`, or a
    /// new value of the naming attribute when it names the entry.
    fn rename_for(
        &self,
        ldap_type: &LdapType,
        uid: &str,
        changes: &Map<String, Value>,
    ) -> Result<Option<Rename>, ConnectorError> {
        let object = || format!("system/{}/{uid}", self.name);
        let (old_rdn, old_parent) = split_dn(uid);
        if let Some((_, new_dn)) = changes.iter().find(|(k, _)| k.eq_ignore_ascii_case("dn")) {
            let Some(new_dn) = new_dn.as_str().filter(|d| !d.trim().is_empty()) else {
                return Err(self.rejected(&object(), "dn must be a non-empty string"));
            };
            if same_dn(new_dn, uid) {
                return Ok(None);
            }
            self.check_inside(new_dn)
                .map_err(|m| self.rejected(&object(), m))?;
            let (rdn, parent) = split_dn(new_dn);
            return Ok(Some(Rename {
                rdn: rdn.to_string(),
                new_superior: (!same_dn(parent, old_parent)).then(|| parent.to_string()),
                dn: new_dn.to_string(),
            }));
        }
        let naming = &ldap_type.naming_attribute;
        let Some((_, wanted)) = changes.iter().find(|(k, _)| k.eq_ignore_ascii_case(naming)) else {
            return Ok(None);
        };
        let Some((rdn_attribute, rdn_value)) = old_rdn.split_once('=') else {
            return Ok(None);
        };
        if !rdn_attribute.trim().eq_ignore_ascii_case(naming) {
            // The entry is named by another attribute: a plain change.
            return Ok(None);
        }
        let new_value = match text_values(wanted)
            .map_err(|m| self.rejected(&object(), m))?
            .as_slice()
        {
            [one] if !one.is_empty() => one.clone(),
            _ => {
                return Err(self.rejected(
                    &object(),
                    format!("{naming} names the entry: it needs exactly one value"),
                ));
            }
        };
        if unescape_dn_value(rdn_value.trim()).to_lowercase() == new_value.to_lowercase() {
            return Ok(None);
        }
        let rdn = format!("{naming}={}", escape_dn_value(&new_value));
        let dn = if old_parent.is_empty() {
            rdn.clone()
        } else {
            format!("{rdn},{old_parent}")
        };
        Ok(Some(Rename {
            rdn,
            new_superior: None,
            dn,
        }))
    }

    pub(super) async fn delete_entry(
        &self,
        object_type: &str,
        uid: &str,
    ) -> Result<(), ConnectorError> {
        let ldap_type = self.ldap_type(object_type)?;
        let object = self.object_name(object_type, uid);
        let Some(dn) = self.dn_of(object_type, ldap_type, uid).await? else {
            // Already gone: what a delete wants.
            return Ok(());
        };
        let timeout = self.timeout;
        self.run(&object, Retry::Always, |mut ldap| {
            let dn = dn.clone();
            async move {
                let result = ldap.with_timeout(timeout).delete(&dn).await?;
                if result.rc == 32 {
                    // Already gone: what a delete wants.
                    return Ok(());
                }
                result.success().map(|_| ())
            }
        })
        .await
    }
}

struct Rename {
    rdn: String,
    new_superior: Option<String>,
    dn: String,
}

/// A JSON value as LDAP text values: strings as they are, numbers in JSON
/// form, booleans as LDAP's `TRUE`/`FALSE`; `null` and `[]` as no value.
pub(super) fn text_values(value: &Value) -> Result<Vec<String>, String> {
    fn one(value: &Value) -> Result<String, String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(true) => Ok("TRUE".into()),
            Value::Bool(false) => Ok("FALSE".into()),
            Value::Null | Value::Array(_) | Value::Object(_) => {
                Err("an LDAP value is a string, a number or a boolean".into())
            }
        }
    }
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .filter(|item| !item.is_null())
            .map(one)
            .collect(),
        other => one(other).map(|v| vec![v]),
    }
}

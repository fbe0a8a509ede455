//! Objects named by a uid attribute (`uidAttribute`, Wren's `entryUUID` by
//! default in its provisioner files) instead of their DN: a write first finds
//! the entry's DN by its uid, and a rename keeps the uid, so reconciliation
//! links survive it.

use super::{LdapConnector, LdapType};
use crate::connector::ConnectorError;

impl LdapConnector {
    /// The DN of the entry a uid names (`None`: no such entry). Without a
    /// uid attribute the uid is the DN, and so is a uid written as a DN.
    pub(super) async fn dn_of(
        &self,
        object_type: &str,
        ldap_type: &LdapType,
        uid: &str,
    ) -> Result<Option<String>, ConnectorError> {
        if self.uid_attribute.is_none() || super::dn::looks_like_dn(uid) {
            return Ok(Some(uid.to_string()));
        }
        Ok(self
            .read_one(object_type, ldap_type, uid)
            .await?
            .and_then(|object| {
                object
                    .attributes
                    .get("dn")
                    .and_then(|dn| dn.as_str())
                    .map(str::to_string)
            }))
    }

    /// The uid of the entry at `dn`, read back after a write created or
    /// renamed it (the DN itself without a uid attribute).
    pub(super) async fn uid_at(
        &self,
        object_type: &str,
        ldap_type: &LdapType,
        dn: &str,
    ) -> Result<String, ConnectorError> {
        if self.uid_attribute.is_none() {
            return Ok(dn.to_string());
        }
        match self.read_one(object_type, ldap_type, dn).await? {
            Some(object) => Ok(object.uid),
            None => Err(ConnectorError::Io {
                connector: self.name.clone(),
                object: self.object_name(object_type, dn),
                message: "written, but not found when read back for its uid".into(),
            }),
        }
    }
}

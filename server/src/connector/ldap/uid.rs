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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use futures::TryStreamExt;
    use idm_testkit::Slapd;
    use serde_json::{Map, Value, json};

    use crate::connector::{Connector, LdapConnector, SourceItem};

    fn connector(slapd: &Slapd, extra: Value) -> LdapConnector {
        let mut body = json!({
            "connectorType": "ldap", "url": slapd.url(), "baseDn": slapd.base_dn(),
            "bindDn": slapd.admin_dn(), "bindPassword": slapd.admin_password(),
            "uidAttribute": "entryUUID",
            "objectTypes": {"account": {"namingAttribute": "uid",
                "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                "passwordAttribute": "userPassword"}}
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        LdapConnector::from_config("ldap", body.as_object().unwrap(), Path::new(".")).unwrap()
    }

    fn account(uid: &str) -> Map<String, Value> {
        json!({"uid": uid, "cn": uid, "sn": uid})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[tokio::test]
    async fn an_entry_uuid_names_the_object_through_a_rename_and_a_move_of_its_dn() {
        let slapd = Slapd::start().unwrap();
        let c = connector(&slapd, json!({}));
        let base = slapd.base_dn().to_string();
        let uuid = c.create("account", &account("jdoe")).await.unwrap();
        assert!(
            uuid.len() == 36 && uuid.contains('-'),
            "an entryUUID: {uuid}"
        );
        let read = c.get("account", &uuid).await.unwrap().expect("read by uid");
        assert_eq!(read.uid, uuid);
        assert_eq!(read.attributes["dn"], json!(format!("uid=jdoe,{base}")));
        assert_eq!(read.attributes["entryUUID"], json!(uuid));
        // By DN too (what uid_for gives provisioning).
        let by_dn = c.get("account", &format!("uid=jdoe,{base}")).await.unwrap();
        assert_eq!(by_dn.map(|o| o.uid), Some(uuid.clone()));

        // Renamed by its naming attribute, then by a dn: the uid stays.
        let changes = json!({"uid": "jsmith", "cn": "jsmith"})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(c.update("account", &uuid, &changes).await.unwrap(), uuid);
        let read = c.get("account", &uuid).await.unwrap().unwrap();
        assert_eq!(read.attributes["dn"], json!(format!("uid=jsmith,{base}")));
        let dn = json!({"dn": format!("uid=js,{base}")})
            .as_object()
            .cloned()
            .unwrap();
        assert_eq!(c.update("account", &uuid, &dn).await.unwrap(), uuid);
        let read = c.get("account", &uuid).await.unwrap().unwrap();
        assert_eq!(read.attributes["dn"], json!(format!("uid=js,{base}")));
        assert_eq!(read.attributes["entryUUID"], json!(uuid));

        let listed: Vec<String> = c
            .query("account")
            .map_ok(|item| match item {
                SourceItem::Object(o) => o.uid,
                SourceItem::Bad(b) => b.reason,
            })
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed, std::slice::from_ref(&uuid));
        c.delete("account", &uuid).await.unwrap();
        assert_eq!(c.get("account", &uuid).await.unwrap(), None);
        c.delete("account", &uuid).await.unwrap();
        let missing = c.update("account", &uuid, &account("x")).await.unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }

    #[tokio::test]
    async fn a_type_search_filter_narrows_its_entries() {
        let slapd = Slapd::start().unwrap();
        let all = connector(&slapd, json!({}));
        let staff = connector(
            &slapd,
            json!({"objectTypes": {"account": {"namingAttribute": "uid",
                "objectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
                "searchFilter": "(employeeType=staff)"}}}),
        );
        let mut one = account("a");
        one.insert("employeeType".into(), json!("staff"));
        let a = all.create("account", &one).await.unwrap();
        all.create("account", &account("b")).await.unwrap();
        let listed: Vec<String> = staff
            .query("account")
            .map_ok(|item| match item {
                SourceItem::Object(o) => o.uid,
                SourceItem::Bad(b) => b.reason,
            })
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed, [a]);
    }
}

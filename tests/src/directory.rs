//! Looking at a real slapd the way an operator would: through OpenLDAP's own
//! command-line tools (ldapsearch, ldapwhoami, ldapmodify, ldapdelete), so a
//! test sees what any LDAP client sees.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
pub use idm_testkit::Slapd;

/// An entry: its DN and attribute values (names lower-cased).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub dn: String,
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl Entry {
    /// The first value of an attribute, if any.
    pub fn get(&self, attribute: &str) -> Option<&str> {
        self.attributes
            .get(&attribute.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    pub fn values(&self, attribute: &str) -> Vec<String> {
        self.attributes
            .get(&attribute.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }
}

/// Entries under the base DN matching an LDAP filter, as the admin sees them.
pub fn search(slapd: &Slapd, filter: &str) -> Vec<Entry> {
    let output = Command::new("ldapsearch")
        .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &slapd.url()])
        .args(["-D", slapd.admin_dn(), "-w", slapd.admin_password()])
        .args(["-b", slapd.base_dn(), filter, "*", "+"])
        .output()
        .expect("ldapsearch runs (apt-get install -y ldap-utils)");
    // 32 noSuchObject: nothing there.
    assert!(
        output.status.success() || output.status.code() == Some(32),
        "ldapsearch {filter}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_ldif(&String::from_utf8_lossy(&output.stdout))
}

/// The one entry with this uid, if any.
pub fn account(slapd: &Slapd, uid: &str) -> Option<Entry> {
    let mut found = search(slapd, &format!("(&(objectClass=inetOrgPerson)(uid={uid}))"));
    assert!(found.len() <= 1, "two entries for uid={uid}: {found:?}");
    found.pop()
}

/// Whether a simple bind with these credentials succeeds.
pub fn can_bind(slapd: &Slapd, dn: &str, password: &str) -> bool {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], slapd.port()));
    idm_testkit::simple_bind(address, dn, password).expect("ldapwhoami runs") == 0
}

/// Applies an LDIF change as the admin (`ldapmodify`), as an operator editing by hand.
pub fn modify(slapd: &Slapd, ldif: &str) {
    let mut child = Command::new("ldapmodify")
        .args(["-x", "-H", &slapd.url(), "-D", slapd.admin_dn()])
        .args(["-w", slapd.admin_password()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ldapmodify runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(ldif.as_bytes())
        .expect("ldif written");
    let output = child.wait_with_output().expect("ldapmodify ends");
    assert!(
        output.status.success(),
        "ldapmodify: {}\n{ldif}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes an entry as the admin.
pub fn delete(slapd: &Slapd, dn: &str) {
    let output = Command::new("ldapdelete")
        .args(["-x", "-H", &slapd.url(), "-D", slapd.admin_dn()])
        .args(["-w", slapd.admin_password(), dn])
        .output()
        .expect("ldapdelete runs");
    assert!(
        output.status.success(),
        "ldapdelete {dn}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `ldapsearch -LLL -o ldif-wrap=no` output → entries.
fn parse_ldif(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for block in text.split("\n\n") {
        let mut dn = None;
        let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in block
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (name, value) = if let Some((name, encoded)) = line.split_once(":: ") {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_default();
                (name, String::from_utf8_lossy(&bytes).into_owned())
            } else if let Some((name, value)) = line.split_once(": ") {
                (name, value.to_string())
            } else if let Some(name) = line.strip_suffix(':') {
                (name, String::new())
            } else {
                continue;
            };
            if name.eq_ignore_ascii_case("dn") {
                dn = Some(value);
            } else {
                attributes
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .push(value);
            }
        }
        if let Some(dn) = dn {
            entries.push(Entry { dn, attributes });
        }
    }
    entries
}

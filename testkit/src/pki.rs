//! A throwaway certificate authority for TLS tests (rcgen, no system tool):
//! server certificates for slapd, idmd and the gateway that a client trusts
//! only when handed the CA.

// Test set-up only: a CA that cannot be made is a broken machine, and the
// test using it should stop right there with the reason.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM files of one issued certificate, written under a test's directory.
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA certificate (what a client passes as `--ca`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate in DER, for a rustls root store.
    pub fn der(&self) -> Vec<u8> {
        self.issuer.der().to_vec()
    }

    /// A server certificate for `names` (DNS names or IP addresses):
    /// `(certificate PEM, key PEM)`.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "idm test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA as `<dir>/ca.pem` and returns its path.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// Issues a certificate for `names` and writes `<dir>/<stem>.crt` and
    /// `<dir>/<stem>.key`.
    pub fn write_issued(&self, dir: &Path, stem: &str, names: &[&str]) -> IssuedFiles {
        let (cert, key) = self.issue(names);
        let files = IssuedFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert).unwrap();
        write_private(&files.key, &key).unwrap();
        files
    }
}

/// A key file readable by its owner only, as servers expect.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

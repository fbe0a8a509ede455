//! The idm backup file: an envelope around the store's SurrealQL export, so a
//! truncated, altered or foreign file is refused before anything is written.
//!
//! ```text
//! {"format":"idm-backup","version":1,"schema_version":5,…}\n   header line
//! <the export: N bytes of SurrealQL>
//! \n{"format":"idm-backup-end","bytes":N,"sha256":"<hex>"}\n   trailer line
//! ```
//!
//! The digest covers exactly the N bytes between the header's newline and the
//! newline before the trailer. idmd writes it ([`Sealer`]), `idmctl backup`
//! checks it before it keeps a file and `idmd restore` before it opens the
//! store ([`Verifier`]); both read it as a stream, holding at most a line.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `format` of the header line.
pub const FORMAT: &str = "idm-backup";
/// `format` of the trailer line.
pub const END_FORMAT: &str = "idm-backup-end";
/// The envelope's own version (not the store's schema).
pub const VERSION: u32 = 1;
/// Longest header line accepted, newline included.
pub const MAX_HEADER: usize = 4096;
/// Longest trailer line accepted, newlines included.
const MAX_TRAILER: usize = 512;

/// The first line of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// The store's schema version when it was exported.
    pub schema_version: i64,
    /// The fingerprint of the key its secrets are sealed under (never the key).
    pub key_fingerprint: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub idmd_version: String,
}

/// The last line of a backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    pub format: String,
    /// Bytes of the export between the header and the trailer.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of those bytes.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not an idm backup file: {0}")]
    Foreign(String),
    #[error("the backup file is incomplete: {0}")]
    Truncated(String),
    #[error("the backup file is damaged: {0}")]
    Damaged(String),
    #[error("the backup file is format version {found}; this idm reads version {VERSION}")]
    Version { found: u32 },
}

impl Header {
    pub fn new(
        schema_version: i64,
        key_fingerprint: &str,
        created: &str,
        idmd_version: &str,
    ) -> Self {
        Header {
            format: FORMAT.into(),
            version: VERSION,
            schema_version,
            key_fingerprint: key_fingerprint.into(),
            created: created.into(),
            idmd_version: idmd_version.into(),
        }
    }
}

/// Writes the envelope around an export streamed through it.
pub struct Sealer {
    digest: Sha256,
    bytes: u64,
}

impl Default for Sealer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sealer {
    pub fn new() -> Self {
        Sealer {
            digest: Sha256::new(),
            bytes: 0,
        }
    }

    /// The header line, newline included.
    pub fn header_line(header: &Header) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        let mut line = serde_json::to_vec(header).unwrap_or_default();
        line.push(b'\n');
        line
    }

    /// Counts export bytes on their way out.
    pub fn body(&mut self, chunk: &[u8]) {
        self.digest.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// The trailer, with the newline that ends the export before it.
    pub fn trailer(self) -> Vec<u8> {
        let trailer = Trailer {
            format: END_FORMAT.into(),
            bytes: self.bytes,
            sha256: hex(&self.digest.finalize()),
        };
        let mut line = vec![b'\n'];
        line.extend(serde_json::to_vec(&trailer).unwrap_or_default());
        line.push(b'\n');
        line
    }
}

/// Checks a backup file read as a stream, handing on the export's bytes once
/// they are known to be export (not the trailer).
pub struct Verifier {
    header: Option<Header>,
    /// The header line so far (until its newline).
    head: Vec<u8>,
    /// The last bytes seen, held back: the trailer is among them.
    tail: Vec<u8>,
    digest: Sha256,
    bytes: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

/// A backup file that checked out.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub trailer: Trailer,
}

impl Verifier {
    pub fn new() -> Self {
        Verifier {
            header: None,
            head: Vec::new(),
            tail: Vec::new(),
            digest: Sha256::new(),
            bytes: 0,
        }
    }

    /// The header, once its line has been read.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Takes the next bytes of the file; appends to `body` the export bytes
    /// now known not to be the trailer. Fails as soon as the header is wrong.
    pub fn update(&mut self, mut chunk: &[u8], body: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        if self.header.is_none() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let take = newline.map_or(chunk.len(), |i| i + 1);
            if self.head.len() + take > MAX_HEADER {
                return Err(EnvelopeError::Foreign(
                    "its first line is not an idm backup header".into(),
                ));
            }
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if newline.is_none() {
                return Ok(());
            }
            self.header = Some(parse_header(&self.head)?);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * MAX_TRAILER {
            let release = self.tail.len() - MAX_TRAILER;
            self.digest.update(&self.tail[..release]);
            self.bytes += release as u64;
            body.extend_from_slice(&self.tail[..release]);
            self.tail.drain(..release);
        }
        Ok(())
    }

    /// Ends the file: checks the trailer, the byte count and the digest, and
    /// appends the last export bytes to `body`.
    pub fn finish(mut self, body: &mut Vec<u8>) -> Result<Verified, EnvelopeError> {
        let Some(header) = self.header.take() else {
            return Err(if self.head.is_empty() {
                EnvelopeError::Foreign("the file is empty".into())
            } else {
                EnvelopeError::Foreign("its first line is not an idm backup header".into())
            });
        };
        let missing =
            || EnvelopeError::Truncated("its last line is not the backup's trailer".into());
        // `…export\n{trailer}\n`: the trailer is between the last two newlines.
        let Some(without_end) = self.tail.strip_suffix(b"\n") else {
            return Err(missing());
        };
        let Some(split) = without_end.iter().rposition(|b| *b == b'\n') else {
            return Err(missing());
        };
        let trailer: Trailer =
            serde_json::from_slice(&without_end[split + 1..]).map_err(|_| missing())?;
        if trailer.format != END_FORMAT {
            return Err(missing());
        }
        let last = &without_end[..split];
        self.digest.update(last);
        self.bytes += last.len() as u64;
        body.extend_from_slice(last);
        if self.bytes != trailer.bytes {
            return Err(if self.bytes < trailer.bytes {
                EnvelopeError::Truncated(format!(
                    "{} bytes of export where the trailer says {}",
                    self.bytes, trailer.bytes
                ))
            } else {
                EnvelopeError::Damaged(format!(
                    "{} bytes of export where the trailer says {}",
                    self.bytes, trailer.bytes
                ))
            });
        }
        if hex(&self.digest.finalize()) != trailer.sha256 {
            return Err(EnvelopeError::Damaged(
                "its SHA-256 is not the one its trailer records".into(),
            ));
        }
        Ok(Verified { header, trailer })
    }
}

fn parse_header(line: &[u8]) -> Result<Header, EnvelopeError> {
    let foreign = || EnvelopeError::Foreign("its first line is not an idm backup header".into());
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|_| foreign())?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(foreign());
    }
    let version = value.get("version").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(VERSION)) {
        return Err(EnvelopeError::Version {
            found: version.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        });
    }
    serde_json::from_value(value).map_err(|_| foreign())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sealed(body: &[u8]) -> Vec<u8> {
        let header = Header::new(5, "abc", "2026-01-01T00:00:00Z", "0.1.0");
        let mut file = Sealer::header_line(&header);
        let mut sealer = Sealer::new();
        for piece in body.chunks(7) {
            sealer.body(piece);
            file.extend_from_slice(piece);
        }
        file.extend(sealer.trailer());
        file
    }

    fn verify(file: &[u8], chunk: usize) -> Result<(Verified, Vec<u8>), EnvelopeError> {
        let mut verifier = Verifier::new();
        let mut body = Vec::new();
        for piece in file.chunks(chunk) {
            verifier.update(piece, &mut body)?;
        }
        let verified = verifier.finish(&mut body)?;
        Ok((verified, body))
    }

    #[test]
    fn a_sealed_export_verifies_and_yields_exactly_its_bytes() {
        let big: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("{i};\n").into_bytes())
            .collect();
        for body in [b"".to_vec(), b"x".to_vec(), b"line\n\n".to_vec(), big] {
            let file = sealed(&body);
            for chunk in [1, 3, 64, 1000, 1 << 20] {
                let (verified, out) = verify(&file, chunk).unwrap();
                assert_eq!(out, body, "chunk {chunk}");
                assert_eq!(verified.header.schema_version, 5);
                assert_eq!(verified.trailer.bytes, body.len() as u64);
            }
        }
    }

    #[test]
    fn truncated_altered_and_foreign_files_are_refused() {
        let body: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("{i};\n").into_bytes())
            .collect();
        let file = sealed(&body);
        for cut in [1, 10, file.len() / 2, file.len() - 1, file.len() - 30] {
            assert!(verify(&file[..cut], 100).is_err(), "cut at {cut}");
        }
        for at in [200, file.len() / 2, file.len() - 400] {
            let mut changed = file.clone();
            changed[at] ^= 0x01;
            assert!(
                matches!(verify(&changed, 100), Err(EnvelopeError::Damaged(_))),
                "byte {at}"
            );
        }
        assert!(matches!(
            verify(b"-- SurrealQL\nINSERT ...\n", 8),
            Err(EnvelopeError::Foreign(_))
        ));
        assert!(matches!(verify(b"", 8), Err(EnvelopeError::Foreign(_))));
        assert!(matches!(
            verify(&vec![b'{'; 10_000], 100),
            Err(EnvelopeError::Foreign(_))
        ));
        let newer =
            String::from_utf8(file.clone())
                .unwrap()
                .replacen("\"version\":1", "\"version\":2", 1);
        assert_eq!(
            verify(newer.as_bytes(), 50).unwrap_err(),
            EnvelopeError::Version { found: 2 }
        );
    }
}

//! Secret handling for private properties: an argon2 hash to verify a
//! password, and an AES-256-GCM sealed copy so a later provisioning step (an
//! LDAP `userPassword`) can recover it. Neither form is ever returned by an API.
//!
//! The [`SecretBox`] holds the current key and, while a rotation re-seals the
//! store (see `keys/`), the previous one: seals use the current key, opens try
//! both. Which key a store expects is checked at start by `keys::KeyManager`.
//!
//! argon2id is memory-hard on purpose (~19 MiB a call): every hash and verify
//! takes a permit of one process-wide semaphore sized to the cores first, so
//! no burst of requests can multiply that by the number of callers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, RwLock};

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Env var holding the base64 of a 32-byte key; wins over the key file.
pub const KEY_ENV: &str = "IDM_ENCRYPTION_KEY";

/// Domain separation for key fingerprints: the fingerprint is
/// `hex(SHA-256(FINGERPRINT_LABEL || key))`. The key is 256 random bits, so
/// the digest names it without helping anyone recover it.
const FINGERPRINT_LABEL: &[u8] = b"idm key fingerprint v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("encryption key from {source_name}: {reason}")]
    BadKey { source_name: String, reason: String },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("a sealed secret could not be opened (wrong encryption key?)")]
    Unseal,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Where the encryption key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `IDM_ENCRYPTION_KEY`.
    Env,
    /// The key file (`--key-file`).
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env => write!(f, "{KEY_ENV}"),
            KeySource::File(path) => write!(f, "the key file {}", path.display()),
        }
    }
}

/// 32 bytes of AES-256 key. Debug shows the fingerprint only.
#[derive(Clone)]
pub struct KeyMaterial(Key<Aes256Gcm>);

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({})", self.fingerprint())
    }
}

impl KeyMaterial {
    pub fn generate() -> Self {
        KeyMaterial(Aes256Gcm::generate_key(OsRng))
    }

    /// The base64 of 32 bytes; errors name `source_name`, never the text.
    pub fn from_base64(encoded: &str, source_name: &str) -> Result<Self, SecretError> {
        let bad = |reason: &str| SecretError::BadKey {
            source_name: source_name.to_string(),
            reason: reason.to_string(),
        };
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|_| bad("not base64"))?;
        if bytes.len() != 32 {
            return Err(bad("expected 32 bytes (base64 of an AES-256 key)"));
        }
        Ok(KeyMaterial(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// The key in a key file; `None` if there is no such file.
    pub fn read_file(path: &Path) -> Result<Option<Self>, SecretError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_base64(&text, &shown).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretError::KeyFile {
                path: shown,
                reason: e.to_string(),
            }),
        }
    }

    /// Writes the key to a new file (mode 0600), flushed to disk; fails if
    /// the file exists.
    pub fn write_new_file(&self, path: &Path) -> Result<(), SecretError> {
        write_private_file(path, &BASE64.encode(self.0)).map_err(|e| SecretError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// `hex(SHA-256("idm key fingerprint v1\0" || key))`: names the key in
    /// the store, logs and messages.
    pub fn fingerprint(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(FINGERPRINT_LABEL);
        digest.update(self.0);
        digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

struct SealingKey {
    cipher: Aes256Gcm,
    fingerprint: String,
}

impl SealingKey {
    fn new(material: &KeyMaterial) -> Arc<Self> {
        Arc::new(SealingKey {
            cipher: Aes256Gcm::new(&material.0),
            fingerprint: material.fingerprint(),
        })
    }

    fn open(&self, nonce: &[u8], ciphertext: &[u8]) -> Option<String> {
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .ok()?;
        String::from_utf8(plaintext).ok()
    }
}

struct Keys {
    current: Arc<SealingKey>,
    /// The key being rotated away from, until every value is re-sealed.
    previous: Option<Arc<SealingKey>>,
}

/// Which key a sealed value opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedWith {
    Current,
    Previous,
}

/// The server's encryption key(s) and the operations on secrets. Shared as
/// `Arc<SecretBox>`; a rotation swaps keys in place.
pub struct SecretBox {
    source: KeySource,
    keys: RwLock<Keys>,
    /// Held (shared) by a write from sealing a value until it is committed;
    /// taken exclusively to switch keys, so once the switch returns every
    /// value sealed under the old key is in the store for the re-seal to find.
    writes: tokio::sync::RwLock<()>,
}

/// See [`SecretBox::hold`].
pub struct KeyHold<'a>(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>);

impl SecretBox {
    pub fn new(source: KeySource, key: &KeyMaterial) -> Self {
        SecretBox {
            source,
            keys: RwLock::new(Keys {
                current: SealingKey::new(key),
                previous: None,
            }),
            writes: tokio::sync::RwLock::new(()),
        }
    }

    /// Uses `IDM_ENCRYPTION_KEY` if set, else the key file, creating it (mode
    /// 0600) with a fresh random key if missing. No check against a store:
    /// idmd starts through `keys::KeyManager::open`, which refuses a key the
    /// store does not expect.
    pub fn load_or_create(key_file: &Path, env_key: Option<&str>) -> Result<Self, SecretError> {
        if let Some(encoded) = env_key {
            return Ok(Self::new(
                KeySource::Env,
                &KeyMaterial::from_base64(encoded, KEY_ENV)?,
            ));
        }
        let source = KeySource::File(key_file.to_path_buf());
        if let Some(key) = KeyMaterial::read_file(key_file)? {
            return Ok(Self::new(source, &key));
        }
        let key = KeyMaterial::generate();
        key.write_new_file(key_file)?;
        tracing::info!(key_file = %key_file.display(), "generated a new encryption key");
        Ok(Self::new(source, &key))
    }

    /// A key made for one test, in memory only: no key file left behind.
    #[cfg(test)]
    pub fn ephemeral() -> Self {
        Self::new(KeySource::Env, &KeyMaterial::generate())
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The fingerprint of the key new seals use.
    pub fn fingerprint(&self) -> String {
        self.read_keys().current.fingerprint.clone()
    }

    /// The fingerprint of the key being rotated away from, if any.
    pub fn previous_fingerprint(&self) -> Option<String> {
        self.read_keys()
            .previous
            .as_ref()
            .map(|k| k.fingerprint.clone())
    }

    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Held by a write from the moment it seals a value until the value is
    /// committed: a key switch waits for such writes, so a value sealed under
    /// the old key cannot land in the store after the re-seal began. Take it
    /// once per write (a second take can wait behind a pending switch).
    pub async fn hold(&self) -> KeyHold<'_> {
        KeyHold(self.writes.read().await)
    }

    /// Makes `next` the key for new seals and keeps the current one for opens
    /// (the start of a rotation). Returns once no write holds a value sealed
    /// under the old key uncommitted.
    pub async fn switch_to(&self, next: &KeyMaterial) {
        let _no_writes = self.writes.write().await;
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let next = SealingKey::new(next);
        if keys.current.fingerprint != next.fingerprint {
            let old = std::mem::replace(&mut keys.current, next);
            keys.previous = Some(old);
        }
    }

    /// Keeps `previous` for opens only (a rotation resumed at start).
    pub fn with_previous(self, previous: &KeyMaterial) -> Self {
        {
            let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            keys.previous = Some(SealingKey::new(previous));
        }
        self
    }

    /// Drops the previous key: the rotation is over.
    pub fn forget_previous(&self) {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .previous = None;
    }

    /// `base64(nonce || ciphertext)` under the current key.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        let key = Arc::clone(&self.read_keys().current);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = key
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| SecretError::Unseal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(BASE64.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        self.open_with(sealed).map(|(plain, _)| plain)
    }

    /// Opens with the current key, else the previous one, and says which.
    pub fn open_with(&self, sealed: &str) -> Result<(String, SealedWith), SecretError> {
        let bytes = BASE64.decode(sealed).map_err(|_| SecretError::Unseal)?;
        if bytes.len() < 12 {
            return Err(SecretError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let (current, previous) = {
            let keys = self.read_keys();
            (Arc::clone(&keys.current), keys.previous.clone())
        };
        if let Some(plain) = current.open(nonce, ciphertext) {
            return Ok((plain, SealedWith::Current));
        }
        previous
            .and_then(|key| key.open(nonce, ciphertext))
            .map(|plain| (plain, SealedWith::Previous))
            .ok_or(SecretError::Unseal)
    }
}

/// One permit per core: at most that many argon2 computations at once in
/// the whole process.
static ARGON2_PERMITS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(argon2_parallelism()));

/// argon2's working memory (19 MiB at the default cost), one buffer per
/// permit, reused: allocating it per call let the allocator keep a freed
/// buffer in each of its per-thread arenas, and RSS grew with the number of
/// blocking threads that had ever hashed (575 MiB after 200 concurrent
/// creates on 2 cores, against 94 MiB before them).
static ARGON2_MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// The number of argon2 computations allowed at once.
pub fn argon2_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// An argon2id hash in PHC string form, computed on a blocking thread once a
/// permit is free.
pub async fn hash_password(password: String) -> Result<String, SecretError> {
    let _permit = ARGON2_PERMITS
        .acquire()
        .await
        .map_err(|e| SecretError::Hash(e.to_string()))?;
    tokio::task::spawn_blocking(move || with_argon2_memory(|blocks| hash_now(&password, blocks)))
        .await
        .map_err(|e| SecretError::Hash(e.to_string()))?
}

/// Constant-time check of a password against a PHC hash, on a blocking
/// thread once a permit is free. `false` for a malformed hash.
pub async fn verify_password(password: String, phc: String) -> bool {
    let Ok(_permit) = ARGON2_PERMITS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        with_argon2_memory(|blocks| verify_now(&password, &phc, blocks))
    })
    .await
    .unwrap_or(false)
}

/// A password for the background hasher and where its hash goes.
type IdleJob = (
    String,
    tokio::sync::oneshot::Sender<Result<String, SecretError>>,
);

/// Puts the calling thread at the lowest CPU priority: on Linux the
/// `SCHED_IDLE` policy, elsewhere (or where that is refused) nice 19. Nice 19
/// alone still takes a share of a busy core (weight 15 against 1,024): beside
/// a 100k-row recon the hasher took ~15% of the CPU and the recon ran 8%
/// slower; an idle-policy thread runs only on what nothing else wants.
fn lowest_priority() -> Result<(), thread_priority::Error> {
    use thread_priority::{ThreadPriority, set_current_thread_priority};
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
            thread_native_id,
        };
        let idle = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        );
        if idle.is_ok() {
            return Ok(());
        }
    }
    set_current_thread_priority(ThreadPriority::Min)
}

/// The background hasher's queue: one thread of its own, started on first
/// use, at the lowest CPU priority ([`lowest_priority`]), with one working-memory buffer
/// of its own. It takes no permit: it never delays a login or a verify, and
/// on a busy machine it runs only on what the foreground leaves.
static IDLE_HASHER: LazyLock<Result<std::sync::mpsc::Sender<IdleJob>, String>> = LazyLock::new(
    || {
        let (jobs, queue) = std::sync::mpsc::channel::<IdleJob>();
        std::thread::Builder::new()
            .name(IDLE_HASHER_THREAD.into())
            .spawn(move || {
                if let Err(e) = lowest_priority() {
                    tracing::warn!(error = ?e, "the background password hasher runs at normal priority");
                }
                let mut blocks = vec![Block::new(); Params::DEFAULT_M_COST as usize];
                for (password, reply) in queue {
                    let hashed = hash_now(&password, &mut blocks);
                    blocks.fill(Block::new());
                    let _ = reply.send(hashed);
                }
            })
            .map(|_| jobs)
            .map_err(|e| e.to_string())
    },
);

/// The name of the background hasher's thread.
pub const IDLE_HASHER_THREAD: &str = "idm-hash-idle";

/// An argon2id hash computed by the background hasher (see [`IDLE_HASHER`]):
/// for work nobody waits on, such as hashing passwords that were stored
/// sealed.
pub async fn hash_password_when_idle(password: String) -> Result<String, SecretError> {
    let jobs = IDLE_HASHER
        .as_ref()
        .map_err(|e| SecretError::Hash(e.clone()))?;
    let (reply, hashed) = tokio::sync::oneshot::channel();
    jobs.send((password, reply))
        .map_err(|_| SecretError::Hash("the background hasher is gone".into()))?;
    hashed
        .await
        .map_err(|_| SecretError::Hash("the background hasher is gone".into()))?
}

/// Whether `password` equals `stored` (a sealed copy, opened), comparing in
/// constant time for equal lengths.
pub fn same_password(password: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(password.as_bytes().ct_eq(stored.as_bytes()))
}

/// Runs `f` with a working-memory buffer from the pool (a new one if none is
/// free: at most one per permit ever exists), zeroed before it goes back.
fn with_argon2_memory<T>(f: impl FnOnce(&mut [Block]) -> T) -> T {
    let pooled = ARGON2_MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    let mut blocks = pooled.unwrap_or_else(|| vec![Block::new(); Params::DEFAULT_M_COST as usize]);
    let out = f(&mut blocks);
    blocks.fill(Block::new());
    ARGON2_MEMORY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(blocks);
    out
}

/// argon2id with the default parameters, as `Argon2::hash_password` would.
fn hash_now(password: &str, blocks: &mut [Block]) -> Result<String, SecretError> {
    let failed = |e: &dyn fmt::Display| SecretError::Hash(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(|e| failed(&e))?;
    let argon2 = Argon2::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Recomputes the hash with the PHC string's own parameters and compares
/// in constant time (`Output`'s equality). A hash needing more memory than a
/// pooled buffer was not made here: `false`.
fn verify_now(password: &str, phc: &str, blocks: &mut [Block]) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let Ok(version) = hash
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    if params.block_count() > blocks.len() {
        tracing::warn!(
            m_cost = params.m_cost(),
            "a password hash asks for more argon2 memory than idm uses; not verified"
        );
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        .is_ok()
        && Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// Creates `path` (and its directory) with mode 0600, writes `contents` and a
/// newline, and flushes the file and its directory to disk.
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    sync_dir(parent.unwrap_or(Path::new(".")))
}

/// Flushes a directory's entries (a new or renamed file in it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_the_same_key() {
        let dir = std::env::temp_dir().join(format!("idm-key-{}", uuid::Uuid::new_v4()));
        let key_file = dir.join("idm.key");
        let first = SecretBox::load_or_create(&key_file, None).unwrap();
        let sealed = first.seal("FooBar123").unwrap();
        assert!(!sealed.contains("FooBar123"));
        let again = SecretBox::load_or_create(&key_file, None).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "FooBar123");
        let other = SecretBox::load_or_create(&dir.join("other.key"), None).unwrap();
        assert!(other.open(&sealed).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn hashes_are_standard_argon2id_phc_strings() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("FooBar123".into()).await.unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        // The crate's own verifier accepts ours, and ours accepts the crate's.
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"FooBar123", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"FooBar124", &parsed)
                .is_err()
        );
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"Other-1", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password("Other-1".into(), theirs.clone()).await);
        assert!(!verify_password("Other-2".into(), theirs).await);
        // Cheaper parameters (an older hash) verify too.
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 3, 1, None).unwrap(),
        )
        .hash_password(b"Cheap-1", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password("Cheap-1".into(), cheap).await);
    }

    #[tokio::test]
    async fn the_background_hasher_makes_the_same_hashes_at_the_lowest_priority() {
        let hash = hash_password_when_idle("FooBar123".into()).await.unwrap();
        assert!(verify_password("FooBar123".into(), hash.clone()).await);
        assert!(!verify_password("FooBar124".into(), hash).await);
        // Its thread's scheduling policy, from /proc/<pid>/task/<tid>/stat
        // (after the parenthesised name).
        let policy = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|task| {
                let path = task.ok()?.path();
                let name = std::fs::read_to_string(path.join("comm")).ok()?;
                (name.trim() == IDLE_HASHER_THREAD)
                    .then(|| std::fs::read_to_string(path.join("stat")).ok())
                    .flatten()
            })
            .map(|stat| {
                let after_name = stat.rsplit_once(')').unwrap().1;
                // Field 41 of stat, counted from 1: the scheduling policy.
                after_name.split_whitespace().nth(38).unwrap().to_string()
            })
            .next();
        // SCHED_IDLE (policy 5), under which the nice value does not count.
        assert_eq!(
            policy.as_deref(),
            Some("5"),
            "the background hasher's thread runs under SCHED_IDLE"
        );
        assert!(same_password("FooBar123", "FooBar123"));
        assert!(!same_password("FooBar123", "FooBar124"));
        assert!(!same_password("FooBar123", "FooBar1234"));
    }

    #[tokio::test]
    async fn password_hashes_verify() {
        let hash = hash_password("FooBar123".into()).await.unwrap();
        assert!(verify_password("FooBar123".into(), hash.clone()).await);
        assert!(!verify_password("foobar123".into(), hash).await);
        assert!(!verify_password("FooBar123".into(), "not a hash".into()).await);
    }

    #[tokio::test]
    async fn during_a_switch_new_seals_use_the_new_key_and_old_ones_still_open() {
        let old = KeyMaterial::generate();
        let new = KeyMaterial::generate();
        let secrets = SecretBox::new(KeySource::Env, &old);
        let before = secrets.seal("Old-1").unwrap();
        secrets.switch_to(&new).await;
        assert_eq!(secrets.fingerprint(), new.fingerprint());
        assert_eq!(secrets.previous_fingerprint(), Some(old.fingerprint()));
        let after = secrets.seal("New-1").unwrap();
        assert_eq!(
            secrets.open_with(&before).unwrap(),
            ("Old-1".to_string(), SealedWith::Previous)
        );
        assert_eq!(
            secrets.open_with(&after).unwrap(),
            ("New-1".to_string(), SealedWith::Current)
        );
        secrets.forget_previous();
        assert!(secrets.open(&before).is_err());
        assert_eq!(secrets.open(&after).unwrap(), "New-1");
    }

    #[tokio::test]
    async fn a_switch_waits_for_writes_holding_the_old_key() {
        let secrets = Arc::new(SecretBox::ephemeral());
        let hold = secrets.hold().await;
        let switching = {
            let secrets = Arc::clone(&secrets);
            tokio::spawn(async move { secrets.switch_to(&KeyMaterial::generate()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!switching.is_finished(), "the switch waits for the hold");
        drop(hold);
        switching.await.unwrap();
    }

    #[test]
    fn fingerprints_are_stable_and_say_nothing_of_the_key() {
        let key = KeyMaterial::from_base64(&BASE64.encode([7u8; 32]), "test").unwrap();
        let fingerprint = key.fingerprint();
        assert_eq!(fingerprint.len(), 64);
        assert_eq!(fingerprint, key.clone().fingerprint());
        assert_ne!(fingerprint, KeyMaterial::generate().fingerprint());
        let plain_sha: String = Sha256::digest([7u8; 32])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(fingerprint, plain_sha, "domain-separated");
        assert!(!format!("{key:?}").contains(&BASE64.encode([7u8; 32])));
    }
}

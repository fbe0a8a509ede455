//! The start-up check and rotation against a real embedded store and real
//! key files.

use serde_json::{Map, Value, json};

use super::*;
use crate::managed::{ManagedObjects, ManagedSchema};
use crate::scratch::Scratch;
use crate::store::ConfigDocument;

fn key_file(scratch: &Scratch) -> PathBuf {
    scratch.join("idm.key")
}

async fn store() -> Store {
    Store::open("mem://").await.unwrap()
}

fn objects(store: &Store, keys: &KeyManager) -> ManagedObjects {
    ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store.clone(),
        keys.secrets(),
    )
}

fn user(name: &str, password: &str) -> Map<String, Value> {
    json!({ "userName": name, "sn": name, "password": password })
        .as_object()
        .cloned()
        .unwrap()
}

async fn passwords(objects: &ManagedObjects, ids: &[&str]) -> Vec<Option<String>> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    objects
        .private_values("user", "password", &ids)
        .await
        .unwrap()
}

async fn put_sealed_connector(store: &Store, sealed: &str) {
    store
        .put_config(&ConfigDocument {
            kind: "connector".into(),
            name: "ldap".into(),
            body: json!({
                "connectorType": "ldap",
                "configurationProperties": { "bindPassword": { "$sealed": sealed } },
                "list": [1, 2.5, "x"]
            })
            .as_object()
            .cloned()
            .unwrap(),
            source: "api".into(),
        })
        .await
        .unwrap();
}

async fn sealed_bind_password(store: &Store) -> String {
    let document = store
        .get_config("connector", "ldap")
        .await
        .unwrap()
        .unwrap();
    document.body["configurationProperties"]["bindPassword"]["$sealed"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_first_start_generates_the_key_file_and_records_its_fingerprint() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    let on_disk = KeyMaterial::read_file(&key_file(&scratch))
        .unwrap()
        .unwrap();
    let record = store.key_record().await.unwrap().unwrap();
    assert_eq!(record.fingerprint, on_disk.fingerprint());
    assert_eq!(keys.status().await.unwrap().fingerprint, record.fingerprint);
    // Again with the same key: fine.
    KeyManager::open(store, &key_file(&scratch), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn another_key_is_refused_and_the_message_names_no_key() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    let other = base64_key();
    let error = KeyManager::open(store.clone(), &key_file(&scratch), Some(&other))
        .await
        .err()
        .unwrap();
    let message = error.to_string();
    assert!(matches!(error, KeyError::Mismatch { .. }), "{message}");
    assert!(message.contains("IDM_ENCRYPTION_KEY"), "{message}");
    assert!(message.contains("idmctl keys rotate"), "{message}");
    assert!(!message.contains(&other), "{message}");
    let original = std::fs::read_to_string(key_file(&scratch)).unwrap();
    assert!(!message.contains(original.trim()), "{message}");
}

#[tokio::test]
async fn a_lost_key_file_is_not_replaced() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    std::fs::remove_file(key_file(&scratch)).unwrap();
    let error = KeyManager::open(store, &key_file(&scratch), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, KeyError::MissingKeyFile { .. }), "{error}");
    assert!(!key_file(&scratch).exists(), "no new key written");
}

#[tokio::test]
async fn a_store_from_before_fingerprints_must_open_with_the_key() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    // Secrets sealed by an idmd that recorded no fingerprint.
    let old = SecretBox::load_or_create(&scratch.join("old.key"), None).unwrap();
    let objects = ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store.clone(),
        Arc::new(old),
    );
    objects
        .create("test", "user", Some("u1".into()), user("u1", "Secret-1"))
        .await
        .unwrap();
    let error = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, KeyError::DoesNotOpen { .. }), "{error}");
    assert!(
        !key_file(&scratch).exists(),
        "a missing key file stays missing"
    );
    assert_eq!(store.key_record().await.unwrap(), None);
    let keys = KeyManager::open(store.clone(), &scratch.join("old.key"), None)
        .await
        .unwrap();
    assert_eq!(
        store.key_record().await.unwrap().unwrap().fingerprint,
        keys.secrets().fingerprint()
    );
}

#[tokio::test]
async fn rotation_reseals_passwords_and_conf_secrets_under_a_new_key_file() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    let objects = objects(&store, &keys);
    for id in ["a", "b", "c"] {
        objects
            .create(
                "test",
                "user",
                Some(id.into()),
                user(id, &format!("Pw-{id}")),
            )
            .await
            .unwrap();
    }
    put_sealed_connector(&store, &keys.secrets().seal("bind-s3cret").unwrap()).await;
    let old_key = KeyMaterial::read_file(&key_file(&scratch))
        .unwrap()
        .unwrap();

    let done = keys.rotate().await.unwrap();
    assert_eq!(done.previous_fingerprint, old_key.fingerprint());
    assert_eq!(done.credentials, 3);
    assert_eq!(done.config_values, 1);
    assert_eq!(done.unreadable, 0);
    let new_key = KeyMaterial::read_file(&key_file(&scratch))
        .unwrap()
        .unwrap();
    assert_eq!(new_key.fingerprint(), done.fingerprint);
    assert_ne!(new_key.fingerprint(), old_key.fingerprint());
    assert!(!pending_path(&key_file(&scratch)).exists());
    assert_eq!(
        store.key_record().await.unwrap().unwrap(),
        crate::store::KeyRecord {
            fingerprint: done.fingerprint.clone(),
            rotating_to: None
        }
    );
    assert_eq!(
        passwords(&objects, &["a", "b", "c"]).await,
        vec![
            Some("Pw-a".into()),
            Some("Pw-b".into()),
            Some("Pw-c".into())
        ]
    );
    // Only the new key opens anything now.
    let fresh = SecretBox::new(KeySource::Env, &new_key);
    let stale = SecretBox::new(KeySource::Env, &old_key);
    let sealed = sealed_bind_password(&store).await;
    assert_eq!(fresh.open(&sealed).unwrap(), "bind-s3cret");
    assert!(stale.open(&sealed).is_err());
    for sealed in store
        .sealed_credentials(&store.credential_keys().await.unwrap())
        .await
        .unwrap()
    {
        assert!(stale.open(&sealed.unwrap()).is_err());
    }
    // And the store now wants the new key.
    drop(keys);
    KeyManager::open(store, &key_file(&scratch), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotation_cut_short_is_finished_at_the_next_start() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    let objects_before = objects(&store, &keys);
    objects_before
        .create("test", "user", Some("a".into()), user("a", "Pw-a"))
        .await
        .unwrap();
    put_sealed_connector(&store, &keys.secrets().seal("bind-s3cret").unwrap()).await;
    let from = keys.secrets().fingerprint();
    // Steps 1–3, and a password written under the new key; then a crash.
    let to = keys
        .begin(
            &key_file(&scratch),
            &pending_path(&key_file(&scratch)),
            &from,
        )
        .await
        .unwrap();
    objects_before
        .create("test", "user", Some("b".into()), user("b", "Pw-b"))
        .await
        .unwrap();
    drop(objects_before);
    drop(keys);

    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    assert_eq!(keys.secrets().fingerprint(), to);
    assert_eq!(keys.secrets().previous_fingerprint(), None);
    assert_eq!(store.key_record().await.unwrap().unwrap().fingerprint, to);
    assert_eq!(
        KeyMaterial::read_file(&key_file(&scratch))
            .unwrap()
            .unwrap()
            .fingerprint(),
        to
    );
    let objects = objects(&store, &keys);
    assert_eq!(
        passwords(&objects, &["a", "b"]).await,
        vec![Some("Pw-a".into()), Some("Pw-b".into())]
    );
    assert_eq!(
        keys.secrets()
            .open(&sealed_bind_password(&store).await)
            .unwrap(),
        "bind-s3cret"
    );
}

#[tokio::test]
async fn a_rotation_stopped_after_installing_the_key_is_recorded_at_start() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    objects(&store, &keys)
        .create("test", "user", Some("a".into()), user("a", "Pw-a"))
        .await
        .unwrap();
    let from = keys.secrets().fingerprint();
    let pending = pending_path(&key_file(&scratch));
    let to = keys
        .begin(&key_file(&scratch), &pending, &from)
        .await
        .unwrap();
    keys.reseal_everything().await.unwrap();
    std::fs::rename(&pending, key_file(&scratch)).unwrap();
    drop(keys);

    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    assert_eq!(
        store.key_record().await.unwrap().unwrap(),
        crate::store::KeyRecord {
            fingerprint: to,
            rotating_to: None
        }
    );
    assert_eq!(
        passwords(&objects(&store, &keys), &["a"]).await,
        vec![Some("Pw-a".into())]
    );
}

#[tokio::test]
async fn a_missing_new_key_file_mid_rotation_is_refused() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store.clone(), &key_file(&scratch), None)
        .await
        .unwrap();
    let from = keys.secrets().fingerprint();
    let pending = pending_path(&key_file(&scratch));
    keys.begin(&key_file(&scratch), &pending, &from)
        .await
        .unwrap();
    drop(keys);
    std::fs::remove_file(&pending).unwrap();
    let error = KeyManager::open(store, &key_file(&scratch), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(error, KeyError::Interrupted { .. }), "{error}");
    assert!(error.to_string().contains("missing"), "{error}");
}

#[tokio::test]
async fn a_key_from_the_environment_is_not_rotated() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = KeyManager::open(store, &key_file(&scratch), Some(&base64_key()))
        .await
        .unwrap();
    let error = keys.rotate().await.err().unwrap();
    assert!(matches!(error, KeyError::FromEnv), "{error}");
    assert!(!key_file(&scratch).exists());
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

#[tokio::test]
async fn rotations_during_password_writes_lose_nothing() {
    let scratch = Scratch::new("idm-keys");
    let store = store().await;
    let keys = Arc::new(
        KeyManager::open(store.clone(), &key_file(&scratch), None)
            .await
            .unwrap(),
    );
    let objects = objects(&store, &keys);
    let batch: Vec<_> = (0..40)
        .map(|n| (Some(format!("u{n}")), user(&format!("u{n}"), "First-0")))
        .collect();
    objects.create_many("test", "user", batch).await.unwrap();

    // Password changes and creates keep going while the key rotates twice.
    let writer = {
        let objects = objects.clone();
        tokio::spawn(async move {
            for n in 0..40 {
                let id = format!("u{n}");
                objects
                    .patch(
                        "test",
                        "user",
                        &id,
                        vec![
                            crate::managed::PatchOp::new(
                                "replace",
                                "/password",
                                Some(json!(format!("Second-{n}"))),
                            )
                            .unwrap(),
                        ],
                        None,
                    )
                    .await
                    .unwrap();
                objects
                    .create(
                        "test",
                        "user",
                        Some(format!("v{n}")),
                        user(&format!("v{n}"), &format!("New-{n}")),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let first = keys.rotate().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = keys.rotate().await.unwrap();
    assert_ne!(first.fingerprint, second.fingerprint);
    writer.await.unwrap();

    // Everything opens with the last key alone.
    let last = KeyMaterial::read_file(&key_file(&scratch))
        .unwrap()
        .unwrap();
    assert_eq!(last.fingerprint(), second.fingerprint);
    let only_last = ManagedObjects::new(
        Arc::new(ManagedSchema::builtin().unwrap()),
        store.clone(),
        Arc::new(SecretBox::new(KeySource::Env, &last)),
    );
    let ids: Vec<String> = (0..40).map(|n| format!("u{n}")).collect();
    let expected: Vec<Option<String>> = (0..40).map(|n| Some(format!("Second-{n}"))).collect();
    assert_eq!(
        only_last
            .private_values("user", "password", &ids)
            .await
            .unwrap(),
        expected
    );
    let ids: Vec<String> = (0..40).map(|n| format!("v{n}")).collect();
    let expected: Vec<Option<String>> = (0..40).map(|n| Some(format!("New-{n}"))).collect();
    assert_eq!(
        only_last
            .private_values("user", "password", &ids)
            .await
            .unwrap(),
        expected
    );
}

//! Backup and restore: `idmctl backup` of an idmd serving on an embedded
//! store, `idmd restore` into a new one, and an idmd on the restored store
//! with the same key reads the same objects (ids, revisions), verifies every
//! password, has the same conf, schedules (paused ones paused), links, tokens
//! and audit trail. A truncated or altered file, a store that is not new and
//! another key are refused before anything is written; a backup needs admin
//! scope, and its file is 0600.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use idm_proto::backup::{Header, Sealer};
use idm_proto::v1::system_service_server::{SystemService, SystemServiceServer};
use idm_proto::v1::{
    BackupChunk, CreateObjectRequest, CreateScheduleRequest, DeleteObjectRequest,
    GetScheduleRequest, ListLinksRequest, ListMappingsRequest, ListSchedulesRequest,
    PatchObjectRequest, PatchOperation, PauseScheduleRequest, QueryAuditRequest,
    QueryObjectsRequest, Schedule, Scope,
};
use idm_tests::{Clients, Idmd, IdmdOptions, TempDir, attrs, binary, idm_conf};
use serde_json::json;

use crate::{create_user, password_valid, recon, token};

const MAPPING: &str = "csvEmployee_managedUser";

/// `idmd restore --from FILE --store URL`, with `key` as IDM_ENCRYPTION_KEY.
fn restore(from: &Path, store: &str, key: Option<&str>) -> Output {
    let mut command = Command::new(binary("idmd"));
    command
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--store")
        .arg(store)
        .env_remove("IDM_ENCRYPTION_KEY")
        .env_remove("IDM_STORE")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(key) = key {
        command.env("IDM_ENCRYPTION_KEY", key);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every object of a type as (id, revision, attributes), in id order.
async fn all_of(c: &mut Clients, type_name: &str) -> Vec<(String, i64, serde_json::Value)> {
    let mut found: Vec<_> = c
        .objects
        .query_objects(QueryObjectsRequest {
            parent: format!("managed/{type_name}"),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .objects
        .iter()
        .map(|o| (o.id.clone(), o.revision, idm_tests::json_of(o)))
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

async fn schedules(c: &mut Clients) -> Vec<(String, bool, String)> {
    let mut listed: Vec<_> = c
        .schedules
        .list_schedules(ListSchedulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .schedules
        .into_iter()
        .map(|s: Schedule| (s.name, s.paused, s.schedule))
        .collect();
    listed.sort();
    listed
}

async fn audit_count(c: &mut Clients, filter: &str) -> i64 {
    c.audit
        .query_audit(QueryAuditRequest {
            filter: filter.into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .total_size
}

#[tokio::test]
async fn a_backup_of_a_running_idmd_restores_into_a_new_store_that_reads_the_same() {
    let conf = idm_conf("scheduler");
    let site = TempDir::new("backup");
    let store = format!("surrealkv://{}", site.path().join("db").display());
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        store: Some(store),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;
    // The conf's schedules stay still, and their paused state is restored.
    for name in ["schedules/recon", "schedules/greeting"] {
        c.schedules
            .pause_schedule(PauseScheduleRequest { name: name.into() })
            .await
            .unwrap();
    }
    // Users from the CSV (linked, with the mapping's default password) …
    let run = recon(&mut c, MAPPING).await;
    assert_eq!(run.state(), idm_proto::v1::recon_run::State::Success);
    // … and by hand: a password, an update, a group, a delete.
    create_user(
        &mut c,
        "alice",
        json!({"userName": "alice", "password": "Alice-Pass-1", "mail": "a@example.com"}),
    )
    .await;
    create_user(
        &mut c,
        "bob",
        json!({"userName": "bob", "password": "Bob-Pass-22"}),
    )
    .await;
    create_user(&mut c, "gone", json!({"userName": "gone"})).await;
    c.objects
        .patch_object(PatchObjectRequest {
            name: "managed/user/alice".into(),
            operations: vec![PatchOperation {
                operation: "replace".into(),
                field: "/mail".into(),
                value: Some(prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(
                        "alice@example.com".into(),
                    )),
                }),
                ..Default::default()
            }],
            expected_revision: None,
        })
        .await
        .unwrap();
    c.objects
        .delete_object(DeleteObjectRequest {
            name: "managed/user/gone".into(),
            expected_revision: None,
        })
        .await
        .unwrap();
    c.objects
        .create_object(CreateObjectRequest {
            parent: "managed/group".into(),
            object_id: "admins".into(),
            attributes: attrs(json!({
                "name": "admins",
                "members": [{"_ref": "managed/user/alice"}, {"_ref": "managed/user/bob"}]
            })),
        })
        .await
        .unwrap();
    // A schedule made over the API (a conf document only the store holds), paused.
    c.schedules
        .create_schedule(CreateScheduleRequest {
            schedule_id: "nightly".into(),
            schedule: Some(Schedule {
                enabled: true,
                r#type: "cron".into(),
                schedule: "0 0 3 * * ?".into(),
                invoke_service: "script".into(),
                invoke_context: attrs(json!({
                    "script": {"type": "text/javascript", "source": "1 + 1;"}
                })),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    c.schedules
        .pause_schedule(PauseScheduleRequest {
            name: "schedules/nightly".into(),
        })
        .await
        .unwrap();
    let reader = token(&idmd, Scope::Read).await;

    let users = all_of(&mut c, "user").await;
    let groups = all_of(&mut c, "group").await;
    let listed_schedules = schedules(&mut c).await;
    let mappings = c.mappings_listed().await;
    let csv_user = users
        .iter()
        .find(|(id, ..)| id != "alice" && id != "bob")
        .map(|(id, ..)| id.clone())
        .expect("a user from the CSV");
    let links = c
        .recon
        .list_links(ListLinksRequest {
            object: format!("managed/user/{csv_user}"),
            resolve_names: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        links.links.iter().any(|l| !l.linked.is_empty()),
        "{links:?}"
    );
    assert!(users.iter().any(|(id, rev, _)| id == "alice" && *rev == 2));

    // A read token may not take the store away.
    let out_dir = TempDir::new("backup-out");
    let file = out_dir.path().join("idm.backup");
    let file_arg = file.to_str().unwrap();
    let refused = idmd.idmctl_with(&reader, &["backup", "--to", file_arg], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("PERMISSION_DENIED"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!file.exists());
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);

    let made = idmd.idmctl(&["backup", "--to", file_arg]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let said = text(&made.stdout);
    assert!(said.contains("schema version:"), "{said}");
    assert!(said.contains("key fingerprint:"), "{said}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the backup file is private");
    assert_eq!(
        std::fs::read_dir(out_dir.path()).unwrap().count(),
        1,
        "no partial file left"
    );
    // No overwrite without --force.
    let again = idmd.idmctl(&["backup", "--to", file_arg]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    let forced = idmd.idmctl(&["backup", "--to", file_arg, "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    // Written after the backup: not in it.
    create_user(&mut c, "later", json!({"userName": "later"})).await;
    assert_eq!(
        audit_count(
            &mut c,
            r#"operation eq "system.backup" and object eq "store""#
        )
        .await,
        3,
        "two backups and the refusal audited"
    );
    let bytes = std::fs::read(&file).unwrap();

    // Refusals, before the store is touched.
    let restored_dir = TempDir::new("restored");
    let target = format!("surrealkv://{}", restored_dir.path().join("db").display());
    let truncated = out_dir.path().join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let cut = restore(&truncated, &target, Some(&idmd.encryption_key));
    assert!(!cut.status.success());
    assert!(
        text(&cut.stderr).contains("incomplete"),
        "{}",
        text(&cut.stderr)
    );
    let altered = out_dir.path().join("altered.backup");
    let mut changed = bytes.clone();
    let middle = changed.len() / 2;
    changed[middle] ^= 0x20;
    std::fs::write(&altered, &changed).unwrap();
    let damaged = restore(&altered, &target, Some(&idmd.encryption_key));
    assert!(!damaged.status.success());
    assert!(
        text(&damaged.stderr).contains("damaged"),
        "{}",
        text(&damaged.stderr)
    );
    let other_key = base64_key();
    let wrong = restore(&file, &target, Some(&other_key));
    assert!(!wrong.status.success());
    assert!(
        text(&wrong.stderr).contains("is not the key this backup's secrets are sealed under"),
        "{}",
        text(&wrong.stderr)
    );
    assert!(
        !restored_dir.path().join("db").exists(),
        "nothing was written by a refused restore"
    );

    let done = restore(&file, &target, Some(&idmd.encryption_key));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let report = text(&done.stdout);
    assert!(
        report.contains(&format!("{} managed objects", users.len() + groups.len())),
        "{report}"
    );
    assert!(report.contains("the same encryption key"), "{report}");
    assert!(!report.contains(&idmd.encryption_key), "never the key");
    let twice = restore(&file, &target, None);
    assert!(!twice.status.success());
    assert!(
        text(&twice.stderr).contains("is not empty"),
        "{}",
        text(&twice.stderr)
    );

    // An idmd on the restored store, with the same key and conf.
    let restored = Idmd::spawn(
        IdmdOptions {
            conf: Some(conf.path().to_path_buf()),
            store: Some(target.clone()),
            ..Default::default()
        },
        TempDir::new("idmd"),
        idmd.admin_token.clone(),
        idmd.encryption_key.clone(),
    )
    .await
    .unwrap_or_else(|log| panic!("idmd on the restored store did not start:\n{log}"));
    let mut r = restored.clients().await;
    assert_eq!(all_of(&mut r, "user").await, users);
    assert_eq!(all_of(&mut r, "group").await, groups);
    assert!(password_valid(&mut r, "alice", "Alice-Pass-1").await);
    assert!(password_valid(&mut r, "bob", "Bob-Pass-22").await);
    assert!(!password_valid(&mut r, "bob", "Alice-Pass-1").await);
    for (id, ..) in users.iter().filter(|(id, ..)| id != "alice" && id != "bob") {
        assert!(password_valid(&mut r, id, "FooBar123").await, "{id}");
    }
    assert_eq!(schedules(&mut r).await, listed_schedules);
    let nightly = r
        .schedules
        .get_schedule(GetScheduleRequest {
            name: "schedules/nightly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(nightly.paused);
    assert_eq!(r.mappings_listed().await, mappings);
    let restored_links = r
        .recon
        .list_links(ListLinksRequest {
            object: format!("managed/user/{csv_user}"),
            resolve_names: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored_links, links);
    assert!(
        audit_count(
            &mut r,
            r#"object eq "managed/user/gone" and operation eq "delete""#
        )
        .await
            == 1
    );
    for operation in ["create", "patch"] {
        let filter = format!(r#"object eq "managed/user/alice" and operation eq "{operation}""#);
        assert_eq!(audit_count(&mut r, &filter).await, 1, "{filter}");
    }
    // The read token made before the backup still reads.
    let mut as_reader = restored.clients_with(Some(reader)).await;
    assert_eq!(all_of(&mut as_reader, "user").await.len(), users.len());
}

/// A SystemService whose backup breaks part-way: an error after some bytes,
/// or a stream that just ends without the trailer.
struct Broken {
    fails: bool,
}

type Chunks =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<BackupChunk, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl SystemService for Broken {
    type BackupStream = Chunks;

    async fn get_system_object(
        &self,
        _: tonic::Request<idm_proto::v1::GetSystemObjectRequest>,
    ) -> Result<tonic::Response<idm_proto::v1::SystemObject>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }

    async fn query_system_objects(
        &self,
        _: tonic::Request<idm_proto::v1::QuerySystemObjectsRequest>,
    ) -> Result<tonic::Response<idm_proto::v1::QuerySystemObjectsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not here"))
    }

    async fn backup(
        &self,
        _: tonic::Request<idm_proto::v1::BackupRequest>,
    ) -> Result<tonic::Response<Chunks>, tonic::Status> {
        let header = Header::new(5, "f00d", "2026-01-01T00:00:00Z", "0.1.0");
        let mut items = vec![
            Ok(BackupChunk {
                data: Sealer::header_line(&header),
            }),
            Ok(BackupChunk {
                data: vec![b'-'; 100_000],
            }),
        ];
        if self.fails {
            items.push(Err(tonic::Status::internal(
                "store failure; see the server log",
            )));
        }
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

#[tokio::test]
async fn a_backup_that_breaks_part_way_leaves_no_file() {
    for fails in [true, false] {
        let port = idm_tests::free_port();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SystemServiceServer::new(Broken { fails }))
                .serve(([127, 0, 0, 1], port).into()),
        );
        let out_dir = TempDir::new("broken-backup");
        let file = out_dir.path().join("idm.backup");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut output = None;
        // The server task binds as it starts.
        for _ in 0..100 {
            // Awaited: the fake server runs on this test's runtime.
            let ran = tokio::process::Command::new(binary("idmctl"))
                .args(["--endpoint", &endpoint, "backup", "--to"])
                .arg(&file)
                .env("IDM_TOKEN", "t")
                .env_remove("IDM_CA")
                .output()
                .await
                .unwrap();
            if !text(&ran.stderr).contains("cannot reach idmd") {
                output = Some(ran);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let output = output.expect("idmctl reached the fake server");
        assert!(!output.status.success());
        let said = text(&output.stderr);
        if fails {
            assert!(said.contains("INTERNAL"), "{said}");
        } else {
            assert!(said.contains("ended early"), "{said}");
        }
        assert!(!file.exists());
        assert_eq!(
            std::fs::read_dir(out_dir.path()).unwrap().count(),
            0,
            "no partial file left: {said}"
        );
        server.abort();
    }
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// The mappings' names and sources, as listed.
trait MappingsListed {
    async fn mappings_listed(&mut self) -> Vec<(String, String, String)>;
}

impl MappingsListed for Clients {
    async fn mappings_listed(&mut self) -> Vec<(String, String, String)> {
        self.config
            .list_mappings(ListMappingsRequest {})
            .await
            .unwrap()
            .into_inner()
            .mappings
            .into_iter()
            .map(|m| (m.name, m.source, m.target))
            .collect()
    }
}

//! The cookbook's scheduling scenario: a reconciliation and a greeting
//! script every 15 seconds; a row appended to hr.csv becomes a managed user
//! within one tick.

use std::io::Write;
use std::time::{Duration, Instant};

use idm_proto::v1::GetObjectRequest;
use idm_tests::{Clients, Idmd, IdmdOptions, sample_conf};
use tonic::Code;

async fn exists(clients: &mut Clients, id: &str) -> bool {
    match clients
        .objects
        .get_object(GetObjectRequest {
            name: format!("managed/user/{id}"),
            read_mask: None,
        })
        .await
    {
        Ok(_) => true,
        Err(status) if status.code() == Code::NotFound => false,
        Err(status) => panic!("get {id}: {status}"),
    }
}

/// Waits until `id` is a managed user; returns how long it took.
async fn until_user(clients: &mut Clients, id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    while !exists(clients, id).await {
        assert!(
            start.elapsed() < limit,
            "managed/user/{id} did not appear within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn the_scheduler_sample_imports_an_appended_row_within_one_tick_and_greets_every_tick() {
    let conf = sample_conf("scheduler");
    let idmd = Idmd::start_with(IdmdOptions {
        conf: Some(conf.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = idmd.clients().await;

    // The first tick (at most 15 s away) imports the one row there is.
    until_user(&mut c, "123", Duration::from_secs(25)).await;

    let mut hr = std::fs::OpenOptions::new()
        .append(true)
        .open(conf.path().join("data/hr.csv"))
        .unwrap();
    writeln!(hr, "456,John,Doe,5554567").unwrap();
    drop(hr);
    // One tick later (plus the run itself) it is a managed user.
    until_user(&mut c, "456", Duration::from_secs(25)).await;

    let log = idmd.log();
    let greetings = log
        .matches("Hi, this is automatically triggered script!")
        .count();
    assert!(greetings >= 2, "the greeting every tick:\n{log}");
    assert!(log.contains("Timestamp: \""), "{log}");
}

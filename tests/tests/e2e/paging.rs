use std::collections::BTreeSet;

use idm_proto::v1::{CreateObjectRequest, QueryObjectsRequest};
use idm_tests::{Idmd, attrs};
use serde_json::json;
use tonic::Code;

use crate::expect_code;

#[tokio::test]
async fn paging_through_a_thousand_users_misses_none_and_repeats_none() {
    let idmd = Idmd::start().await;
    let c = idmd.clients().await;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut objects = c.objects.clone();
        tasks.push(tokio::spawn(async move {
            for n in (worker..1000).step_by(8) {
                objects
                    .create_object(CreateObjectRequest {
                        parent: "managed/user".into(),
                        object_id: format!("user{n:04}"),
                        attributes: attrs(
                            json!({"userName": format!("user{n:04}"), "sn": format!("S{}", n % 7)}),
                        ),
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut objects = c.objects.clone();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = objects
            .query_objects(QueryObjectsRequest {
                parent: "managed/user".into(),
                order_by: "sn desc".into(),
                page_size: 97,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 1000);
        assert!(page.objects.len() <= 97);
        seen.extend(page.objects.into_iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 1000, "no duplicates");
    assert_eq!(unique.len(), 1000, "none missing");

    let offset = objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            page_size: 5,
            offset: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = offset.objects.into_iter().map(|o| o.id).collect();
    assert_eq!(
        ids,
        ["user0010", "user0011", "user0012", "user0013", "user0014"]
    );

    let foreign_token = objects
        .query_objects(QueryObjectsRequest {
            parent: "managed/user".into(),
            filter: r#"sn eq "S1""#.into(),
            page_token: token,
            ..Default::default()
        })
        .await;
    expect_code(foreign_token, Code::InvalidArgument);
}

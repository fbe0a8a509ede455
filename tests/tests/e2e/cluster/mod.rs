//! Several idmd nodes on one real SurrealDB server (`idm_tests::cluster`):
//! what a deployment behind a load balancer relies on.

mod basics;
mod conf;
mod runs;
mod sync;
mod tokens;

use idm_tests::cluster::{Cluster, ClusterOptions};
use idm_tests::directory::Slapd;
use idm_tests::{IdmdOptions, TempDir};

use crate::ldap::ldap_env;

/// Two nodes with the same conf directory (a CSV path in a connector
/// document is relative to it) and the same slapd.
pub async fn two_nodes(conf: &TempDir, slapd: &Slapd) -> Cluster {
    Cluster::start(
        2,
        ClusterOptions {
            idmd: IdmdOptions {
                conf: Some(conf.path().to_path_buf()),
                env: ldap_env(slapd),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
}

//! Several idmd nodes on one real SurrealDB server (`idm_testkit::SurrealServer`,
//! built by `scripts/test`): the same store URL and credentials, the same
//! encryption key and bootstrap admin token for every node, as a deployment
//! behind a load balancer has them.
//!
//! ```ignore
//! let mut cluster = Cluster::start(2, ClusterOptions::default()).await;
//! let mut a = cluster.node(0).clients().await;
//! cluster.kill(1);
//! cluster.restart(1).await;
//! ```

use base64::Engine;
use idm_testkit::SurrealServer;

use crate::{Idmd, IdmdOptions, TempDir};

/// How the server is reached and how every node starts.
#[derive(Clone, Default)]
pub struct ClusterOptions {
    /// Applied to every node (`conf`, `env`, `extra_args`, …); `store` is
    /// replaced by the server's URL.
    pub idmd: IdmdOptions,
    /// Nodes sign in as the database user `idmd` of `idm/idm` (defined
    /// before they start) instead of the server's root user.
    pub database_user: bool,
    /// Keep the server's data in SurrealKV instead of memory.
    pub surrealkv: bool,
    /// The server serves `wss://localhost:<port>` with a certificate from
    /// its own test CA, which the nodes trust through `SSL_CERT_FILE`.
    pub tls: bool,
}

/// A SurrealDB server and the idmd nodes on it; all killed on drop.
pub struct Cluster {
    /// Declared first: the nodes stop before the server.
    nodes: Vec<Option<Idmd>>,
    node_options: Vec<IdmdOptions>,
    server: SurrealServer,
    admin_token: String,
    encryption_key: String,
    /// What nodes sign in with: `IDM_STORE_USERNAME`, `…_PASSWORD`, `…_AUTH`
    /// (and `SSL_CERT_FILE` with TLS).
    store_env: Vec<(String, String)>,
}

impl Cluster {
    /// A fresh server and `nodes` idmd nodes on it, started one after the
    /// other (the first applies the schema), each serving when this returns.
    pub async fn start(nodes: usize, options: ClusterOptions) -> Self {
        let mut builder = SurrealServer::builder();
        if options.surrealkv {
            builder = builder.surrealkv();
        }
        if options.tls {
            builder = builder.tls();
        }
        let server = tokio::task::spawn_blocking(move || builder.start())
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("the SurrealDB server did not start: {e}"));
        let mut store_env = if options.database_user {
            let password = format!("pw{:x}", rand::random::<u64>());
            server
                .define_database_user("idm", "idm", "idmd", &password)
                .unwrap_or_else(|e| panic!("cannot define the database user: {e}"));
            vec![
                ("IDM_STORE_USERNAME".to_string(), "idmd".to_string()),
                ("IDM_STORE_PASSWORD".to_string(), password),
                ("IDM_STORE_AUTH".to_string(), "database".to_string()),
            ]
        } else {
            vec![
                (
                    "IDM_STORE_USERNAME".to_string(),
                    server.root_user().to_string(),
                ),
                (
                    "IDM_STORE_PASSWORD".to_string(),
                    server.root_password().to_string(),
                ),
                ("IDM_STORE_AUTH".to_string(), "root".to_string()),
            ]
        };
        if let Some(ca) = server.tls_ca() {
            store_env.push(("SSL_CERT_FILE".to_string(), ca.display().to_string()));
        }
        let mut cluster = Cluster {
            nodes: Vec::new(),
            node_options: Vec::new(),
            server,
            admin_token: format!("admin-{}", rand::random::<u64>()),
            encryption_key: base64::engine::general_purpose::STANDARD
                .encode(rand::random::<[u8; 32]>()),
            store_env,
        };
        for _ in 0..nodes {
            cluster.add_node(options.idmd.clone()).await;
        }
        cluster
    }

    /// Starts one more node with `options` (its store, key and admin token
    /// are the cluster's); returns its index.
    pub async fn add_node(&mut self, options: IdmdOptions) -> usize {
        let index = self.nodes.len();
        self.nodes.push(None);
        self.node_options.push(options);
        self.spawn(index).await;
        index
    }

    async fn spawn(&mut self, index: usize) {
        let mut options = self.node_options[index].clone();
        options.store = Some(self.server.url());
        options.env.extend(self.store_env.iter().cloned());
        let idmd = Idmd::spawn(
            options,
            TempDir::new(&format!("node{index}")),
            self.admin_token.clone(),
            self.encryption_key.clone(),
        )
        .await
        .unwrap_or_else(|log| {
            panic!(
                "node {index} did not start:\n{log}\n--- SurrealDB's log:\n{}",
                self.server.log()
            )
        });
        self.nodes[index] = Some(idmd);
    }

    /// Node `i`; panics if it was killed and not restarted.
    pub fn node(&self, i: usize) -> &Idmd {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Idmd {
        self.nodes[i]
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} is not running"))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` the hard way (`kill -9`, as a crash would) and keeps
    /// its log in the returned value's place: `node(i)` panics until
    /// [`Cluster::restart`].
    pub fn kill(&mut self, i: usize) -> Idmd {
        let mut idmd = self.nodes[i]
            .take()
            .unwrap_or_else(|| panic!("node {i} is not running"));
        idmd.kill();
        idmd
    }

    /// Starts node `i` again (killing it first if it runs) with the options
    /// it had, on a new port.
    pub async fn restart(&mut self, i: usize) {
        if let Some(mut idmd) = self.nodes[i].take() {
            idmd.kill();
        }
        self.spawn(i).await;
    }

    /// The SurrealDB server (its URL, root user, log).
    pub fn server(&self) -> &SurrealServer {
        &self.server
    }

    pub fn server_mut(&mut self) -> &mut SurrealServer {
        &mut self.server
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Every running node's log and the server's, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                text.push_str(&format!(
                    "--- node {i} ({}):\n{}\n",
                    node.endpoint,
                    node.log()
                ));
            }
        }
        text.push_str(&format!("--- SurrealDB:\n{}", self.server.log()));
        text
    }
}

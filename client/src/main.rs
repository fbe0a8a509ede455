//! idmctl: the command line of idm. Arguments and dispatch; each command group
//! lives in its own module.

mod accounts;
mod audit;
mod backup;
mod config;
mod connect;
mod input;
mod keys;
mod objects;
mod output;
mod recon;
mod schedules;
mod session;
mod sync;
mod tokens;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tonic::Code;

use connect::Context;
use output::{CliError, Format, print_error};

/// idmctl talks to idmd over gRPC: managed objects, the audit trail, API
/// tokens, connectors, mappings, reconciliations and schedules.
#[derive(Debug, Parser)]
#[command(name = "idmctl", version, max_term_width = 100)]
#[command(after_help = "\
Single objects print as pretty Wren:IDM JSON; lists print as tables (or JSON with --output json).
Errors go to stderr as `idmctl: <CODE>: <message>`; the exit code is 1 for server and
connection errors and 2 for usage errors.
Every call of one run carries the same x-request-id (IDM_REQUEST_ID if set, else a new UUIDv7):
find it in idmd's log, or with `idmctl audit query --filter 'requestId eq \"<id>\"'`.")]
struct Cli {
    /// The idmd gRPC endpoint.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "IDM_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    endpoint: String,

    /// A CA certificate (PEM) to trust for an https:// endpoint, besides the
    /// system's roots.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "IDM_CA",
        value_name = "FILE"
    )]
    ca: Option<std::path::PathBuf>,

    /// The bearer token (an API token, or the server's IDM_ADMIN_TOKEN). Prefer the
    /// environment variable: arguments show in the process list. Without it, the
    /// session of `idmctl login` for this endpoint.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "IDM_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

    /// How to print lists.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        default_value_t = Format::Table
    )]
    output: Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, read, change, delete and query managed objects (`managed/user`, …).
    #[command(subcommand)]
    Objects(objects::ObjectsCommand),
    /// Read the audit trail: managed writes, admin actions and password checks.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Create, list and revoke API tokens; show the current caller.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// The encryption key: show its fingerprint, rotate it.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage connectors: how idm reaches external systems (`system/<connector>/<type>`).
    #[command(subcommand)]
    Connectors(config::ConfigCommand),
    /// Manage mappings: how objects of a source become objects of a target.
    #[command(subcommand)]
    Mappings(config::ConfigCommand),
    /// Reconcile mappings: start (and follow), plan, list, show and cancel runs.
    #[command(subcommand)]
    Recon(recon::ReconCommand),
    /// Implicit sync: changes waiting to reach targets; retry or discard them.
    #[command(subcommand)]
    Sync(sync::SyncCommand),
    /// Schedules: list, create, change, pause and resume them, run one now, read
    /// their execution history.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// People's accounts: create, list, show, set-password, disable, enable, delete.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Back up the whole store while idmd runs (admin scope): objects, password
    /// hashes and sealed secrets as stored, links, conf, audit, accounts,
    /// tokens' hashes, schedules' state.
    ///
    /// The file is written 0600 beside FILE and renamed into place once all of
    /// it has arrived and its SHA-256 checks out. Restore it with
    /// `idmd restore --from FILE --store URL`, and serve the restored store
    /// with the same encryption key.
    Backup {
        /// Where to write the backup.
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Log in with an account name and password; later commands use the session.
    ///
    /// The password is asked for without echo, or read from the first line of
    /// stdin. The session token is kept in <config dir>/idm/session.json (0600).
    Login {
        /// The account name; default IDM_USERNAME, else asked for.
        name: Option<String>,
    },
    /// End the stored session and delete it.
    Logout,
    /// Show who idmctl calls as: a session's account, or a token.
    Whoami,
    /// Print a shell completion script, e.g. `idmctl completions bash > /etc/bash_completion.d/idmctl`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let ca = match cli.ca.as_deref().map(connect::read_ca).transpose() {
        Ok(ca) => ca,
        Err(error) => {
            print_error(&error, None);
            return ExitCode::from(2);
        }
    };
    let stored = session::Stored::load();
    // A refused login needs no advice about tokens: its message says it all.
    let logging_in = matches!(cli.command, Command::Login { .. });
    // Logout ends the stored session where it was made; other commands use
    // it when no token is given and it is for their endpoint.
    let (endpoint, token, from_session) = match (&cli.command, &stored) {
        (Command::Logout, Some(s)) => (s.endpoint.clone(), Some(s.token.clone()), true),
        // A login stands on its own: a failure is about the name and password
        // given, not the session kept from before.
        (Command::Login { .. }, _) => (cli.endpoint, None, false),
        _ => match cli.token.filter(|t| !t.is_empty()) {
            Some(token) => (cli.endpoint, Some(token), false),
            None => {
                let token = stored.as_ref().and_then(|s| s.token_for(&cli.endpoint));
                let from_session = token.is_some();
                (cli.endpoint, token, from_session)
            }
        },
    };
    let ctx = Context::new(endpoint, token, cli.output).with_ca(ca);
    match run(&ctx, cli.command, stored).await {
        Ok(code) => code,
        // `idmctl … | head`: the reader left; nothing to report.
        Err(CliError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            let advice = if logging_in {
                None
            } else {
                hint(&ctx, &error, from_session)
            };
            print_error(&error, advice);
            ExitCode::FAILURE
        }
    }
}

async fn run(
    ctx: &Context,
    command: Command,
    stored: Option<session::Stored>,
) -> Result<ExitCode, CliError> {
    match command {
        Command::Objects(command) => return objects::run(ctx, command).await,
        Command::Recon(command) => return recon::run(ctx, command).await,
        Command::Audit(command) => audit::run(ctx, command).await?,
        Command::Sync(command) => sync::run(ctx, command).await?,
        Command::Schedules(command) => schedules::run(ctx, command).await?,
        Command::Tokens(command) => tokens::run(ctx, command).await?,
        Command::Keys(command) => keys::run(ctx, command).await?,
        Command::Accounts(command) => accounts::run(ctx, command).await?,
        Command::Backup { to, force } => backup::run(ctx, &to, force).await?,
        Command::Login { name } => session::login(ctx, name).await?,
        Command::Whoami => session::whoami(ctx).await?,
        Command::Logout => session::logout(ctx, stored).await?,
        Command::Connectors(command) => config::connectors(ctx, command).await?,
        Command::Mappings(command) => config::mappings(ctx, command).await?,
        Command::Completions { shell } => {
            // Into a buffer first: `generate` panics if its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "idmctl", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of advice for errors with an obvious local cause.
fn hint(ctx: &Context, error: &CliError, from_session: bool) -> Option<&'static str> {
    match error {
        CliError::Status(s) if s.code() == Code::Unauthenticated && !ctx.has_token() => {
            Some("no token given: pass --token, set IDM_TOKEN or run `idmctl login`")
        }
        CliError::Status(s) if s.code() == Code::Unauthenticated && from_session => {
            Some("the stored session has ended: run `idmctl login` again")
        }
        CliError::Connect { reason, .. } if connect::is_certificate_error(reason) => {
            Some(if reason.contains("not valid for name") {
                "the certificate does not name this host: use a name it was issued for in --endpoint"
            } else {
                "pass --ca FILE or set IDM_CA: the CA certificate (PEM) that issued idmd's certificate"
            })
        }
        CliError::Connect { .. } => Some("is idmd running there? Set --endpoint or IDM_ENDPOINT"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn certificate_errors_hint_at_the_ca_or_the_name() {
        let ctx = Context::new("https://localhost:1".into(), None, Format::Table);
        let connect = |reason: &str| CliError::Connect {
            endpoint: ctx.endpoint.clone(),
            reason: reason.into(),
        };
        let unknown = connect("invalid peer certificate: UnknownIssuer");
        assert!(hint(&ctx, &unknown, false).is_some_and(|h| h.contains("--ca FILE or set IDM_CA")));
        let name =
            connect("invalid peer certificate: certificate not valid for name \"127.0.0.1\"; …");
        assert!(hint(&ctx, &name, false).is_some_and(|h| h.contains("issued for")));
        let refused = connect("tcp connect error: Connection refused (os error 111)");
        assert!(hint(&ctx, &refused, false).is_some_and(|h| h.contains("is idmd running")));
    }
}

//! `idmctl accounts …`: people's accounts (admin scope). Passwords are read
//! from the terminal without echo, or from the first line of stdin; never
//! from the command line.

use clap::{Subcommand, ValueEnum};
use idm_proto::v1::{
    Account, CreateAccountRequest, DeleteAccountRequest, GetAccountRequest, ListAccountsRequest,
    Scope, SetAccountEnabledRequest, SetAccountPasswordRequest, SetAccountRoleRequest,
};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::output::{
    CliError, Format, count_note, note, print_json, print_line, table, time_cell, time_json,
};
use crate::session::{read_password, scope_name};

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account; its password is asked for (twice) or read from stdin.
    #[command(after_help = "Example:\n  idmctl accounts create alice --role read")]
    Create {
        /// The login name: 1-64 of letters, digits and . _ @ -.
        name: String,
        /// What its sessions may do: read, scim (writes managed objects) or admin.
        #[arg(long, value_enum)]
        role: RoleArg,
    },
    /// List accounts.
    List,
    /// Show one account.
    Show { name: String },
    /// Give an account a new password (asked for, or read from stdin); its sessions end.
    SetPassword { name: String },
    /// Give an account another role; if it changed, its sessions end. The last
    /// enabled admin keeps its role.
    #[command(after_help = "Example:\n  idmctl accounts set-role alice scim")]
    SetRole {
        name: String,
        /// read, scim (writes managed objects) or admin.
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Disable an account: it cannot log in, and its sessions end.
    Disable { name: String },
    /// Enable a disabled account.
    Enable { name: String },
    /// Delete an account and end its sessions. Deleting an unknown one succeeds.
    Delete { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Read,
    Scim,
    Admin,
}

impl From<RoleArg> for Scope {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Read => Scope::Read,
            RoleArg::Scim => Scope::Scim,
            RoleArg::Admin => Scope::Admin,
        }
    }
}

pub async fn run(ctx: &Context, command: AccountsCommand) -> Result<(), CliError> {
    let account = match command {
        AccountsCommand::Create { name, role } => {
            let password = read_password(&format!("Password for {name}: "), true)?;
            let request = CreateAccountRequest {
                name,
                password,
                role: Scope::from(role).into(),
            };
            ctx.connect()
                .await?
                .accounts()
                .create_account(request)
                .await?
        }
        AccountsCommand::List => {
            let mut client = ctx.connect().await?.accounts();
            let accounts = client
                .list_accounts(ListAccountsRequest {})
                .await?
                .into_inner()
                .accounts;
            return match ctx.format {
                Format::Json => print_json(&json!({
                    "result": accounts.iter().map(account_json).collect::<Vec<_>>()
                })),
                Format::Table => {
                    if !accounts.is_empty() {
                        print_line(&account_table(&accounts).to_string())?;
                    }
                    note(&count_note(accounts.len(), "account"));
                    Ok(())
                }
            };
        }
        AccountsCommand::Show { name } => {
            ctx.connect()
                .await?
                .accounts()
                .get_account(GetAccountRequest { name })
                .await?
        }
        AccountsCommand::SetPassword { name } => {
            let password = read_password(&format!("New password for {name}: "), true)?;
            ctx.connect()
                .await?
                .accounts()
                .set_account_password(SetAccountPasswordRequest { name, password })
                .await?
        }
        AccountsCommand::SetRole { name, role } => {
            ctx.connect()
                .await?
                .accounts()
                .set_account_role(SetAccountRoleRequest {
                    name,
                    role: Scope::from(role).into(),
                })
                .await?
        }
        AccountsCommand::Disable { name } => set_enabled(ctx, name, false).await?,
        AccountsCommand::Enable { name } => set_enabled(ctx, name, true).await?,
        AccountsCommand::Delete { name } => {
            ctx.connect()
                .await?
                .accounts()
                .delete_account(DeleteAccountRequest { name: name.clone() })
                .await?;
            return print_line(&format!("deleted internal/user/{}", short(&name)));
        }
    };
    print_json(&account_json(&account.into_inner()))
}

async fn set_enabled(
    ctx: &Context,
    name: String,
    enabled: bool,
) -> Result<tonic::Response<Account>, CliError> {
    Ok(ctx
        .connect()
        .await?
        .accounts()
        .set_account_enabled(SetAccountEnabledRequest { name, enabled })
        .await?)
}

fn short(name: &str) -> &str {
    name.strip_prefix("internal/user/").unwrap_or(name)
}

fn account_table(accounts: &[Account]) -> comfy_table::Table {
    let mut table = table(["name", "role", "enabled", "last login", "created"]);
    for account in accounts {
        let last_login = match &account.last_login_time {
            Some(time) => time_cell(Some(time)),
            None => "never".to_string(),
        };
        table.add_row([
            account.id.clone(),
            scope_name(account.role).to_string(),
            if account.enabled { "yes" } else { "no" }.to_string(),
            last_login,
            time_cell(account.create_time.as_ref()),
        ]);
    }
    table
}

fn account_json(account: &Account) -> Json {
    json!({
        "name": account.name,
        "id": account.id,
        "role": scope_name(account.role),
        "enabled": account.enabled,
        "createTime": time_json(account.create_time.as_ref()),
        "lastLoginTime": time_json(account.last_login_time.as_ref()),
    })
}

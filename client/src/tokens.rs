//! `idmctl tokens …`: API tokens.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use idm_proto::v1::{
    CreateTokenRequest, GetCallerRequest, ListTokensRequest, RevokeTokenRequest, Scope, Token,
};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::output::{
    CliError, Format, count_note, note, print_json, print_line, table, time_cell, time_json,
};

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print its secret, once (admin scope).
    ///
    /// idm stores only a hash: the secret cannot be shown again.
    #[command(
        after_help = "Example:\n  idmctl tokens create --scope scim --description 'SCIM gateway' --ttl 90d"
    )]
    Create {
        /// What the token may do: read (reads everything but tokens), scim
        /// (reads and writes managed objects), admin (everything),
        /// verify-password (checks passwords and nothing else; read and scim
        /// tokens may not).
        #[arg(long, value_enum)]
        scope: ScopeArg,
        /// A note on what the token is for.
        #[arg(long)]
        description: Option<String>,
        /// Lifetime: a number and a unit, d, h, m or s (30d, 12h, 90m, 3600s).
        /// Without it the token never expires.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<prost_types::Duration>,
    },
    /// List tokens (admin scope); revoked ones only with --all.
    List {
        /// Include revoked tokens.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token (admin scope). Revoking an unknown or revoked token succeeds.
    Revoke {
        /// The token id, or `tokens/<id>`.
        id: String,
    },
    /// Show which token this idmctl is using, and its scope.
    Whoami,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Read,
    Scim,
    Admin,
    VerifyPassword,
}

impl From<ScopeArg> for Scope {
    fn from(scope: ScopeArg) -> Self {
        match scope {
            ScopeArg::Read => Scope::Read,
            ScopeArg::Scim => Scope::Scim,
            ScopeArg::Admin => Scope::Admin,
            ScopeArg::VerifyPassword => Scope::VerifyPassword,
        }
    }
}

/// `30d`, `12h`, `90m`, `3600s` as a protobuf duration.
pub fn parse_ttl(text: &str) -> Result<prost_types::Duration, String> {
    const FORMS: &str = "expected a number and a unit (d, h, m or s), such as 30d, 12h, 90m, 3600s";
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\": no unit; {FORMS}"))?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| format!("\"{text}\": {FORMS}"))?;
    let unit_seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("\"{text}\": unknown unit \"{unit}\"; {FORMS}")),
    };
    if number == 0 {
        return Err(format!("\"{text}\": a lifetime must be positive"));
    }
    let seconds = number
        .checked_mul(unit_seconds)
        .ok_or_else(|| format!("\"{text}\": too long"))?;
    Ok(prost_types::Duration { seconds, nanos: 0 })
}

pub async fn run(ctx: &Context, command: TokensCommand) -> Result<(), CliError> {
    match command {
        TokensCommand::Create {
            scope,
            description,
            ttl,
        } => {
            let request = CreateTokenRequest {
                scope: Scope::from(scope).into(),
                description: description.unwrap_or_default(),
                ttl,
            };
            let mut client = ctx.connect().await?.tokens();
            let reply = client.create_token(request).await?.into_inner();
            let token = reply.token.unwrap_or_default();
            match ctx.format {
                Format::Json => {
                    print_json(&json!({ "token": token_json(&token), "secret": reply.secret }))
                }
                Format::Table => {
                    print_line(&token_table(std::slice::from_ref(&token)).to_string())?;
                    print_line(&format!("secret: {}", reply.secret))?;
                    note("Store the secret now: idm keeps only its hash and cannot show it again.");
                    Ok(())
                }
            }
        }
        TokensCommand::List { all } => {
            let request = ListTokensRequest {
                include_revoked: all,
            };
            let mut client = ctx.connect().await?.tokens();
            let tokens = client.list_tokens(request).await?.into_inner().tokens;
            match ctx.format {
                Format::Json => print_json(&json!({
                    "result": tokens.iter().map(token_json).collect::<Vec<_>>()
                })),
                Format::Table => {
                    if !tokens.is_empty() {
                        print_line(&token_table(&tokens).to_string())?;
                    }
                    note(&count_note(tokens.len(), "token"));
                    Ok(())
                }
            }
        }
        TokensCommand::Revoke { id } => {
            let id = id.strip_prefix("tokens/").unwrap_or(&id);
            if id.is_empty() {
                return Err(CliError::input("revoke: the token id is empty"));
            }
            let name = format!("tokens/{id}");
            let token = ctx
                .connect()
                .await?
                .tokens()
                .revoke_token(RevokeTokenRequest { name })
                .await?
                .into_inner();
            match ctx.format {
                Format::Json => print_json(&token_json(&token)),
                Format::Table => print_line(&format!("revoked {}", token.name)),
            }
        }
        TokensCommand::Whoami => {
            let mut client = ctx.connect().await?.tokens();
            let token = client.get_caller(GetCallerRequest {}).await?.into_inner();
            match ctx.format {
                Format::Json => print_json(&token_json(&token)),
                Format::Table => {
                    let mut line = format!("{} (scope {})", token.name, scope_name(token.scope));
                    if !token.description.is_empty() {
                        line.push_str(&format!(": {}", token.description));
                    }
                    print_line(&line)
                }
            }
        }
    }
}

fn scope_name(scope: i32) -> &'static str {
    match Scope::try_from(scope) {
        Ok(Scope::Read) => "read",
        Ok(Scope::Scim) => "scim",
        Ok(Scope::Admin) => "admin",
        Ok(Scope::VerifyPassword) => "verify-password",
        Ok(Scope::Unspecified) | Err(_) => "none",
    }
}

/// active, revoked or expired.
fn status(token: &Token) -> &'static str {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    if token.revoked {
        "revoked"
    } else if token.expire_time.is_some_and(|t| t.seconds <= now) {
        "expired"
    } else {
        "active"
    }
}

fn token_table(tokens: &[Token]) -> comfy_table::Table {
    let mut table = table(["id", "scope", "status", "description", "created", "expires"]);
    for token in tokens {
        let expires = match &token.expire_time {
            Some(time) => time_cell(Some(time)),
            None => "never".to_string(),
        };
        table.add_row([
            token.id.clone(),
            scope_name(token.scope).to_string(),
            status(token).to_string(),
            token.description.clone(),
            time_cell(token.create_time.as_ref()),
            expires,
        ]);
    }
    table
}

fn token_json(token: &Token) -> Json {
    json!({
        "name": token.name,
        "id": token.id,
        "scope": scope_name(token.scope),
        "description": token.description,
        "createTime": time_json(token.create_time.as_ref()),
        "expireTime": time_json(token.expire_time.as_ref()),
        "revoked": token.revoked,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_days_hours_minutes_seconds() {
        assert_eq!(parse_ttl("30d").unwrap().seconds, 30 * 86_400);
        assert_eq!(parse_ttl("12h").unwrap().seconds, 12 * 3_600);
        assert_eq!(parse_ttl("90m").unwrap().seconds, 5_400);
        assert_eq!(parse_ttl("3600s").unwrap().seconds, 3_600);
    }

    #[test]
    fn bad_ttls_say_what_is_expected() {
        for bad in [
            "",
            "30",
            "d",
            "1w",
            "-1d",
            "1.5h",
            "0s",
            "12 h",
            "99999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad} should not parse");
        }
        assert!(parse_ttl("30").unwrap_err().contains("such as 30d"));
    }

    #[test]
    fn revoked_and_expired_tokens_are_marked() {
        let mut token = Token::default();
        assert_eq!(status(&token), "active");
        token.expire_time = Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(status(&token), "expired");
        token.revoked = true;
        assert_eq!(status(&token), "revoked");
    }
}

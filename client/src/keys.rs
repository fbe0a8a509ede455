//! `idmctl keys …`: the encryption key (fingerprints only; key material never
//! leaves idmd).

use clap::Subcommand;
use idm_proto::v1::{GetKeyRequest, RotateKeyRequest, RotateKeyResponse};
use serde_json::json;

use crate::connect::Context;
use crate::output::{CliError, Format, note, print_json, print_line};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the key in use: its fingerprint and where it comes from (admin scope).
    Show,
    /// Re-seal every sealed value (passwords, connector secrets) under a new
    /// key (admin scope).
    ///
    /// idmd writes the new key beside its key file, re-seals online (writes go
    /// on), then replaces the key file. A stop midway is resumed at the next
    /// start. Not possible when the key comes from IDM_ENCRYPTION_KEY: idmd
    /// says how to move it into a key file first.
    #[command(
        after_help = "Back up the new key file afterwards: without it the store's \
                            secrets cannot be opened, and idmd will not start."
    )]
    Rotate,
}

pub async fn run(ctx: &Context, command: KeysCommand) -> Result<(), CliError> {
    let mut client = ctx.connect().await?.keys();
    match command {
        KeysCommand::Show => {
            let key = client.get_key(GetKeyRequest {}).await?.into_inner();
            match ctx.format {
                Format::Json => print_json(&json!({
                    "fingerprint": key.fingerprint,
                    "source": key.source,
                    "rotatingTo": (!key.rotating_to.is_empty()).then_some(&key.rotating_to),
                })),
                Format::Table => {
                    print_line(&format!("fingerprint: {}", key.fingerprint))?;
                    print_line(&format!("source:      {}", key.source))?;
                    if !key.rotating_to.is_empty() {
                        print_line(&format!("rotating to: {}", key.rotating_to))?;
                    }
                    Ok(())
                }
            }
        }
        KeysCommand::Rotate => {
            let done = client.rotate_key(RotateKeyRequest {}).await?.into_inner();
            match ctx.format {
                Format::Json => print_json(&rotation_json(&done)),
                Format::Table => {
                    print_line(&format!(
                        "rotated {} -> {}",
                        done.previous_fingerprint, done.fingerprint
                    ))?;
                    print_line(&format!(
                        "re-sealed {} passwords, {} connector secrets",
                        done.credentials_resealed, done.config_values_resealed
                    ))?;
                    if done.unreadable > 0 {
                        note(&format!(
                            "{} sealed values open with neither key and were left as they were",
                            done.unreadable
                        ));
                    }
                    note(&format!(
                        "the new key is in {}: back it up now",
                        done.key_file
                    ));
                    Ok(())
                }
            }
        }
    }
}

fn rotation_json(done: &RotateKeyResponse) -> serde_json::Value {
    json!({
        "fingerprint": done.fingerprint,
        "previousFingerprint": done.previous_fingerprint,
        "credentialsResealed": done.credentials_resealed,
        "configValuesResealed": done.config_values_resealed,
        "unreadable": done.unreadable,
        "keyFile": done.key_file,
    })
}

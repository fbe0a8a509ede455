//! `idmctl connectors …` and `idmctl mappings …`: configuration documents in
//! Wren:IDM's JSON shape (ConfigService).

use clap::Subcommand;
use idm_proto::json::{from_proto_struct, to_proto_struct};
use idm_proto::v1::{
    Connector, DeleteConnectorRequest, DeleteMappingRequest, GetConnectorRequest,
    GetMappingRequest, ListConnectorsRequest, ListMappingsRequest, Mapping, PutConnectorRequest,
    PutMappingRequest, TestConnectorRequest,
};
use serde_json::{Value as Json, json};

use crate::connect::Context;
use crate::input::read_object;
use crate::output::{CliError, Format, count_note, note, print_json, print_line, table};

/// The same verbs for connectors and mappings.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List them, with their names and what they connect.
    List,
    /// Print one's JSON definition (secret values come back as `{"$redacted": true}`).
    Get {
        /// Its name (with or without the `connectors/` or `mappings/` prefix).
        name: String,
    },
    /// Create or replace one from its JSON definition (admin scope) and print the stored definition.
    #[command(
        after_help = "Examples:\n  idmctl connectors put hr --data @connector-hr.json\n  idmctl mappings put hrEmployee_managedUser --data @mapping.json"
    )]
    Put {
        /// Its name (with or without the `connectors/` or `mappings/` prefix).
        name: String,
        /// The definition: inline JSON, `@file.json`, or `@-` for stdin.
        #[arg(long, value_name = "JSON")]
        data: String,
    },
    /// Delete one (admin scope); says whether it existed.
    Delete {
        /// Its name (with or without the `connectors/` or `mappings/` prefix).
        name: String,
    },
    /// Connectors only: open it and read from each of its object types, which
    /// proves the address, the credentials and the read rights (admin scope).
    Test {
        /// Its name (with or without the `connectors/` prefix).
        name: String,
    },
}

/// `hr` or `connectors/hr` → `connectors/hr`.
fn full_name(prefix: &str, name: &str) -> String {
    if name.starts_with(prefix) {
        name.to_string()
    } else {
        format!("{prefix}{name}")
    }
}

fn definition(s: Option<&prost_types::Struct>) -> Json {
    Json::Object(s.map(from_proto_struct).unwrap_or_default())
}

fn print_existed(ctx: &Context, name: &str, existed: bool) -> Result<(), CliError> {
    match ctx.format {
        Format::Json => print_json(&json!({ "existed": existed })),
        Format::Table if existed => print_line(&format!("deleted {name}")),
        Format::Table => print_line(&format!("{name} did not exist; nothing deleted")),
    }
}

pub async fn connectors(ctx: &Context, command: ConfigCommand) -> Result<(), CliError> {
    const PREFIX: &str = "connectors/";
    // Read local input before dialing.
    let body = match &command {
        ConfigCommand::Put { data, .. } => Some(read_object(data)?),
        _ => None,
    };
    let mut client = ctx.connect().await?.config();
    match command {
        ConfigCommand::List => {
            let connectors = client
                .list_connectors(ListConnectorsRequest {})
                .await?
                .into_inner()
                .connectors;
            match ctx.format {
                Format::Json => print_json(&json!({
                    "result": connectors.iter().map(connector_json).collect::<Vec<_>>()
                })),
                Format::Table => {
                    if !connectors.is_empty() {
                        let mut table = table(["name", "type"]);
                        for c in &connectors {
                            let name = c.name.strip_prefix(PREFIX).unwrap_or(&c.name);
                            table.add_row([name, c.connector_type.as_str()]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&count_note(connectors.len(), "connector"));
                    Ok(())
                }
            }
        }
        ConfigCommand::Get { name } => {
            let request = GetConnectorRequest {
                name: full_name(PREFIX, &name),
                ..Default::default()
            };
            let connector = client.get_connector(request).await?.into_inner();
            print_json(&definition(connector.configuration.as_ref()))
        }
        ConfigCommand::Put { name, .. } => {
            let connector = Connector {
                name: full_name(PREFIX, &name),
                connector_type: String::new(),
                configuration: body.as_ref().map(to_proto_struct),
            };
            let request = PutConnectorRequest {
                connector: Some(connector),
            };
            let stored = client.put_connector(request).await?.into_inner();
            print_json(&definition(stored.configuration.as_ref()))
        }
        ConfigCommand::Delete { name } => {
            let name = full_name(PREFIX, &name);
            let request = DeleteConnectorRequest { name: name.clone() };
            let existed = client.delete_connector(request).await?.into_inner().existed;
            print_existed(ctx, &name, existed)
        }
        ConfigCommand::Test { name } => {
            let name = full_name(PREFIX, &name);
            let tested = client
                .test_connector(TestConnectorRequest { name: name.clone() })
                .await?
                .into_inner();
            if let Format::Json = ctx.format {
                print_json(&json!({
                    "ok": tested.ok, "message": tested.message, "objectTypes": tested.object_types,
                }))?;
            } else if tested.ok {
                print_line(&format!("ok: {}", tested.message))?;
            }
            if tested.ok {
                Ok(())
            } else {
                Err(CliError::Failed(format!("{name}: {}", tested.message)))
            }
        }
    }
}

pub async fn mappings(ctx: &Context, command: ConfigCommand) -> Result<(), CliError> {
    const PREFIX: &str = "mappings/";
    let body = match &command {
        ConfigCommand::Put { data, .. } => Some(read_object(data)?),
        _ => None,
    };
    let mut client = ctx.connect().await?.config();
    match command {
        ConfigCommand::List => {
            let mappings = client
                .list_mappings(ListMappingsRequest {})
                .await?
                .into_inner()
                .mappings;
            match ctx.format {
                Format::Json => print_json(&json!({
                    "result": mappings.iter().map(mapping_json).collect::<Vec<_>>()
                })),
                Format::Table => {
                    if !mappings.is_empty() {
                        let mut table = table(["name", "source", "target", "sync"]);
                        for m in &mappings {
                            let name = m.name.strip_prefix(PREFIX).unwrap_or(&m.name);
                            let sync = if m.enable_sync { "on" } else { "off" };
                            table.add_row([name, &m.source, &m.target, sync]);
                        }
                        print_line(&table.to_string())?;
                    }
                    note(&count_note(mappings.len(), "mapping"));
                    Ok(())
                }
            }
        }
        ConfigCommand::Get { name } => {
            let request = GetMappingRequest {
                name: full_name(PREFIX, &name),
            };
            let mapping = client.get_mapping(request).await?.into_inner();
            print_json(&definition(mapping.definition.as_ref()))
        }
        ConfigCommand::Put { name, .. } => {
            let mapping = Mapping {
                name: full_name(PREFIX, &name),
                definition: body.as_ref().map(to_proto_struct),
                ..Mapping::default()
            };
            let request = PutMappingRequest {
                mapping: Some(mapping),
            };
            let stored = client.put_mapping(request).await?.into_inner();
            print_json(&definition(stored.definition.as_ref()))
        }
        ConfigCommand::Delete { name } => {
            let name = full_name(PREFIX, &name);
            let request = DeleteMappingRequest { name: name.clone() };
            let existed = client.delete_mapping(request).await?.into_inner().existed;
            print_existed(ctx, &name, existed)
        }
        ConfigCommand::Test { .. } => Err(CliError::input(
            "test applies to connectors: idmctl connectors test <name>",
        )),
    }
}

fn connector_json(connector: &Connector) -> Json {
    json!({
        "name": connector.name,
        "connectorType": connector.connector_type,
        "configuration": definition(connector.configuration.as_ref()),
    })
}

fn mapping_json(mapping: &Mapping) -> Json {
    json!({
        "name": mapping.name,
        "source": mapping.source,
        "target": mapping.target,
        "enableSync": mapping.enable_sync,
        "definition": definition(mapping.definition.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_their_prefix_once() {
        assert_eq!(full_name("connectors/", "hr"), "connectors/hr");
        assert_eq!(full_name("connectors/", "connectors/hr"), "connectors/hr");
    }
}

//! `hull admin`: the operator's tenants and keys (over the Unix socket).

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use hull_api::{Client, Method};
use serde_json::Value;

use crate::containers::failed;
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage tenants' access keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Container seconds billed, per tenant, container and size.
    Usage(crate::usage::AdminUsageArgs),
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant, with Hyper.sh's default quota unless overridden.
    Create {
        name: String,
        /// containers=20,images=20,volumes=40,snapshots=40,fips=2,memory=8g,cpus=16
        #[arg(long, default_value = "")]
        quota: String,
    },
    /// List tenants.
    #[command(alias = "list")]
    Ls,
    /// Show a tenant, its quota and its keys, as JSON.
    Inspect { name: String },
    /// Change a tenant's quota (only the entries given).
    Quota { name: String, quota: String },
    /// Remove a tenant and revoke its keys; refused while it owns
    /// containers, volumes or snapshots, unless --force removes them too.
    #[command(alias = "remove")]
    Rm {
        name: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Print the name of the tenant's own network, made if missing.
    Network { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Issue an access key and secret key (the secret is shown only now),
    /// or with --tls-client a client certificate for the docker CLI.
    Create {
        tenant: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Issue a client certificate (ca.pem, cert.pem, key.pem) instead.
        #[arg(long)]
        tls_client: bool,
        /// Where --tls-client writes its files (./<tenant>-tls by default).
        #[arg(long, requires = "tls_client")]
        out: Option<std::path::PathBuf>,
    },
    /// List keys (never their secrets).
    #[command(alias = "list")]
    Ls {
        /// Only this tenant's keys.
        tenant: Option<String>,
    },
    /// Revoke a key: requests signed with it are refused from now on.
    #[command(alias = "remove")]
    Rm { access_key: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

pub async fn admin(client: &Client, command: AdminCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: AdminCommand) -> Result<i32> {
    match command {
        AdminCommand::Tenant(command) => tenant(client, command).await,
        AdminCommand::Key(command) => key(client, command).await,
        AdminCommand::Usage(args) => crate::usage::admin_usage(client, args).await,
    }
}

async fn tenant(client: &Client, command: TenantCommand) -> Result<i32> {
    match command {
        TenantCommand::Create { name, quota } => {
            let body = serde_json::json!({"Name": name, "Quota": quota});
            let made: Value = client
                .call_json(Method::POST, "/hull/admin/tenants", Some(&body))
                .await?;
            println!("{}", made["Name"].as_str().unwrap_or_default());
        }
        TenantCommand::Ls => {
            let tenants: Vec<Value> = client.get_json("/hull/admin/tenants").await?;
            let mut rows = vec![vec!["TENANT".to_owned(), "QUOTA".to_owned()]];
            for tenant in &tenants {
                rows.push(vec![
                    tenant["Name"].as_str().unwrap_or_default().to_owned(),
                    quota_text(&tenant["Quota"]),
                ]);
            }
            print_table(&rows);
        }
        TenantCommand::Inspect { name } => {
            let tenant: Value = client
                .get_json(&format!("/hull/admin/tenants/{}", encode(&name)))
                .await?;
            println!("{}", serde_json::to_string_pretty(&tenant)?);
        }
        TenantCommand::Quota { name, quota } => {
            let path = format!("/hull/admin/tenants/{}/quota", encode(&name));
            let tenant: Value = client.call_json(Method::POST, &path, Some(&quota)).await?;
            println!("{}", quota_text(&tenant["Quota"]));
        }
        TenantCommand::Network { name } => {
            let path = format!("/hull/admin/tenants/{}/network", encode(&name));
            let network: Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            println!("{}", network["Name"].as_str().unwrap_or_default());
        }
        TenantCommand::Rm { name, force } => {
            let mut path = format!("/hull/admin/tenants/{}", encode(&name));
            if force {
                path.push_str("?force=1");
            }
            client
                .call_json::<()>(Method::DELETE, &path, None::<&()>)
                .await?;
            println!("{name}");
        }
    }
    Ok(0)
}

async fn key(client: &Client, command: KeyCommand) -> Result<i32> {
    match command {
        KeyCommand::Create {
            tenant,
            tls_client: true,
            out,
            ..
        } => {
            let path = format!("/hull/admin/tenants/{}/certs", encode(&tenant));
            let bundle: Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            let out = out.unwrap_or_else(|| format!("{tenant}-tls").into());
            write_bundle(&out, &bundle)?;
            println!("{}", out.display());
            eprintln!(
                "docker --tlsverify --tlscacert {0}/ca.pem --tlscert {0}/cert.pem --tlskey {0}/key.pem -H tcp://HOST:PORT …",
                out.display()
            );
        }
        KeyCommand::Create { tenant, format, .. } => {
            let path = format!("/hull/admin/tenants/{}/keys", encode(&tenant));
            let key: Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string(&key)?),
                Format::Text => {
                    println!(
                        "Access key: {}",
                        key["AccessKey"].as_str().unwrap_or_default()
                    );
                    println!(
                        "Secret key: {}",
                        key["SecretKey"].as_str().unwrap_or_default()
                    );
                    eprintln!("The secret key is shown only now: keep it.");
                }
            }
        }
        KeyCommand::Ls { tenant } => {
            let path = match tenant {
                Some(tenant) => format!("/hull/admin/keys?tenant={}", encode(&tenant)),
                None => "/hull/admin/keys".to_owned(),
            };
            let keys: Vec<Value> = client.get_json(&path).await?;
            let mut rows = vec![vec!["ACCESS KEY".to_owned(), "TENANT".to_owned()]];
            for key in &keys {
                rows.push(vec![
                    key["AccessKey"].as_str().unwrap_or_default().to_owned(),
                    key["Tenant"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            print_table(&rows);
        }
        KeyCommand::Rm { access_key } => {
            let path = format!("/hull/admin/keys/{}", encode(&access_key));
            client
                .call_json::<()>(Method::DELETE, &path, None::<&()>)
                .await?;
            println!("{access_key}");
        }
    }
    Ok(0)
}

/// Writes a client certificate bundle as docker reads it; the key 0600.
fn write_bundle(dir: &std::path::Path, bundle: &Value) -> Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, field, mode) in [
        ("ca.pem", "Ca", 0o644),
        ("cert.pem", "Cert", 0o644),
        ("key.pem", "Key", 0o600),
    ] {
        let path = dir.join(file);
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("cannot create {} (is it there already?)", path.display()))?;
        out.write_all(bundle[field].as_str().unwrap_or_default().as_bytes())?;
    }
    Ok(())
}

/// `containers=10,images=20,…` with unlimited entries left out.
fn quota_text(quota: &Value) -> String {
    let names = [
        ("Containers", "containers"),
        ("Images", "images"),
        ("Volumes", "volumes"),
        ("Snapshots", "snapshots"),
        ("Fips", "fips"),
        ("MemoryMib", "memory_mib"),
        ("Cpus", "cpus"),
    ];
    names
        .iter()
        .filter_map(|(field, name)| Some(format!("{name}={}", quota[field].as_u64()?)))
        .collect::<Vec<_>>()
        .join(",")
}

//! `hull service`: a stable address and DNS name on a network that
//! balances TCP connections (or HTTP requests) over the healthy replicas
//! of one image.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hull_api::{Client, Method};
use hull_net::service::{Algorithm, HealthCheck, Protocol, ServiceSpec};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service and start its replicas.
    Create(CreateArgs),
    /// List services.
    #[command(alias = "list")]
    Ls,
    /// Show services in detail, their replicas and health.
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Remove services and their replicas.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Replace the replicas with ones of IMAGE, one at a time, each once
    /// the one before is healthy; back to the old image if one never is.
    RollingUpdate {
        #[arg(long)]
        image: String,
        service: String,
    },
    /// Make floating IP FIP the service's public address: its port there
    /// reaches the balancer, and its replicas go out from it.
    AttachFip {
        #[arg(long)]
        fip: String,
        /// Move it from the container or service it is attached to now.
        #[arg(short, long)]
        force: bool,
        service: String,
    },
    /// Detach the service's floating IP.
    DetachFip { service: String },
    /// Set the number of replicas: hull service scale web=5.
    Scale {
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The service's name: also its DNS name on its network.
    #[arg(long)]
    name: String,
    /// The bridge network (a tenant's services are on its own network).
    #[arg(long, default_value = "")]
    network: String,
    #[arg(long, default_value_t = 1)]
    replicas: u64,
    /// The port the service's address takes connections on.
    #[arg(long)]
    service_port: u64,
    /// The replicas' port those connections go to.
    #[arg(long)]
    container_port: u64,
    /// tcp (connections), or http (each request on its own, through
    /// hulld's proxy, with X-Forwarded-For).
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// roundrobin, leastconn (fewest open connections or requests in
    /// flight), or source (by the client's address).
    #[arg(long, default_value = "roundrobin")]
    algorithm: String,
    /// A client keeps its replica while that replica is healthy.
    #[arg(long)]
    session_affinity: bool,
    /// interval=3s,fall=3,rise=2[,path=/healthz]: TCP probes of each
    /// replica from the host, or HTTP GETs of the path (2xx/3xx pass).
    #[arg(long, default_value = "")]
    health_check: String,
    /// The replicas' size (S1, S2, M1, ...).
    #[arg(long, default_value = "")]
    size: String,
    /// A security group the replicas are in (repeat for more); it must
    /// let the container port in, where the balancer's probes and
    /// connections come from.
    #[arg(long = "sg", value_name = "NAME")]
    sg: Vec<String>,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

pub async fn service(client: &Client, command: ServiceCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: ServiceCommand) -> Result<i32> {
    match command {
        ServiceCommand::Create(args) => {
            let spec = ServiceSpec {
                name: args.name,
                network: args.network,
                replicas: args.replicas,
                service_port: args.service_port,
                container_port: args.container_port,
                protocol: args.protocol.parse::<Protocol>()?,
                algorithm: args.algorithm.parse::<Algorithm>()?,
                session_affinity: args.session_affinity,
                health_check: args.health_check.parse::<HealthCheck>()?,
                image: args.image,
                cmd: args.cmd,
                size: args.size,
                security_groups: args.sg,
            };
            let made: serde_json::Value = client
                .call_json(Method::POST, "/services/create", Some(&spec))
                .await?;
            println!("{}", made["address"].as_str().unwrap_or_default());
            Ok(0)
        }
        ServiceCommand::Ls => {
            let listing: Vec<serde_json::Value> = client.get_json("/services").await?;
            let mut rows = vec![[
                "NAME", "ADDRESS", "PORTS", "REPLICAS", "HEALTHY", "IMAGE", "NETWORK", "FIP",
            ]
            .map(str::to_owned)
            .to_vec()];
            for service in &listing {
                let text = |key: &str| service[key].as_str().unwrap_or_default().to_owned();
                let number = |key: &str| service[key].as_u64().unwrap_or_default().to_string();
                rows.push(vec![
                    text("name"),
                    text("address"),
                    format!(
                        "{}->{}/{}",
                        number("service_port"),
                        number("container_port"),
                        text("protocol")
                    ),
                    number("replicas"),
                    number("healthy"),
                    text("image"),
                    text("network"),
                    text("fip"),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        ServiceCommand::Inspect { services } => {
            inspect_each(client, &services, |name| {
                format!("/services/{}", encode(name))
            })
            .await
        }
        ServiceCommand::Rm { services } => {
            remove_each(client, &services, |name| {
                format!("/services/{}", encode(name))
            })
            .await
        }
        ServiceCommand::RollingUpdate { image, service } => {
            let path = format!(
                "/services/{}/rolling-update?image={}",
                encode(&service),
                encode(&image)
            );
            let _: serde_json::Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            Ok(0)
        }
        ServiceCommand::AttachFip {
            fip,
            force,
            service,
        } => {
            let path = format!(
                "/services/{}/attach-fip?fip={}{}",
                encode(&service),
                encode(&fip),
                if force { "&force=true" } else { "" }
            );
            let _: serde_json::Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            Ok(0)
        }
        ServiceCommand::DetachFip { service } => {
            let path = format!("/services/{}/detach-fip", encode(&service));
            let _: serde_json::Value = client.call_json(Method::POST, &path, None::<&()>).await?;
            Ok(0)
        }
        ServiceCommand::Scale { scales } => {
            for scale in scales {
                let Some((name, replicas)) = scale.split_once('=') else {
                    bail!("invalid scale {scale:?}: give SERVICE=REPLICAS, as web=5");
                };
                let path = format!(
                    "/services/{}/scale?replicas={}",
                    encode(name),
                    encode(replicas)
                );
                let _: serde_json::Value =
                    client.call_json(Method::POST, &path, None::<&()>).await?;
            }
            Ok(0)
        }
    }
}

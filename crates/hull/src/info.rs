//! `hull info`.

use anyhow::Result;
use hull_api::types::Info;
use hull_api::Client;

pub async fn show(client: &Client) -> Result<()> {
    let info: serde_json::Value = client.get_json("/info").await?;
    // A cloud's tenant is shown its own share, not the host's.
    if let Some(tenant) = info["Tenant"].as_str() {
        println!("Tenant: {tenant}");
        println!("Region: {}", info["Region"].as_str().unwrap_or("?"));
        println!(
            "Containers: {} ({} running)",
            info["Containers"], info["ContainersRunning"]
        );
        if let Some(quota) = info["Quota"].as_object() {
            let entries: Vec<String> = quota
                .iter()
                .map(|(name, limit)| match limit.as_u64() {
                    Some(limit) => format!("{name} {limit}"),
                    None => format!("{name} unlimited"),
                })
                .collect();
            println!("Quota: {}", entries.join(", "));
        }
        return Ok(());
    }
    let info: Info = serde_json::from_value(info)?;
    println!("Images: {}", info.images);
    println!("Root Dir: {}", info.root_dir);
    if let Some(accel) = info.accelerator {
        println!("Accelerator: {accel}");
    }
    if let Some(reason) = info.accelerator_reason {
        println!("  {reason}");
    }
    if let Some(template) = info.template {
        println!("VM Template: {template}");
    }
    if let Some(pooled) = info.pooled_vms {
        println!("VM Pool: {pooled} idle");
    }
    if !info.recent_starts.is_empty() {
        let count = |path: &str| info.recent_starts.iter().filter(|s| s.path == path).count();
        println!(
            "Recent VM Starts: {} from the pool, {} template clones, {} image template clones, {} cold boots",
            count("pool"),
            count("template clone"),
            count("image template clone"),
            count("cold boot")
        );
        for start in info.recent_starts.iter().rev().take(5) {
            println!("  {} {} ms  {}", start.path, start.elapsed_ms, start.vm);
        }
    }
    Ok(())
}

/// `hull version`: this client's version and the server's.
pub async fn version(client: &Client) -> Result<()> {
    println!("Client: {}", env!("CARGO_PKG_VERSION"));
    let server: serde_json::Value = client.get_json("/version").await?;
    println!(
        "Server: {} (API {}) at {}",
        server["Version"].as_str().unwrap_or("?"),
        server["ApiVersion"].as_str().unwrap_or("?"),
        client.address()
    );
    Ok(())
}

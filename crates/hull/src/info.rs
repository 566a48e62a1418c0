//! `hull info`.

use anyhow::Result;
use hull_api::types::Info;
use hull_api::Client;

pub async fn show(client: &Client) -> Result<()> {
    let info: Info = client.get_json("/info").await?;
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
    Ok(())
}

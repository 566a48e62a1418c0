//! What `inspect` and `rm` of volumes, snapshots, networks and pods share:
//! one request per name, every name tried even when one fails.

use anyhow::Result;
use hull_api::{Client, Method};

use crate::containers::failed;

/// Prints, as one JSON array, what `GET path_of(name)` answers for each
/// name; an error for one is said and the exit code tells of it.
pub async fn inspect_each(
    client: &Client,
    names: &[String],
    path_of: impl Fn(&str) -> String,
) -> Result<i32> {
    let mut found = Vec::new();
    let mut code = 0;
    for name in names {
        match client.get_json::<serde_json::Value>(&path_of(name)).await {
            Ok(object) => found.push(object),
            Err(err) => code = failed(err.into())?,
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(code)
}

/// `DELETE path_of(name)` for each name, printing the names removed.
pub async fn remove_each(
    client: &Client,
    names: &[String],
    path_of: impl Fn(&str) -> String,
) -> Result<i32> {
    let mut code = 0;
    for name in names {
        match client
            .call_json::<()>(Method::DELETE, &path_of(name), None::<&()>)
            .await
        {
            Ok(()) => println!("{name}"),
            Err(err) => code = failed(err.into())?,
        }
    }
    Ok(code)
}

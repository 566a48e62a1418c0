//! Hull's pod endpoints, as the `hull` CLI calls them.

use http_body_util::BodyExt;
use hyper::Method;

use super::{full, Client, ClientError};
use crate::types::pod::PodCreated;

impl Client {
    /// Creates a pod from the text of its pod file (YAML or JSON).
    pub async fn create_pod(&self, pod_file: &str) -> Result<PodCreated, ClientError> {
        let request = Self::request(
            Method::POST,
            "/hull/pods/create",
            full(pod_file.as_bytes().to_vec()),
        );
        let response = Self::check(self.send(request).await?).await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    }
}

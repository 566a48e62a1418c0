//! `POST /images/{name}/push?tag=…`: pushing a stored image to its registry,
//! answered with docker's JSON progress stream.

use super::RequestBody;
use hull_image::Reference;
use hyper::{Request, Response, StatusCode};

use super::pull::{transfer, Direction};
use super::{ApiError, Body};
use crate::daemon::Daemon;

/// The reference a push path and its `tag` query name.
fn parse(path: &str, query: &str) -> Result<(Reference, bool), ApiError> {
    let name = path
        .strip_prefix("/images/")
        .and_then(|p| p.strip_suffix("/push"))
        .unwrap_or("");
    let decoded = form_urlencoded::parse(format!("n={name}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut tag = None;
    let mut insecure = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "tag" if !value.is_empty() => tag = Some(value.into_owned()),
            "insecure" => insecure = matches!(&*value, "1" | "true"),
            _ => {}
        }
    }
    let name = match tag {
        Some(tag) => format!("{decoded}:{tag}"),
        None => decoded,
    };
    let reference = Reference::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((reference, insecure))
}

pub(super) async fn push(
    daemon: &Daemon,
    path: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (reference, insecure) = parse(path, request.uri().query().unwrap_or(""))?;
    transfer(daemon, &request, reference, insecure, Direction::Push)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_image_and_the_query_its_tag() {
        let (r, insecure) = parse("/images/127.0.0.1:5000/me/bb/push", "tag=mine").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/me/bb:mine");
        assert!(!insecure);
        let (r, _) = parse("/images/busybox%3A1/push", "").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1");
        assert!(parse("/images//push", "").is_err());
    }
}

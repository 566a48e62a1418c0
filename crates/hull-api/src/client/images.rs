//! Uploads of archives (`load`, `import`) and the images a container
//! becomes (`commit`, `export`), as the `hull` CLI calls them.

use std::path::Path;

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::Method;

use super::{empty, file_sha256, Client, ClientError};
use crate::types::container::IdResponse;
use crate::types::ProgressLine;

/// What `docker commit` sends besides the container.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// `repository[:tag]`; empty for an image known by its id alone.
    pub reference: String,
    pub comment: String,
    pub author: String,
    /// Dockerfile instructions applied to the new image's config.
    pub changes: Vec<String>,
}

impl Client {
    /// Uploads an image archive (a file, or stdin for `-`) and returns hulld's progress lines.
    pub async fn load(&self, archive: &Path) -> Result<Vec<ProgressLine>, ClientError> {
        self.upload("/images/load", archive).await
    }

    /// `docker import`: the tar `archive` (a file, or stdin for `-`) as a
    /// one-layer image named `reference` (may be empty), with `changes`
    /// applied; returns hulld's progress lines, the last one's status the id.
    pub async fn import(
        &self,
        archive: &Path,
        reference: &str,
        message: &str,
        changes: &[String],
    ) -> Result<Vec<ProgressLine>, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("fromSrc", "-");
        query.append_pair("repo", reference);
        query.append_pair("message", message);
        for change in changes {
            query.append_pair("changes", change);
        }
        let path = format!("/images/create?{}", query.finish());
        self.upload(&path, archive).await
    }

    /// `docker import URL`: hulld fetches the archive itself.
    pub async fn import_url(
        &self,
        url: &str,
        reference: &str,
        message: &str,
        changes: &[String],
    ) -> Result<Vec<ProgressLine>, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("fromSrc", url);
        query.append_pair("repo", reference);
        query.append_pair("message", message);
        for change in changes {
            query.append_pair("changes", change);
        }
        let path = format!("/images/create?{}", query.finish());
        let response = self
            .send(Self::request(Method::POST, &path, empty()))
            .await?;
        progress_lines(Self::check(response).await?).await
    }

    /// `POST /commit`: the container's changes as a new image; its id.
    pub async fn commit(
        &self,
        container: &str,
        options: &CommitOptions,
    ) -> Result<String, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("container", container);
        query.append_pair("repo", &options.reference);
        query.append_pair("comment", &options.comment);
        query.append_pair("author", &options.author);
        for change in &options.changes {
            query.append_pair("changes", change);
        }
        let path = format!("/commit?{}", query.finish());
        let created: IdResponse = self.call_json(Method::POST, &path, None::<&()>).await?;
        Ok(created.id)
    }

    /// Streams the tar of the container's whole filesystem into `out`.
    pub async fn export(
        &self,
        container: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), ClientError> {
        let name: String = form_urlencoded::byte_serialize(container.as_bytes()).collect();
        self.download(&format!("/containers/{name}/export"), out)
            .await
    }

    /// POSTs an archive as a streamed body. A cloud's listener holds an
    /// upload to the hash it was signed with: hash the archive first (from
    /// a spool, if it is stdin), then stream it.
    async fn upload(&self, path: &str, archive: &Path) -> Result<Vec<ProgressLine>, ClientError> {
        let response = self.upload_as(Method::POST, path, archive).await?;
        progress_lines(response).await
    }

    /// Sends `archive` as the streamed body of `method path`; the answer,
    /// once its status says success.
    pub(super) async fn upload_as(
        &self,
        method: Method,
        path: &str,
        archive: &Path,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let read_err = |source| ClientError::ReadFile {
            path: archive.to_owned(),
            source,
        };
        let mut spool = None;
        let mut hash = None;
        let reader: Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin> = if self.is_remote() {
            let path = if archive == Path::new("-") {
                let file = tempfile::NamedTempFile::new().map_err(read_err)?;
                let mut out = tokio::fs::File::from_std(file.reopen().map_err(read_err)?);
                tokio::io::copy(&mut tokio::io::stdin(), &mut out)
                    .await
                    .map_err(read_err)?;
                spool.insert(file).path().to_owned()
            } else {
                archive.to_owned()
            };
            hash = Some(file_sha256(&path).await.map_err(read_err)?);
            Box::new(tokio::fs::File::open(&path).await.map_err(read_err)?)
        } else if archive == Path::new("-") {
            Box::new(tokio::io::stdin())
        } else {
            Box::new(tokio::fs::File::open(archive).await.map_err(read_err)?)
        };
        let chunks = tokio_util::io::ReaderStream::new(reader).map_ok(Frame::data);
        let body = BodyExt::boxed(StreamBody::new(chunks));
        let mut request = Self::request(method, path, body);
        if let Some(hash) = hash {
            request.headers_mut().insert(
                hull_cloud::sign::CONTENT_SHA256_HEADER,
                HeaderValue::from_str(&hash).expect("hex is a header value"),
            );
        }
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        );
        let response = Self::check(self.send(request).await?).await?;
        drop(spool);
        Ok(response)
    }
}

/// A JSON-lines answer read whole.
async fn progress_lines(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<Vec<ProgressLine>, ClientError> {
    let body = response.into_body().collect().await?.to_bytes();
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(ClientError::from))
        .collect()
}

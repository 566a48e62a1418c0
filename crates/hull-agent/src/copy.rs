//! `docker cp`: StatPath, ReadArchive and WriteArchive. The archives travel
//! on flow-controlled streams, as a process's stdio does.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::Arc;

use hull_proto::{ErrorKind, Frame, RequestError, Response, StreamId, MAX_DATA_CHUNK};

use crate::agent::{Agent, Stream};
use crate::archive::{self, ArchiveError};
use crate::container::Container;
use crate::stdio::{StreamReader, StreamWriter};
use crate::unpack::{self, UnpackError};
use crate::{error_chain, fsat, log};

fn not_found(path: &str, container: &str) -> RequestError {
    // Docker's own words, which its clients show.
    let message = format!("Could not find the file {path} in container {container}");
    RequestError::new(ErrorKind::NotFound, message)
}

fn resolve_error(error: &ArchiveError, path: &str, container: &str) -> RequestError {
    if error.is_not_found() {
        return not_found(path, container);
    }
    // The error's own message repeats the path: keep only its cause.
    let cause = std::error::Error::source(error)
        .map_or_else(|| error.to_string(), |source| source.to_string());
    let message = format!("cannot open {path} in container {container}: {cause}");
    RequestError::new(ErrorKind::Internal, message)
}

fn unpack_error(error: &UnpackError, path: &str, container: &str) -> RequestError {
    let kind = match error {
        UnpackError::Entry { source, .. } if source.kind() != io::ErrorKind::InvalidData => {
            ErrorKind::Internal
        }
        _ => ErrorKind::InvalidRequest,
    };
    let message = format!(
        "cannot copy into {path} in container {container}: {}",
        error_chain(error)
    );
    RequestError::new(kind, message)
}

impl Agent {
    /// The container's root directory, opened to resolve paths in.
    fn open_root(&self, container: &str) -> Result<(Arc<Container>, File), RequestError> {
        let container = self.container(container)?;
        let root = File::open(container.rootfs()).map_err(|e| {
            let message = format!("cannot open the rootfs of container {}: {e}", container.id);
            RequestError::new(ErrorKind::Internal, message)
        })?;
        Ok((container, root))
    }

    pub(crate) fn stat_path(&self, container: &str, path: &str) -> Result<Response, RequestError> {
        let (found, root) = self.open_root(container)?;
        let stat = archive::stat(&root, &found.rootfs(), path)
            .map_err(|e| resolve_error(&e, path, container))?;
        Ok(Response::PathStat(stat))
    }

    /// Handles ReadArchive on its own thread: `Done`, then the tar, then `Eof`.
    pub(crate) fn read_archive(&self, request: u32, container: &str, path: &str, stream: StreamId) {
        let target = self.open_root(container).and_then(|(_, root)| {
            archive::resolve(&root, path).map_err(|e| resolve_error(&e, path, container))
        });
        self.send_tar(
            request,
            stream,
            target,
            &format!("{path} of container {container}"),
            |target, out| archive::pack(&target, out),
        );
    }

    /// Answers a request whose reply is a tar on `stream`: `Failed` when
    /// `opened` failed, else `Done`, the tar that `pack` writes, then `Eof`.
    pub(crate) fn send_tar<T, E: std::error::Error>(
        &self,
        request: u32,
        stream: StreamId,
        opened: Result<T, RequestError>,
        what: &str,
        pack: impl FnOnce(T, BufWriter<StreamWriter<'_>>) -> Result<(), E>,
    ) {
        let opened = match opened {
            Ok(opened) => opened,
            Err(error) => {
                self.unregister_streams(&[stream]);
                return self.channel.respond(request, &Response::Failed(error));
            }
        };
        self.channel.respond(request, &Response::Done);
        if let Some(Stream::Output(window)) = self.stream(stream) {
            let writer = StreamWriter {
                stream,
                window: &window,
                channel: &self.channel,
            };
            let out = BufWriter::with_capacity(MAX_DATA_CHUNK, writer);
            if let Err(e) = pack(opened, out) {
                // The host sees a tar cut short.
                log!("cannot send {what}: {}", error_chain(&e));
            }
        }
        self.channel.send(&Frame::eof(stream));
        self.unregister_streams(&[stream]);
    }

    /// Handles WriteArchive on its own thread; answers after the stream's
    /// `Eof`, or at the first failure.
    pub(crate) fn write_archive(
        &self,
        request: u32,
        container: &str,
        path: &str,
        stream: StreamId,
    ) {
        let Some(Stream::Input(queue)) = self.stream(stream) else {
            return;
        };
        let mut input = StreamReader::new(stream, &queue, &self.channel);
        let result = self
            .open_root(container)
            .and_then(|(_, root)| destination(&root, path, container))
            .and_then(|dest| {
                unpack::unpack(&dest, &mut input).map_err(|e| unpack_error(&e, path, container))
            });
        match result {
            Ok(()) => {
                input.drain();
                self.channel.respond(request, &Response::Done);
            }
            Err(error) => {
                self.channel.respond(request, &Response::Failed(error));
                input.drain();
            }
        }
        self.unregister_streams(&[stream]);
    }
}

/// The directory an archive is unpacked into; docker's messages when it is
/// missing or not a directory.
fn destination(root: &File, path: &str, container: &str) -> Result<File, RequestError> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    fsat::open_in_root(root, Path::new(path), flags).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => not_found(path, container),
        Some(libc::ENOTDIR) => {
            let message = format!("extraction point {path} is not a directory");
            RequestError::new(ErrorKind::InvalidRequest, message)
        }
        _ => {
            let message = format!("cannot open {path} in container {container}: {e}");
            RequestError::new(ErrorKind::Internal, message)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::lock;
    use crate::channel::Channel;
    use crate::testutil::Wire;
    use hull_proto::{FrameKind, Request};
    use std::fs;

    /// An agent with container `c`, whose rootfs holds /etc/hostname.
    fn agent() -> (Arc<Agent>, Wire, tempfile::TempDir) {
        let wire = Wire::default();
        let agent = Arc::new(Agent::new(Channel::new(wire.clone())));
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("rootfs/etc")).unwrap();
        fs::create_dir_all(dir.path().join("rootfs/tmp")).unwrap();
        fs::write(dir.path().join("rootfs/etc/hostname"), "box\n").unwrap();
        let container = Container {
            id: "c".into(),
            hostname: "c".into(),
            dir: dir.path().to_owned(),
        };
        lock(&agent.containers).insert("c".into(), Some(Arc::new(container)));
        (agent, wire, dir)
    }

    fn ask(agent: &Arc<Agent>, id: u32, request: &Request) {
        agent.on_request(&Frame::json(FrameKind::Request, id, request));
    }

    fn failure(frame: &Frame) -> RequestError {
        match frame.parse::<Response>().unwrap() {
            Response::Failed(error) => error,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn stat_path_names_a_missing_file_as_docker_does() {
        let (agent, _wire, _dir) = agent();
        let Response::PathStat(stat) = agent.stat_path("c", "/etc/hostname").unwrap() else {
            panic!("not a stat")
        };
        assert_eq!((stat.name.as_str(), stat.size), ("hostname", 4));
        let err = agent.stat_path("c", "/x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.message, "Could not find the file /x in container c");
        let err = agent.stat_path("nope", "/x").unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    #[test]
    fn read_archive_answers_done_then_sends_the_tar_and_eof() {
        let (agent, wire, _dir) = agent();
        let read = Request::ReadArchive {
            container: "c".into(),
            path: "/etc/hostname".into(),
            stream: 9,
        };
        ask(&agent, 3, &read);
        let start = std::time::Instant::now();
        while wire
            .frames()
            .last()
            .is_none_or(|f| f.kind != FrameKind::Eof)
        {
            assert!(start.elapsed().as_secs() < 5, "no eof");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let frames = wire.frames();
        assert_eq!(
            (frames[0].kind, frames[0].channel),
            (FrameKind::Response, 3)
        );
        assert_eq!(frames[0].parse::<Response>().unwrap(), Response::Done);
        let tar: Vec<u8> = frames[1..frames.len() - 1]
            .iter()
            .inspect(|f| assert_eq!((f.kind, f.channel), (FrameKind::Data, 9)))
            .flat_map(|f| f.payload.clone())
            .collect();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap(), Path::new("hostname"));
        let mut body = String::new();
        std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
        assert_eq!(body, "box\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(lock(&agent.streams).is_empty());
    }

    #[test]
    fn read_archive_of_a_missing_path_fails_and_sends_nothing() {
        let (agent, wire, _dir) = agent();
        let read = Request::ReadArchive {
            container: "c".into(),
            path: "/nope".into(),
            stream: 9,
        };
        ask(&agent, 3, &read);
        let frames = wire.wait_for(1);
        assert_eq!(failure(&frames[0]).kind, ErrorKind::NotFound);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(wire.frames().len(), 1);
        assert!(lock(&agent.streams).is_empty());
    }

    #[test]
    fn an_archive_on_a_stream_in_use_is_refused() {
        let (agent, wire, _dir) = agent();
        agent.register(&[(9, true)]).unwrap();
        let read = Request::ReadArchive {
            container: "c".into(),
            path: "/etc".into(),
            stream: 9,
        };
        ask(&agent, 3, &read);
        assert_eq!(
            failure(&wire.wait_for(1)[0]).kind,
            ErrorKind::InvalidRequest
        );
        assert!(matches!(agent.stream(9), Some(Stream::Input(_))));
    }

    fn tar_of(name: &str, body: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, body).unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn write_archive_unpacks_the_stream_and_answers_after_its_eof() {
        let (agent, wire, dir) = agent();
        let write = Request::WriteArchive {
            container: "c".into(),
            path: "/tmp".into(),
            stream: 5,
        };
        ask(&agent, 4, &write);
        let tar = tar_of("hello.txt", b"hi there");
        for chunk in tar.chunks(700) {
            agent.on_data(5, chunk.to_vec());
        }
        agent.on_eof(5);
        let frames = wire.wait_for(tar.chunks(700).count() + 1);
        let response = frames.last().unwrap();
        assert_eq!((response.kind, response.channel), (FrameKind::Response, 4));
        assert_eq!(response.parse::<Response>().unwrap(), Response::Done);
        let credited: u32 = frames[..frames.len() - 1]
            .iter()
            .map(|f| f.credit_bytes().unwrap())
            .sum();
        assert_eq!(credited as usize, tar.len());
        let written = dir.path().join("rootfs/tmp/hello.txt");
        assert_eq!(fs::read_to_string(written).unwrap(), "hi there");
        assert!(lock(&agent.streams).is_empty());
    }

    #[test]
    fn write_archive_into_a_file_fails_at_once_and_still_takes_the_stream() {
        let (agent, wire, _dir) = agent();
        let write = Request::WriteArchive {
            container: "c".into(),
            path: "/etc/hostname".into(),
            stream: 5,
        };
        ask(&agent, 4, &write);
        let frames = wire.wait_for(1);
        let error = failure(&frames[0]);
        assert_eq!(error.kind, ErrorKind::InvalidRequest);
        assert!(
            error.message.contains("not a directory"),
            "{}",
            error.message
        );
        agent.on_data(5, b"junk".to_vec());
        agent.on_eof(5);
        let frames = wire.wait_for(2);
        assert_eq!(frames[1], Frame::credit(5, 4));
    }
}

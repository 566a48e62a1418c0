//! The control channel's server: request dispatch, stdio streams, and exit
//! reports (the hosts' connections are `session`'s).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hull_proto::{
    ContainerSpec, ErrorKind, Event, ExitStatus, Frame, FrameKind, InterfaceSpec, NetworkSpec,
    ProcessState, Request, RequestError, Response, StreamId, INITIAL_WINDOW,
};

use crate::channel::Channel;
use crate::container::{self, Container};
use crate::flow::{CreditWindow, InputQueue};
use crate::process::Process;
use crate::{disk, error_chain, log, network, pty, sys};

/// How long CreateContainer waits for its disk to be hot-plugged.
const DISK_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The two kinds of stdio stream the host addresses by id.
#[derive(Clone)]
pub(crate) enum Stream {
    /// Process output: the credit the host granted.
    Output(Arc<CreditWindow>),
    /// Process input: bytes waiting to be written.
    Input(Arc<InputQueue>),
}

#[derive(Default)]
pub(crate) struct ProcessTable {
    /// Processes whose exit is not reported yet.
    pub by_name: HashMap<(String, String), Arc<Process>>,
    /// Only processes not yet reaped, so a reused pid never finds a stale entry.
    pub by_pid: HashMap<i32, Arc<Process>>,
    /// The last [`EXITED_KEPT`] processes whose exit was reported, oldest
    /// first: the host that received the event may have died before it
    /// acted on it.
    pub exited: VecDeque<ProcessState>,
}

fn network_failure(error: network::NetworkError) -> RequestError {
    let kind = match error {
        network::NetworkError::Configure { .. } => ErrorKind::Internal,
        _ => ErrorKind::InvalidRequest,
    };
    RequestError::new(kind, error_chain(&error))
}

/// Exited processes a `Reattached` listing names; a restarted host needs
/// only those that ended while it was away.
pub(crate) const EXITED_KEPT: usize = 256;

pub struct Agent {
    pub(crate) channel: Channel,
    /// `None` while the container is being created or removed.
    pub(crate) containers: Mutex<HashMap<String, Option<Arc<Container>>>>,
    /// Locked across spawn and registration, so the reaper never misses a pid.
    pub(crate) processes: Mutex<ProcessTable>,
    pub(crate) streams: Mutex<HashMap<StreamId, Stream>>,
    /// What `ConfigureNetwork` set, for the `/etc` files of containers.
    network: Mutex<NetworkSpec>,
    /// The network devices as they booted, to find each slot's interface.
    nics: network::Nics,
    /// Image disks mounted ahead of their containers.
    primed: crate::prime::Primed,
}

impl Agent {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            containers: Mutex::default(),
            processes: Mutex::default(),
            streams: Mutex::default(),
            network: Mutex::default(),
            nics: network::Nics::read(std::path::Path::new("/sys/class/net")),
            primed: crate::prime::Primed::default(),
        }
    }

    /// Handles one frame of a host that said hello.
    pub(crate) fn dispatch(self: &Arc<Self>, frame: Frame) {
        match frame.kind {
            FrameKind::Request => self.on_request(&frame),
            FrameKind::Data => self.on_data(frame.channel, frame.payload),
            FrameKind::Eof => self.on_eof(frame.channel),
            FrameKind::Credit => self.on_credit(&frame),
            kind => log!("ignoring a {kind:?} frame from the host"),
        }
    }

    pub(crate) fn on_request(self: &Arc<Self>, frame: &Frame) {
        let id = frame.channel;
        let request: Request = match frame.parse() {
            Ok(request) => request,
            Err(e) => {
                let message = format!("malformed request: {}", error_chain(&e));
                let error = RequestError::new(ErrorKind::InvalidRequest, message);
                return self.channel.respond(id, &Response::Failed(error));
            }
        };
        let response = match request {
            Request::Ping => Ok(Response::Done),
            Request::Signal {
                container,
                process,
                signal,
            } => self.signal(&container, &process, signal),
            Request::ResizeTerminal {
                container,
                process,
                rows,
                cols,
            } => self.resize(&container, &process, rows, cols),
            Request::ListProcesses { container } => self.list_processes(&container),
            Request::Stats { container } => self.stats(&container),
            Request::StatPath { container, path } => self.stat_path(&container, &path),
            Request::ReadArchive {
                container,
                path,
                stream,
            } => {
                return self.with_stream(id, (stream, false), move |agent| {
                    agent.read_archive(id, &container, &path, stream)
                });
            }
            Request::WriteArchive {
                container,
                path,
                stream,
            } => {
                return self.with_stream(id, (stream, true), move |agent| {
                    agent.write_archive(id, &container, &path, stream)
                });
            }
            Request::ReadFilesystem {
                container,
                stream,
                view,
            } => {
                return self.with_stream(id, (stream, false), move |agent| {
                    agent.read_filesystem(id, &container, stream, view)
                });
            }
            Request::FreezeDisk { serial } => freeze_response(crate::freeze::freeze(&serial)),
            Request::ThawDisk { serial } => freeze_response(crate::freeze::thaw(&serial)),
            Request::SetOnlineCpus { count } => {
                crate::cpus::set_online(Path::new(crate::cpus::SYSFS_CPUS), count)
                    .map(|()| Response::Done)
                    .map_err(|e| {
                        let kind = match e {
                            crate::cpus::CpusError::OutOfRange { .. } => ErrorKind::InvalidRequest,
                            _ => ErrorKind::Internal,
                        };
                        RequestError::new(kind, error_chain(&e))
                    })
            }
            Request::Shutdown => self.shutdown(id),
            Request::Reattach => return self.reattach(id),
            Request::Resume {
                unix_time_nanos,
                entropy,
            } => resume(unix_time_nanos, &entropy),
            Request::ConfigureNetwork(spec) => {
                return self.in_background(id, move |agent| {
                    let response = agent.configure_network(spec);
                    agent.channel.respond(id, &into_response(response));
                });
            }
            Request::ConfigureInterface { slot, interface } => {
                return self.in_background(id, move |agent| {
                    let response = agent.configure_interface(slot, interface);
                    agent.channel.respond(id, &into_response(response));
                });
            }
            Request::PrimeRootfs {
                rootfs,
                read,
                path,
                budget,
            } => {
                return self.in_background(id, move |agent| {
                    let read = crate::prime::files_of(&read, &path);
                    let primed = agent.primed.prime(&rootfs, &read, budget, DISK_WAIT);
                    let response = match primed {
                        Ok(bytes) => {
                            log!("primed {}: {bytes} bytes read ahead", rootfs.serial);
                            Ok(Response::Done)
                        }
                        Err(e) => Err(prime_error(&e)),
                    };
                    agent.channel.respond(id, &into_response(response));
                });
            }
            Request::ReleaseRootfs { serial } => self
                .primed
                .release(&serial)
                .map(|()| Response::Done)
                .map_err(|e| prime_error(&e)),
            Request::CreateContainer(spec) => {
                return self.in_background(id, move |agent| {
                    let response = agent.create_container(spec);
                    agent.channel.respond(id, &into_response(response));
                });
            }
            Request::RemoveContainer { container } => {
                return self.in_background(id, move |agent| {
                    let response = agent.remove_container(&container);
                    agent.channel.respond(id, &into_response(response));
                });
            }
            Request::StartProcess(spec) => match self.register_streams(&spec) {
                Ok(()) => {
                    return self.in_background(id, move |agent| agent.start_process(id, spec));
                }
                Err(e) => Err(e),
            },
        };
        self.channel.respond(id, &into_response(response));
    }

    /// Runs a slow request on its own thread, so the reader never blocks.
    fn in_background(self: &Arc<Self>, id: u32, work: impl FnOnce(&Arc<Agent>) + Send + 'static) {
        let agent = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("request-{id}"))
            .spawn(move || work(&agent));
        if let Err(e) = spawned {
            let message = format!("cannot start a thread for request {id}: {e}");
            let error = RequestError::new(ErrorKind::Internal, message);
            self.channel.respond(id, &Response::Failed(error));
        }
    }

    /// Registers the request's stream (`(id, is_input)`) before a data or
    /// credit frame can race it, then does the work in the background.
    fn with_stream(
        self: &Arc<Self>,
        id: u32,
        stream: (StreamId, bool),
        work: impl FnOnce(&Arc<Agent>) + Send + 'static,
    ) {
        match self.register(&[stream]) {
            Ok(()) => self.in_background(id, work),
            Err(error) => self.channel.respond(id, &Response::Failed(error)),
        }
    }

    fn shutdown(&self, id: u32) -> ! {
        log!("shutting down at the host's request");
        // sync(2) commits ext4's journal and flushes the disks' caches, so a
        // writable disk is consistent without unmounting it under processes
        // that may still run.
        sys::sync();
        self.channel.respond(id, &Response::Done);
        crate::boot::power_off()
    }

    fn configure_network(&self, spec: NetworkSpec) -> Result<Response, RequestError> {
        network::configure(&spec, &self.nics).map_err(network_failure)?;
        log!("network configured: {} interfaces", spec.interfaces.len());
        *lock(&self.network) = spec;
        Ok(Response::Done)
    }

    fn configure_interface(
        &self,
        slot: u32,
        interface: Option<InterfaceSpec>,
    ) -> Result<Response, RequestError> {
        let slot = usize::try_from(slot).unwrap_or(usize::MAX);
        network::configure_slot(slot, interface.as_ref(), &self.nics).map_err(network_failure)?;
        log!(
            "network device {slot} {}",
            if interface.is_some() {
                "configured"
            } else {
                "taken down"
            }
        );
        Ok(Response::Done)
    }

    fn create_container(&self, spec: ContainerSpec) -> Result<Response, RequestError> {
        let invalid = |e: container::ContainerError| {
            RequestError::new(ErrorKind::InvalidRequest, e.to_string())
        };
        container::validate_id(&spec.id).map_err(invalid)?;
        {
            let mut containers = lock(&self.containers);
            if containers.contains_key(&spec.id) {
                let message = format!("container {} already exists", spec.id);
                return Err(RequestError::new(ErrorKind::InvalidRequest, message));
            }
            containers.insert(spec.id.clone(), None);
        }
        let created = disk::wait_for_container_disks(&spec, DISK_WAIT)
            .map_err(|e| RequestError::new(ErrorKind::NotFound, e.to_string()))
            .and_then(|(device, writable)| {
                let network = lock(&self.network).clone();
                let image = match self.primed.mount_of(&spec.rootfs.serial, &device) {
                    Some(dir) => container::Image::Mounted(dir),
                    None => container::Image::Disk(device),
                };
                container::create(&spec, &image, writable.as_deref(), &network).map_err(|e| {
                    let message =
                        format!("cannot create container {}: {}", spec.id, error_chain(&e));
                    RequestError::new(ErrorKind::Internal, message)
                })
            });
        let mut containers = lock(&self.containers);
        match created {
            Ok(container) => {
                log!("created container {}", spec.id);
                containers.insert(spec.id, Some(Arc::new(container)));
                Ok(Response::Done)
            }
            Err(e) => {
                containers.remove(&spec.id);
                Err(e)
            }
        }
    }

    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>, RequestError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .flatten()
            .ok_or_else(|| {
                RequestError::new(ErrorKind::NotFound, format!("no such container: {id}"))
            })
    }

    /// A process that has not exited yet.
    pub(crate) fn running(&self, container: &str, id: &str) -> Result<Arc<Process>, RequestError> {
        let key = (container.to_owned(), id.to_owned());
        lock(&self.processes)
            .by_name
            .get(&key)
            .filter(|p| !p.track(|t| t.has_exited()))
            .cloned()
            .ok_or_else(|| {
                let message = format!("no running process {id} in container {container}");
                RequestError::new(ErrorKind::NotFound, message)
            })
    }

    fn signal(&self, container: &str, id: &str, signal: i32) -> Result<Response, RequestError> {
        let process = self.running(container, id)?;
        sys::kill(process.pid, signal).map_err(|e| {
            let kind = match e.raw_os_error() {
                Some(libc::ESRCH) => ErrorKind::NotFound,
                Some(libc::EINVAL) => ErrorKind::InvalidRequest,
                _ => ErrorKind::Internal,
            };
            let message = format!("cannot send signal {signal} to process {id}: {e}");
            RequestError::new(kind, message)
        })?;
        Ok(Response::Done)
    }

    fn resize(
        &self,
        container: &str,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<Response, RequestError> {
        let process = self.running(container, id)?;
        let Some(master) = &process.pty else {
            let message = format!("process {id} has no terminal to resize");
            return Err(RequestError::new(ErrorKind::InvalidRequest, message));
        };
        pty::set_size(master, rows, cols).map_err(|e| {
            let message =
                format!("cannot resize the terminal of process {id} to {rows}x{cols}: {e}");
            RequestError::new(ErrorKind::Internal, message)
        })?;
        Ok(Response::Done)
    }

    /// Registers the process's streams before its request is handled, so
    /// input or credit the host sends right after the request is not lost.
    fn register_streams(&self, spec: &hull_proto::ProcessSpec) -> Result<(), RequestError> {
        let mut wanted = vec![(spec.stdout, false)];
        wanted.extend(spec.stderr.map(|s| (s, false)));
        wanted.extend(spec.stdin.map(|s| (s, true)));
        self.register(&wanted)
    }

    /// Registers new streams, each `(id, is_input)`, all or none.
    pub(crate) fn register(&self, wanted: &[(StreamId, bool)]) -> Result<(), RequestError> {
        let mut streams = lock(&self.streams);
        for (i, (id, _)) in wanted.iter().enumerate() {
            if streams.contains_key(id) || wanted[..i].iter().any(|(other, _)| other == id) {
                let message = format!("stream {id} is already in use");
                return Err(RequestError::new(ErrorKind::InvalidRequest, message));
            }
        }
        for &(id, input) in wanted {
            let stream = if input {
                Stream::Input(Arc::new(InputQueue::new()))
            } else {
                Stream::Output(Arc::new(CreditWindow::new(INITIAL_WINDOW)))
            };
            streams.insert(id, stream);
        }
        Ok(())
    }

    pub(crate) fn stream(&self, id: StreamId) -> Option<Stream> {
        lock(&self.streams).get(&id).cloned()
    }

    /// Forgets streams, waking whatever still waits on them.
    pub(crate) fn unregister_streams(&self, ids: &[StreamId]) {
        let mut streams = lock(&self.streams);
        for id in ids {
            match streams.remove(id) {
                Some(Stream::Output(window)) => window.close(),
                Some(Stream::Input(queue)) => queue.finish(),
                None => {}
            }
        }
    }

    pub(crate) fn on_data(&self, stream: StreamId, payload: Vec<u8>) {
        match self.stream(stream) {
            Some(Stream::Input(queue)) => {
                if queue.push(payload) > INITIAL_WINDOW as usize {
                    log!("the host overran the window of input stream {stream}");
                }
            }
            _ => log!("dropping data for unknown input stream {stream}"),
        }
    }

    pub(crate) fn on_eof(&self, stream: StreamId) {
        if let Some(Stream::Input(queue)) = self.stream(stream) {
            queue.finish();
        }
    }

    fn on_credit(&self, frame: &Frame) {
        match frame.credit_bytes() {
            Ok(bytes) => {
                // Credit for a stream that just ended is normal: ignore it.
                if let Some(Stream::Output(window)) = self.stream(frame.channel) {
                    window.grant(bytes);
                }
            }
            Err(e) => log!("ignoring a credit frame: {e}"),
        }
    }

    /// One output stream of `process` sent its Eof.
    pub(crate) fn output_done(&self, process: &Arc<Process>) {
        if let Some(status) = process.track(|t| t.output_closed()) {
            self.report_exit(process, status);
        }
    }

    pub(crate) fn report_exit(&self, process: &Arc<Process>, status: ExitStatus) {
        // Retired with the channel held: a `Reattached` listing then either
        // names the exit or is written before its event.
        self.channel.send_with(|| {
            self.retire(process, status);
            let event = Event::ProcessExited {
                container: process.container.clone(),
                process: process.id.clone(),
                status,
            };
            Frame::json(FrameKind::Event, 0, &event)
        });
        self.unregister_streams(&process.streams());
    }

    /// Moves a process whose exit is being reported to the exited records.
    fn retire(&self, process: &Arc<Process>, status: ExitStatus) {
        let key = (process.container.clone(), process.id.clone());
        let mut table = lock(&self.processes);
        if table
            .by_name
            .get(&key)
            .is_some_and(|p| Arc::ptr_eq(p, process))
        {
            table.by_name.remove(&key);
        }
        table.exited.push_back(process.state(Some(status)));
        if table.exited.len() > EXITED_KEPT {
            table.exited.pop_front();
        }
    }
}

fn into_response(result: Result<Response, RequestError>) -> Response {
    result.unwrap_or_else(Response::Failed)
}

/// A clone of a template wakes with the template's clock and RNG state.
fn resume(unix_time_nanos: u64, entropy: &[u8]) -> Result<Response, RequestError> {
    let internal = |what: &str, e: io::Error| {
        RequestError::new(ErrorKind::Internal, format!("cannot {what}: {e}"))
    };
    sys::set_realtime(unix_time_nanos).map_err(|e| internal("set the clock", e))?;
    sys::add_entropy(entropy).map_err(|e| internal("reseed the random number generator", e))?;
    Ok(Response::Done)
}

fn freeze_response(
    result: Result<(), crate::freeze::FreezeError>,
) -> Result<Response, RequestError> {
    result.map(|()| Response::Done).map_err(|e| {
        let kind = match e {
            crate::freeze::FreezeError::Ioctl { .. } => ErrorKind::Internal,
            _ => ErrorKind::NotFound,
        };
        RequestError::new(kind, error_chain(&e))
    })
}

fn prime_error(e: &crate::prime::PrimeError) -> RequestError {
    use crate::prime::PrimeError as E;
    let kind = match e {
        E::InvalidSerial(_) | E::InvalidPath(_) | E::TooManyPaths { .. } => {
            ErrorKind::InvalidRequest
        }
        E::AlreadyPrimed { .. } => ErrorKind::InvalidRequest,
        E::Disk(_) => ErrorKind::NotFound,
        _ => ErrorKind::Internal,
    };
    RequestError::new(kind, error_chain(e))
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;

//! Warming a pooled VM before a run takes it.
//!
//! Under TCG each QEMU process translates the guest's code afresh, so the
//! first run in a VM pays for every kernel and agent path it takes for the
//! first time: the disk's hot-plug, the erofs and overlay mounts, the
//! namespaces, exec, exit, the unmounts. A pooled VM runs a throwaway
//! container through all of them first (its rootfs a tiny erofs image with
//! one static program), so the run that takes it finds them translated. On
//! KVM the same warm-up leaves the guest's caches and slabs primed.
//!
//! The warm-up also configures the pooled VM's network, which is the same
//! user-mode network for every pooled VM, so a run skips that step.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hull_proto::{ExitStatus, ProcessSpec, Request, StreamId};
use hull_vm::{DiskConfig, Vm};

use crate::agent::{AgentClient, AgentError};
use crate::run::{new_container_id, on_rootfs, start_process, unless_vm_dies, RunError};

/// The warm-up rootfs's file name; the version changes with its contents.
const ROOTFS_NAME: &str = "warm-up-2.erofs";
/// Files an image's rootfs has, which a run reads or replaces: with them
/// here, the warm-up also takes the paths of the user's lookup and of the
/// overlay's copy-ups of `/etc` that a run takes.
const ETC_FILES: [(&str, &str); 5] = [
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", "root:x:0:\n"),
    ("etc/hosts", "127.0.0.1\tlocalhost\n"),
    ("etc/hostname", "localhost\n"),
    ("etc/resolv.conf", "nameserver 127.0.0.1\n"),
];
/// Mount points an image's rootfs has.
const DIRS: [&str; 6] = ["bin", "dev", "proc", "root", "sys", "tmp"];
const PROGRAM: &str = "warm-up";
const CONTAINER: &str = "warm-up";
/// The warm-up disk's serial: not a run's, so that a run's or a prime's
/// disk, plugged right after the warm-up's is unplugged, is never taken
/// for it while the guest has yet to drop it.
const SERIAL: &str = "hull-warm-up";
/// What the program writes; more than this is not the program.
const GREETING: &[u8] = b"ok\n";
/// Streams of the warm-up's process, apart from those of runs.
const STDOUT: StreamId = 1_000_001;
const STDERR: StreamId = 1_000_002;
/// A warm-up takes well under a second; a VM that needs this long is
/// not one to hand out.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("cannot write the warm-up rootfs's files in {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot build the warm-up rootfs")]
    Erofs(#[from] hull_image::erofs::ErofsError),
    #[error("cannot plug the warm-up rootfs in or out")]
    Disk(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the warm-up container failed")]
    Run(#[from] RunError),
    #[error("the warm-up container's process ended with {status:?} and wrote {output:?}, not a clean exit after {GREETING:?}")]
    Unexpected { status: ExitStatus, output: Vec<u8> },
    #[error("the warm-up took over {}s", TIMEOUT.as_secs())]
    Timeout,
}

impl From<AgentError> for WarmError {
    fn from(err: AgentError) -> Self {
        WarmError::Run(err.into())
    }
}

/// The warm-up rootfs in `dir`, built there once.
pub fn rootfs(dir: &Path) -> Result<PathBuf, WarmError> {
    let image = dir.join(ROOTFS_NAME);
    if image.is_file() {
        return Ok(image);
    }
    std::fs::create_dir_all(dir).map_err(write(dir))?;
    // Built aside and renamed into place whole: a daemon killed mid-build
    // leaves no half-made image under the final name.
    let staging = dir.join(format!(".{ROOTFS_NAME}.{}", &new_container_id()[..12]));
    let built =
        build(&staging).and_then(|built| std::fs::rename(&built, &image).map_err(write(&image)));
    let _ = std::fs::remove_dir_all(&staging);
    built.map(|()| image)
}

/// Builds the warm-up rootfs in the new directory `staging`.
fn build(staging: &Path) -> Result<PathBuf, WarmError> {
    let tree = staging.join("tree");
    for dir in DIRS.iter().chain(&["etc"]) {
        let dir = tree.join(dir);
        std::fs::create_dir_all(&dir).map_err(write(&dir))?;
    }
    for (name, text) in ETC_FILES {
        let path = tree.join(name);
        std::fs::write(&path, text).map_err(write(&path))?;
    }
    // Found along `PATH`, as an image's programs are.
    let program = tree.join("bin").join(PROGRAM);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o755)
            .open(&program)
            .and_then(|mut file| file.write_all(&program_image()))
            .map_err(write(&program))?;
    }
    let built = staging.join(ROOTFS_NAME);
    hull_image::erofs::mkfs(&tree, &built)?;
    Ok(built)
}

/// The error of a failed write at `path`.
fn write(path: &Path) -> impl FnOnce(io::Error) -> WarmError {
    let path = path.to_owned();
    move |source| WarmError::Write { path, source }
}

/// Runs a throwaway container in `vm` through the steps of a run, from
/// the rootfs's hot-plug to its unplug; the VM is then as fresh as before
/// but for its configured network and its translated code.
pub(crate) async fn warm<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    rootfs: &Path,
) -> Result<(), RunError> {
    let warm_up = async {
        let disk = DiskConfig {
            id: "rootfs".into(),
            path: rootfs.to_owned(),
            serial: SERIAL.into(),
            read_only: true,
        };
        vm.attach_disk(&disk)
            .await
            .map_err(|e| WarmError::Disk(Box::new(e)))?;
        let (_, network) = hull_net::user_network(&[]);
        agent
            .request_done(&Request::ConfigureNetwork(network))
            .await?;
        agent
            .request_done(&on_rootfs(CONTAINER, CONTAINER, SERIAL))
            .await?;
        let exited = agent.watch_exit(CONTAINER, "init");
        let mut stdout = agent.open_output(STDOUT);
        let mut stderr = agent.open_output(STDERR);
        start_process(
            agent,
            ProcessSpec {
                container: CONTAINER.into(),
                id: "init".into(),
                args: vec![PROGRAM.into()],
                env: vec![format!("PATH={}", hull_proto::DEFAULT_PATH)],
                cwd: "/".into(),
                user: String::new(),
                terminal: false,
                stdin: None,
                stdout: STDOUT,
                stderr: Some(STDERR),
                rlimits: Vec::new(),
                groups: Vec::new(),
                terminal_size: None,
            },
        )
        .await?;
        let mut output = Vec::new();
        while let Some(chunk) = stdout.recv().await {
            // Bounded: past the greeting the program is not ours.
            if output.len() + chunk.len() > GREETING.len() {
                break;
            }
            output.extend_from_slice(&chunk);
        }
        while stderr.recv().await.is_some() {}
        let status = exited.await.map_err(|_| agent.lost())?;
        if status != ExitStatus::Code(0) || output != GREETING {
            return Err(WarmError::Unexpected { status, output });
        }
        agent
            .request_done(&Request::RemoveContainer {
                container: CONTAINER.into(),
            })
            .await?;
        vm.detach_disk("rootfs")
            .await
            .map_err(|e| WarmError::Disk(Box::new(e)))?;
        Ok::<_, WarmError>(())
    };
    tokio::time::timeout(TIMEOUT, unless_vm_dies(vm, vm.exit(), warm_up))
        .await
        .unwrap_or_else(|_| Err(WarmError::Timeout.into()))
}

/// Where the program's code is loaded, as static x86-64 executables are.
const BASE: u64 = 0x40_0000;
const ELF_HEADER: usize = 64;
const PROGRAM_HEADER: usize = 56;

/// A static x86-64 Linux executable that writes "ok\n" to its stdout and
/// exits 0: an ELF header, one loadable segment, and the code. Hand-made,
/// so that the warm-up needs no image and no toolchain; the guest is
/// always x86-64, as its QEMU is.
fn program_image() -> Vec<u8> {
    let code_at = (ELF_HEADER + PROGRAM_HEADER) as u64;
    #[rustfmt::skip]
    let code: [u8; 33] = [
        0xb8, 0x01, 0x00, 0x00, 0x00,             // mov eax, 1 (write)
        0xbf, 0x01, 0x00, 0x00, 0x00,             // mov edi, 1 (stdout)
        0x48, 0x8d, 0x35, 0x10, 0x00, 0x00, 0x00, // lea rsi, [rip + 16]: the greeting
        0xba, 0x03, 0x00, 0x00, 0x00,             // mov edx, 3
        0x0f, 0x05,                               // syscall
        0xb8, 0x3c, 0x00, 0x00, 0x00,             // mov eax, 60 (exit)
        0x31, 0xff,                               // xor edi, edi
        0x0f, 0x05,                               // syscall
    ];
    let size = code_at + code.len() as u64 + GREETING.len() as u64;

    let mut image = Vec::with_capacity(size as usize);
    // e_ident: the magic, 64-bit, little-endian, version 1, the System V ABI.
    image.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    image.extend_from_slice(&[0; 8]);
    image.extend_from_slice(&2u16.to_le_bytes()); // e_type: an executable
    image.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    image.extend_from_slice(&1u32.to_le_bytes()); // e_version
    image.extend_from_slice(&(BASE + code_at).to_le_bytes()); // e_entry
    image.extend_from_slice(&(ELF_HEADER as u64).to_le_bytes()); // e_phoff
    image.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    image.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    image.extend_from_slice(&(ELF_HEADER as u16).to_le_bytes()); // e_ehsize
    image.extend_from_slice(&(PROGRAM_HEADER as u16).to_le_bytes()); // e_phentsize
    image.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    image.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                      // The one PT_LOAD segment: the whole file, readable and executable.
    image.extend_from_slice(&1u32.to_le_bytes()); // p_type
    image.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    image.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    image.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    image.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    image.extend_from_slice(&size.to_le_bytes()); // p_filesz
    image.extend_from_slice(&size.to_le_bytes()); // p_memsz
    image.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    debug_assert_eq!(image.len() as u64, code_at);
    image.extend_from_slice(&code);
    image.extend_from_slice(GREETING);
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_writes_its_greeting_and_exits_cleanly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PROGRAM);
        std::fs::write(&path, program_image()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = std::process::Command::new(&path).output().unwrap();
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(output.stdout, GREETING);
        assert!(output.stderr.is_empty());
    }

    #[test]
    fn the_rootfs_is_built_once_and_holds_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let image = rootfs(dir.path()).unwrap();
        let built = std::fs::metadata(&image).unwrap().modified().unwrap();
        assert_eq!(rootfs(dir.path()).unwrap(), image);
        assert_eq!(
            std::fs::metadata(&image).unwrap().modified().unwrap(),
            built
        );
        // Nothing of the build is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(ROOTFS_NAME)]);
        let bytes = std::fs::read(&image).unwrap();
        let needle = &program_image()[..ELF_HEADER];
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
    }
}

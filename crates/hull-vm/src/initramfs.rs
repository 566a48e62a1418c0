//! Packs the guest agent into an initramfs (a newc cpio archive).

use std::io::{self, Write};

const NEWC_MAGIC: &str = "070701";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Builds the initramfs: the agent as `/init`, the mount points it needs, and
/// `/dev/console`, which the kernel opens for PID 1's stdio before init runs
/// (devtmpfs is not mounted on an initramfs automatically).
pub fn build(agent: &[u8], out: &mut impl Write) -> io::Result<()> {
    let mut archive = NewcWriter::new(out);
    for dir in ["dev", "proc", "sys", "run", "tmp"] {
        archive.entry(dir, S_IFDIR | 0o755, (0, 0), &[])?;
    }
    archive.entry("dev/console", S_IFCHR | 0o600, (5, 1), &[])?;
    archive.entry("init", S_IFREG | 0o755, (0, 0), agent)?;
    archive.finish()
}

struct NewcWriter<'a, W: Write> {
    out: &'a mut W,
    next_inode: u32,
}

impl<'a, W: Write> NewcWriter<'a, W> {
    fn new(out: &'a mut W) -> Self {
        Self { out, next_inode: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name_len = u32::try_from(name.len() + 1).expect("short names");
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large for cpio"))?;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name_len,
            0, // check
        ];
        self.next_inode += 1;
        let mut header = String::with_capacity(110);
        header.push_str(NEWC_MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name.len() + 1)?;
        self.out.write_all(data)?;
        self.pad(data.len())
    }

    fn pad(&mut self, written: usize) -> io::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0u8; 3][..padding])
    }

    fn finish(mut self) -> io::Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lists_init_and_console_for_cpio() {
        let mut archive = Vec::new();
        build(b"\x7fELF-agent", &mut archive).unwrap();
        assert_eq!(archive.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.cpio");
        std::fs::write(&path, &archive).unwrap();
        // Cross-check with an independent reader of the format.
        let output = std::process::Command::new("cpio")
            .args(["-t", "-v", "-F"])
            .arg(&path)
            .output()
            .expect("cpio runs (apt-get install cpio)");
        let listing = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{listing}");
        assert!(listing.contains("init"), "{listing}");
        assert!(listing
            .lines()
            .any(|l| l.starts_with('c') && l.contains("dev/console")));
    }

    #[test]
    fn headers_are_ascii_hex_and_data_is_aligned() {
        let mut archive = Vec::new();
        build(b"abc", &mut archive).unwrap();
        assert!(archive.starts_with(b"070701"));
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}

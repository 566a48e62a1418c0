//! A small fio-like I/O load for scripts/bench-io.sh, run the same way on
//! the host and in a VM (built static, with std alone):
//!
//!   iobench FILE SIZE_MIB RANDOM_OPS
//!
//! prints four lines, `NAME VALUE UNIT`:
//!   seq-write   MiB/s  1 MiB writes of SIZE_MIB, then fsync (counted)
//!   seq-read    MiB/s  1 MiB reads of the file after its cached pages are
//!                      dropped (posix_fadvise DONTNEED of this kernel)
//!   rand-write  IOPS   RANDOM_OPS 4 KiB writes at random aligned offsets,
//!                      then fsync (counted)
//!   rand-read   IOPS   RANDOM_OPS 4 KiB reads at random aligned offsets,
//!                      after the cached pages are dropped again
//! and removes FILE.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const MIB: usize = 1 << 20;
const BLOCK: u64 = 4096;
const POSIX_FADV_DONTNEED: i32 = 4;

extern "C" {
    fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
}

/// Drops the file's clean pages from this kernel's page cache, so reads
/// reach the device (or, for a VM's disk, the host).
fn drop_cache(file: &File) {
    file.sync_all().expect("fsync");
    // SAFETY: posix_fadvise only takes integers and the open descriptor.
    unsafe { posix_fadvise(file.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED) };
}

/// xorshift64: reproducible offsets without a crate.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn report(name: &str, value: f64, unit: &str) {
    println!("{name} {value:.1} {unit}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: iobench FILE SIZE_MIB RANDOM_OPS");
        std::process::exit(2);
    }
    let path = &args[1];
    let size_mib: usize = args[2].parse().expect("SIZE_MIB is a number");
    let ops: u64 = args[3].parse().expect("RANDOM_OPS is a number");
    let blocks = (size_mib * MIB) as u64 / BLOCK;

    // Incompressible data, so no layer can cheat on zeroes.
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let chunk: Vec<u8> = (0..MIB).map(|_| random.next() as u8).collect();

    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("open the test file");
    let start = Instant::now();
    for _ in 0..size_mib {
        file.write_all(&chunk).expect("write");
    }
    file.sync_all().expect("fsync");
    report(
        "seq-write",
        size_mib as f64 / start.elapsed().as_secs_f64(),
        "MiB/s",
    );

    drop_cache(&file);
    let mut reader = File::open(path).expect("reopen the test file");
    let mut buffer = vec![0u8; MIB];
    let start = Instant::now();
    let mut read = 0usize;
    loop {
        let n = reader.read(&mut buffer).expect("read");
        if n == 0 {
            break;
        }
        read += n;
    }
    assert_eq!(read, size_mib * MIB, "the file reads back whole");
    report(
        "seq-read",
        size_mib as f64 / start.elapsed().as_secs_f64(),
        "MiB/s",
    );

    let start = Instant::now();
    for i in 0..ops {
        let offset = (random.next() % blocks) * BLOCK;
        let at = (i as usize * BLOCK as usize) % (MIB - BLOCK as usize);
        file.write_all_at(&chunk[at..at + BLOCK as usize], offset)
            .expect("random write");
    }
    file.sync_all().expect("fsync");
    report(
        "rand-write",
        ops as f64 / start.elapsed().as_secs_f64(),
        "IOPS",
    );

    drop_cache(&file);
    let start = Instant::now();
    for _ in 0..ops {
        let offset = (random.next() % blocks) * BLOCK;
        file.read_exact_at(&mut buffer[..BLOCK as usize], offset)
            .expect("random read");
    }
    report(
        "rand-read",
        ops as f64 / start.elapsed().as_secs_f64(),
        "IOPS",
    );
    drop(file);
    std::fs::remove_file(path).expect("remove the test file");
}

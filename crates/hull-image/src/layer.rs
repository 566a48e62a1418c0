//! Layer blobs: compression detection, decompression, and a checking pass that
//! computes a layer's diff_id (digest of the uncompressed tar) and unpacked size.

use std::io::{self, BufReader, Read};

pub mod check;

use crate::digest::{Digest, HashingReader};
use crate::limits::{Guard, Guarded, GuardedEntries, LimitError, Limits, MAX_NAME};
use crate::spec::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a layer blob is compressed, decided by its first bytes rather than by
/// its (sometimes wrong) media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Recognizes gzip and zstd by their magic numbers; anything else is taken as a plain tar.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(GZIP_MAGIC) {
            Compression::Gzip
        } else if head.starts_with(ZSTD_MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI layer media type of a blob compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }
}

/// Largest zstd window a layer may ask for (16 MiB): the decoder allocates
/// it whole. `zstd -19` and below use at most 8 MiB; only `--ultra` and
/// `--long` go past, up to 2 GiB.
const ZSTD_MAX_WINDOW_LOG: u32 = 24;

/// Wraps a layer blob in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(mut blob: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // The magic may come in pieces (a pipe, a download's chunks): read all
    // of it before sniffing, then put it back in front.
    let mut head = [0u8; 4];
    let got = crate::readahead::fill(&mut blob, &mut head)?;
    let compression = Compression::sniff(&head[..got]);
    let buffered =
        BufReader::with_capacity(1 << 17, io::Cursor::new(head).take(got as u64).chain(blob));
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(buffered),
        // flate2 holds a gzip header's fields to 64 KiB and its window to 32 KiB.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(buffered)?;
            decoder.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
            Box::new(decoder)
        }
    };
    Ok((compression, reader))
}

/// What reading a whole layer tells about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub compression: Compression,
    /// Digest of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Sum of the sizes of the layer's file contents.
    pub unpacked_size: u64,
}

/// Why a layer cannot be taken in.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("it is truncated or not a (gzip or zstd compressed) tar stream")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

/// Reads a whole layer blob, checking that it decompresses and parses as a
/// tar stream within `limits`. Memory stays within a few MiB whatever the blob.
pub fn inspect(blob: impl Read, limits: &Limits) -> Result<LayerInfo, LayerError> {
    let (compression, reader) = decompress(blob).map_err(LayerError::Read)?;
    let (diff_id, unpacked_size) = walk(reader, limits, &mut NameLengths)?;
    Ok(LayerInfo {
        compression,
        diff_id,
        unpacked_size,
    })
}

/// [`inspect`] on two cores: the blob is decompressed on a thread of its
/// own while this one hashes and walks the tar stream.
pub fn inspect_pipelined(
    blob: impl Read + Send + 'static,
    limits: &Limits,
) -> Result<LayerInfo, LayerError> {
    let (sniffed, compression) = std::sync::mpsc::sync_channel(1);
    let tar = crate::readahead::ReadAhead::new(move || {
        let (compression, reader) = decompress(blob)?;
        let _ = sniffed.send(compression);
        Ok(reader)
    })
    .map_err(LayerError::Read)?;
    let (diff_id, unpacked_size) = walk(tar, limits, &mut NameLengths)?;
    let compression = compression
        .recv()
        .map_err(|_| LayerError::Read(io::Error::other("the decompressing thread ended")))?;
    Ok(LayerInfo {
        compression,
        diff_id,
        unpacked_size,
    })
}

/// What a pass over a layer's entries holds each of them to.
pub(crate) trait Visit {
    type Error: From<LayerError> + From<LimitError>;
    fn entry<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<(), Self::Error>;
}

/// Holds entries to the longest name a layer may have, and no more.
struct NameLengths;

impl Visit for NameLengths {
    type Error = LayerError;

    fn entry<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<(), LayerError> {
        let link_len = entry.link_name_bytes().map_or(0, |l| l.len());
        let len = entry.path_bytes().len().max(link_len);
        if len > MAX_NAME {
            return Err(LimitError::Name { len }.into());
        }
        Ok(())
    }
}

/// Reads a decompressed layer's tar to its end within `limits`, showing
/// every entry to `visit`: the tar's diff_id and the sum of its file sizes.
pub(crate) fn walk<V: Visit>(
    reader: impl Read,
    limits: &Limits,
    visit: &mut V,
) -> Result<(Digest, u64), V::Error> {
    let guard = Guard::new(*limits);
    let read_err = |e| -> V::Error {
        match guard.tripped() {
            Some(limit) => limit.into(),
            None => LayerError::Read(e).into(),
        }
    };
    let mut hashing = HashingReader::new(Guarded::new(reader, guard.clone()));
    let mut unpacked_size = 0u64;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive.entries().map_err(LayerError::Read)?;
        let mut entries = GuardedEntries::new(entries, guard.clone(), limits.max_entries);
        while let Some(mut entry) = entries.next_entry(read_err)? {
            visit.entry(&entry)?;
            unpacked_size = unpacked_size.saturating_add(entry.size());
            if unpacked_size > limits.max_unpacked_bytes {
                return Err(LimitError::Unpacked {
                    limit: limits.max_unpacked_bytes,
                }
                .into());
            }
            io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
        }
    }
    // The tar reader stops at the end-of-archive marker; the diff_id covers the padding after it.
    guard.trailer();
    let (diff_id, _) = hashing.finish().map_err(read_err)?;
    Ok((diff_id, unpacked_size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
        crate::testutil::layer(&[(name, content)])
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inspect_hashes_the_uncompressed_stream_whatever_the_compression() {
        let tar = one_file_tar("a", b"hello");
        let plain = inspect(&tar[..], &Limits::default()).unwrap();
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(plain.diff_id, Digest::of(&tar));
        assert_eq!(plain.unpacked_size, 5);

        let gz = inspect(&gzip(&tar)[..], &Limits::default()).unwrap();
        assert_eq!(gz.compression, Compression::Gzip);
        assert_eq!(gz.diff_id, plain.diff_id);

        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let zst = inspect(&zst[..], &Limits::default()).unwrap();
        assert_eq!(zst.compression, Compression::Zstd);
        assert_eq!(zst.diff_id, plain.diff_id);
    }

    #[test]
    fn truncated_layers_are_errors() {
        let tar = one_file_tar("a", &[7u8; 2000]);
        assert!(inspect(&tar[..700], &Limits::default()).is_err());
        let gz = gzip(&tar);
        assert!(inspect(&gz[..gz.len() / 2], &Limits::default()).is_err());
    }

    #[test]
    fn header_bombs_are_refused_whatever_the_compression() {
        let limits = Limits {
            max_header_bytes: 64 << 10,
            ..Limits::default()
        };
        let bomb = crate::unpack::hostile_tests::long_name_bomb(4 << 20);
        for blob in [
            bomb.clone(),
            gzip(&bomb),
            zstd::encode_all(&bomb[..], 3).unwrap(),
        ] {
            let err = inspect(&blob[..], &limits).unwrap_err();
            assert!(
                matches!(err, LayerError::Limit(LimitError::Header { limit }) if limit == 64 << 10),
                "{err}"
            );
        }
    }

    #[test]
    fn layers_past_the_entry_and_size_limits_are_refused() {
        let tar = crate::testutil::layer(&[("a", &[1u8; 3000]), ("b", b""), ("c", b"")]);
        let few = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = inspect(&tar[..], &few).unwrap_err();
        assert!(
            matches!(err, LayerError::Limit(LimitError::Entries { limit: 2 })),
            "{err}"
        );
        let small = Limits {
            max_unpacked_bytes: 2000,
            ..Limits::default()
        };
        let err = inspect(&gzip(&tar)[..], &small).unwrap_err();
        assert!(
            matches!(err, LayerError::Limit(LimitError::Unpacked { limit: 2000 })),
            "{err}"
        );
    }

    #[test]
    fn zstd_frames_asking_for_a_huge_window_are_refused() {
        let tar = one_file_tar("a", b"hello");
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(27).unwrap();
        encoder.write_all(&tar).unwrap();
        let blob = encoder.finish().unwrap();
        assert!(matches!(
            inspect(&blob[..], &Limits::default()),
            Err(LayerError::Read(_))
        ));
    }

    #[test]
    fn data_after_the_end_of_the_tar_is_bounded() {
        let mut tar = one_file_tar("a", b"hello");
        tar.resize(tar.len() + (2 << 20), 0);
        let err = inspect(&tar[..], &Limits::default()).unwrap_err();
        assert!(
            matches!(err, LayerError::Limit(LimitError::Trailer)),
            "{err}"
        );
    }
}

//! Layer blobs: compression detection, decompression, and a checking pass that
//! computes a layer's diff_id (digest of the uncompressed tar) and unpacked size.

use std::io::{self, BufRead, BufReader, Read};

use crate::digest::{Digest, HashingReader};
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

/// Wraps a layer blob in the decompressor its first bytes call for.
pub fn decompress<'a, R: Read + 'a>(blob: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::new(blob);
    let compression = Compression::sniff(buffered.fill_buf()?);
    let reader: Box<dyn Read + 'a> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
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

/// Reads a whole layer blob, checking that it decompresses and parses as a tar stream.
pub fn inspect(blob: impl Read) -> io::Result<LayerInfo> {
    let (compression, reader) = decompress(blob)?;
    let mut hashing = HashingReader::new(reader);
    let mut unpacked_size = 0;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries()? {
            unpacked_size += entry?.size();
        }
    }
    // The tar reader stops at the end-of-archive marker; the diff_id covers the padding after it.
    let (diff_id, _) = hashing.finish()?;
    Ok(LayerInfo {
        compression,
        diff_id,
        unpacked_size,
    })
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
        let plain = inspect(&tar[..]).unwrap();
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(plain.diff_id, Digest::of(&tar));
        assert_eq!(plain.unpacked_size, 5);

        let gz = inspect(&gzip(&tar)[..]).unwrap();
        assert_eq!(gz.compression, Compression::Gzip);
        assert_eq!(gz.diff_id, plain.diff_id);

        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        let zst = inspect(&zst[..]).unwrap();
        assert_eq!(zst.compression, Compression::Zstd);
        assert_eq!(zst.diff_id, plain.diff_id);
    }

    #[test]
    fn truncated_layers_are_errors() {
        let tar = one_file_tar("a", &[7u8; 2000]);
        assert!(inspect(&tar[..700]).is_err());
        let gz = gzip(&tar);
        assert!(inspect(&gz[..gz.len() / 2]).is_err());
    }
}

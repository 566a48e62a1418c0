//! Hull's image store: content-addressed blobs, docker-archive and OCI-layout
//! import, pulling from registries, layer flattening with whiteouts, and erofs
//! root filesystems.
//!
//! The API is blocking; the daemon calls it from `spawn_blocking`.

pub mod archive;
mod at;
pub mod changes;
pub mod digest;
pub mod erofs;
pub mod export;
mod fsutil;
pub mod layer;
pub mod limits;
pub mod readahead;
pub mod reference;
pub mod registry;
mod rootpath;
pub mod source;
pub mod spec;
mod store;
#[cfg(test)]
mod testutil;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
pub use spec::ImageConfig;
pub use store::{
    CommitError, Committed, HistoryEntry, Image, ImageRecord, ImageStore, ImageSummary,
    LabelFilter, LayerRecord, LoadedImage, NewImage, PruneFilter, PruneFilterError, Pruned,
    PulledImage, PulledLayer, Removal, StoreError, TagError,
};

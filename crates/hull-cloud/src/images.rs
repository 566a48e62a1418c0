//! Each tenant's view of the shared image store.
//!
//! The blobs and image records stay shared below (a layer is stored once);
//! what a tenant may name is only what this table lists for it: the tags
//! and `repository@digest` names it pulled, loaded or tagged, and the ids
//! of images it loaded without a name. Names are kept as the API
//! normalized them (`docker.io/library/busybox:latest`); this module does
//! not parse them, so no odd name can mean more than its bytes.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use crate::quota::Quota;
use crate::store::Store;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenant_images (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest', 'id')),
    image TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX IF NOT EXISTS tenant_images_by_image ON tenant_images(image);
";

/// An image id as the store writes it: `sha256:` and 64 lowercase hex digits.
const ID_PREFIX: &str = "sha256:";
/// Shortest id prefix a tenant may name an image by, as the store allows.
const MIN_ID_PREFIX: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("the cloud database failed")]
    Db(#[from] rusqlite::Error),
    #[error("no tenant {0}")]
    NoTenant(String),
    #[error("the cloud database's quota record of {0} is malformed")]
    BadQuota(String, #[source] serde_json::Error),
    /// Worded as the API's other quotas: the quota, the use, the limit.
    #[error("quota exceeded: images in use {used}, asked {asked}, limit {limit}; remove an image of tenant {tenant}'s, or ask the operator for a larger quota")]
    Quota {
        tenant: String,
        used: u64,
        asked: u64,
        limit: u64,
    },
    #[error("{0:?} is not an image id (sha256: and 64 lowercase hex digits)")]
    BadId(String),
}

/// What a name in a tenant's table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `repository:tag`.
    Tag,
    /// `repository@sha256:…`, the manifest or index it was pulled by.
    Digest,
    /// The image's id: an image loaded without a name.
    Id,
}

impl RefKind {
    fn as_str(self) -> &'static str {
        match self {
            RefKind::Tag => "tag",
            RefKind::Digest => "digest",
            RefKind::Id => "id",
        }
    }

    fn parse(text: &str) -> RefKind {
        match text {
            "tag" => RefKind::Tag,
            "digest" => RefKind::Digest,
            _ => RefKind::Id,
        }
    }
}

/// One name a tenant holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub kind: RefKind,
    /// The image id, `sha256:…`.
    pub image: String,
}

/// What an id prefix matched among a tenant's images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMatch {
    None,
    One(String),
    Many(usize),
}

impl Store {
    /// Every name `tenant` holds, ordered by image then name.
    pub fn tenant_images(&self, tenant: &str) -> Result<Vec<ImageRef>, ImagesError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT name, kind, image FROM tenant_images WHERE tenant = ?1 ORDER BY image, name",
        )?;
        let rows = statement.query_map([tenant], image_ref)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The image `tenant` holds under exactly `name` (a tag, a
    /// `repository@digest` or an id it loaded).
    pub fn tenant_image_named(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<String>, ImagesError> {
        Ok(self
            .db()
            .query_row(
                "SELECT image FROM tenant_images WHERE tenant = ?1 AND name = ?2",
                [tenant, name],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Whether `tenant` holds the image `id` under any name.
    pub fn tenant_holds_image(&self, tenant: &str, id: &str) -> Result<bool, ImagesError> {
        Ok(self
            .db()
            .query_row(
                "SELECT 1 FROM tenant_images WHERE tenant = ?1 AND image = ?2 LIMIT 1",
                [tenant, id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// The tenant's images whose id (its hex, after `sha256:`) starts with
    /// `prefix`. Anything but 4-64 lowercase hex digits matches nothing.
    pub fn tenant_image_by_id_prefix(
        &self,
        tenant: &str,
        prefix: &str,
    ) -> Result<IdMatch, ImagesError> {
        let hex = (MIN_ID_PREFIX..=64).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Ok(IdMatch::None);
        }
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT DISTINCT image FROM tenant_images
             WHERE tenant = ?1 AND substr(image, 1, ?2) = ?3",
        )?;
        let wanted = format!("{ID_PREFIX}{prefix}");
        let mut ids = statement
            .query_map(params![tenant, wanted.len(), wanted], |row| {
                row.get::<_, String>(0)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match ids.len() {
            0 => IdMatch::None,
            1 => IdMatch::One(ids.remove(0)),
            n => IdMatch::Many(n),
        })
    }

    /// How many images `tenant` keeps.
    pub fn tenant_image_count(&self, tenant: &str) -> Result<u64, ImagesError> {
        Ok(self.db().query_row(
            "SELECT COUNT(DISTINCT image) FROM tenant_images WHERE tenant = ?1",
            [tenant],
            |row| row.get(0),
        )?)
    }

    /// Gives `tenant` the image `id` under `names` (with none, under its id),
    /// in one transaction: a name it held for another image moves, and an
    /// image new to it must fit its `images` quota, or nothing changes.
    /// Returns the images that lost their last name to a move.
    pub fn record_tenant_image(
        &self,
        tenant: &str,
        id: &str,
        names: &[(RefKind, String)],
    ) -> Result<Vec<String>, ImagesError> {
        check_id(id)?;
        let mut db = self.db();
        // IMMEDIATE: the quota count and the insert see the same rows.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let quota = quota_of(&tx, tenant)?;
        let held = |tx: &rusqlite::Transaction<'_>| -> Result<bool, rusqlite::Error> {
            Ok(tx
                .query_row(
                    "SELECT 1 FROM tenant_images WHERE tenant = ?1 AND image = ?2 LIMIT 1",
                    [tenant, id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        };
        let was_held = held(&tx)?;
        let id_row = [(RefKind::Id, id.to_owned())];
        let names = if names.is_empty() { &id_row[..] } else { names };
        let mut moved_from = BTreeSet::new();
        for (kind, name) in names {
            let before: Option<String> = tx
                .query_row(
                    "SELECT image FROM tenant_images WHERE tenant = ?1 AND name = ?2",
                    [tenant, name],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(old) = before.filter(|old| old != id) {
                moved_from.insert(old);
            }
            tx.execute(
                "INSERT INTO tenant_images (tenant, name, kind, image, created)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, name) DO UPDATE SET kind = ?3, image = ?4, created = ?5",
                params![tenant, name, kind.as_str(), id, crate::store::now()],
            )?;
        }
        // A name given the image it was loaded as replaces the bare id.
        if names.iter().any(|(kind, _)| *kind != RefKind::Id) {
            tx.execute(
                "DELETE FROM tenant_images WHERE tenant = ?1 AND kind = 'id' AND image = ?2",
                [tenant, id],
            )?;
        }
        let mut released = Vec::new();
        for old in moved_from {
            let left: u64 = tx.query_row(
                "SELECT COUNT(*) FROM tenant_images WHERE tenant = ?1 AND image = ?2 AND kind != 'digest'",
                [tenant, &old],
                |row| row.get(0),
            )?;
            if left == 0 {
                tx.execute(
                    "DELETE FROM tenant_images WHERE tenant = ?1 AND image = ?2",
                    [tenant, &old],
                )?;
                released.push(old);
            }
        }
        // Counted once the change is made: a tag that moves off an image
        // frees its place. Returning before the commit rolls it all back.
        if let (false, Some(limit)) = (was_held, quota.images) {
            let after: u64 = tx.query_row(
                "SELECT COUNT(DISTINCT image) FROM tenant_images WHERE tenant = ?1",
                [tenant],
                |row| row.get(0),
            )?;
            if after > limit {
                return Err(ImagesError::Quota {
                    tenant: tenant.to_owned(),
                    used: after - 1,
                    asked: 1,
                    limit,
                });
            }
        }
        tx.commit()?;
        Ok(released)
    }

    /// Removes the name `name` of `tenant`. When that was the image's last
    /// tag (or its bare id), the tenant's other names of it (its digests)
    /// go too: the image is no longer the tenant's. Returns what was
    /// removed, the named row first; empty when the tenant had no such name.
    pub fn forget_tenant_name(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<ImageRef>, ImagesError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(named) = tx
            .query_row(
                "SELECT name, kind, image FROM tenant_images WHERE tenant = ?1 AND name = ?2",
                [tenant, name],
                image_ref,
            )
            .optional()?
        else {
            return Ok(Vec::new());
        };
        tx.execute(
            "DELETE FROM tenant_images WHERE tenant = ?1 AND name = ?2",
            [tenant, name],
        )?;
        let mut removed = vec![named.clone()];
        let naming: u64 = tx.query_row(
            "SELECT COUNT(*) FROM tenant_images WHERE tenant = ?1 AND image = ?2 AND kind != 'digest'",
            [tenant, &named.image],
            |row| row.get(0),
        )?;
        if naming == 0 || named.kind == RefKind::Digest {
            removed.extend(remove_all(&tx, tenant, &named.image)?);
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Removes every name of the image `id` that `tenant` holds.
    pub fn forget_tenant_image(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<ImageRef>, ImagesError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let removed = remove_all(&tx, tenant, id)?;
        tx.commit()?;
        Ok(removed)
    }

    /// Every image some tenant holds: the shared store must keep them.
    pub fn images_of_tenants(&self) -> Result<BTreeSet<String>, ImagesError> {
        let db = self.db();
        let mut statement = db.prepare("SELECT DISTINCT image FROM tenant_images")?;
        let ids = statement.query_map([], |row| row.get(0))?;
        Ok(ids.collect::<Result<_, _>>()?)
    }
}

fn image_ref(row: &rusqlite::Row<'_>) -> Result<ImageRef, rusqlite::Error> {
    Ok(ImageRef {
        name: row.get(0)?,
        kind: RefKind::parse(&row.get::<_, String>(1)?),
        image: row.get(2)?,
    })
}

fn remove_all(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    id: &str,
) -> Result<Vec<ImageRef>, ImagesError> {
    let mut statement = tx.prepare(
        "DELETE FROM tenant_images WHERE tenant = ?1 AND image = ?2 RETURNING name, kind, image",
    )?;
    let mut removed = statement
        .query_map([tenant, id], image_ref)?
        .collect::<Result<Vec<_>, _>>()?;
    removed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(removed)
}

fn quota_of(tx: &rusqlite::Transaction<'_>, tenant: &str) -> Result<Quota, ImagesError> {
    let quota: Option<String> = tx
        .query_row(
            "SELECT quota FROM tenants WHERE name = ?1",
            [tenant],
            |row| row.get(0),
        )
        .optional()?;
    let quota = quota.ok_or_else(|| ImagesError::NoTenant(tenant.to_owned()))?;
    serde_json::from_str(&quota).map_err(|e| ImagesError::BadQuota(tenant.to_owned(), e))
}

fn check_id(id: &str) -> Result<(), ImagesError> {
    let valid = id.strip_prefix(ID_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(ImagesError::BadId(id.chars().take(80).collect()))
    }
}

#[cfg(test)]
#[path = "images_tests.rs"]
mod tests;

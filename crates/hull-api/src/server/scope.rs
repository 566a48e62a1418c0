//! Who a request acts for, and what that lets it see.
//!
//! Tenancy is checked here, at the API boundary: the runtime below knows
//! nothing of tenants. A tenant's object carries its owner in a label that
//! only this layer writes; whatever does not carry the tenant's own is, to
//! that tenant, as if it did not exist.

use std::collections::BTreeMap;

/// The label that names an object's tenant. Set by the API when a tenant
/// creates the object; a tenant can neither set nor change it.
pub const OWNER_LABEL: &str = "sh.hull.tenant";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// The operator, on the Unix socket: every object.
    Operator,
    /// A tenant: its own objects only.
    Tenant(&'a str),
}

impl Scope<'_> {
    /// The store's name for what this scope calls `name`: a tenant's
    /// volumes and snapshots are `name@tenant`, a form no other can spell.
    pub fn qualify(&self, name: &str) -> String {
        match self {
            Scope::Operator => name.to_owned(),
            Scope::Tenant(tenant) => format!("{name}@{tenant}"),
        }
    }

    /// What this scope calls the store's `name`; `None` if not its own.
    pub fn unqualify<'n>(&self, name: &'n str) -> Option<&'n str> {
        match self {
            Scope::Operator => Some(name),
            Scope::Tenant(tenant) => name
                .strip_suffix(tenant)
                .and_then(|rest| rest.strip_suffix('@'))
                .filter(|plain| !plain.contains('@')),
        }
    }

    /// `text` as this scope reads it: a tenant's own qualified names in it
    /// (`data@acme`, `acme/web`) as the tenant calls them (`data`, `web`).
    /// The runtime words its errors with the store's names; every error
    /// the tenant listener answers passes through here.
    pub fn unqualify_text(&self, text: &str) -> String {
        match self {
            Scope::Operator => text.to_owned(),
            Scope::Tenant(tenant) => strip_qualifier(text, tenant),
        }
    }

    /// Whether an object with these labels is visible in this scope.
    pub fn sees(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Tenant(tenant) => labels.get(OWNER_LABEL).is_some_and(|owner| owner == tenant),
        }
    }

    /// Whether an object of this namespace (a pod's) is visible in this
    /// scope: a tenant's objects live in the namespace of its name.
    pub fn owns(&self, namespace: Option<&str>) -> bool {
        match self {
            Scope::Operator => true,
            Scope::Tenant(tenant) => namespace == Some(*tenant),
        }
    }
}

/// The pod `reference` names among those `scope` sees: the operator names
/// a tenant's by its qualified name (`acme/app`); another tenant's answers
/// as one that does not exist.
pub fn pod(
    daemon: &crate::daemon::Daemon,
    scope: Scope<'_>,
    reference: &str,
) -> Result<std::sync::Arc<hull_runtime::pod::PodRecord>, super::ApiError> {
    let containers = daemon.containers();
    Ok(match scope {
        Scope::Operator => containers.pod(reference)?,
        Scope::Tenant(_) => {
            containers.pod_visible(reference, |p| scope.owns(p.namespace.as_deref()))?
        }
    })
}

/// `text` without `tenant`'s qualifiers: `@tenant` right after a name, and
/// `tenant/` right before one, each only where it is the whole qualifier
/// (`data@acme2` and `xacme/web` stay as they are for `acme`).
fn strip_qualifier(text: &str, tenant: &str) -> String {
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let bytes = text.as_bytes();
    // A tenant's name may hold a `.`; one that ends a sentence ends it too.
    let ends_at = |end: usize| match bytes.get(end) {
        None => true,
        Some(b'.') => !bytes.get(end + 1).copied().is_some_and(name_byte),
        Some(&b) => !name_byte(b),
    };
    let suffix = format!("@{tenant}");
    let prefix = format!("{tenant}/");
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if rest.starts_with(suffix.as_bytes())
            && before.is_some_and(name_byte)
            && ends_at(at + suffix.len())
        {
            at += suffix.len();
            continue;
        }
        if rest.starts_with(prefix.as_bytes())
            && !before.is_some_and(|b| name_byte(b) || matches!(b, b'/' | b'@' | b':'))
            && bytes
                .get(at + prefix.len())
                .is_some_and(u8::is_ascii_alphanumeric)
        {
            at += prefix.len();
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    // Only whole ASCII runs were left out: the rest is the text's own UTF-8.
    String::from_utf8(out).expect("cut at ASCII bytes only")
}

/// The full id of the container `reference` names among those `scope`
/// sees; another tenant's answers as one that does not exist.
pub fn container_id(
    daemon: &crate::daemon::Daemon,
    scope: Scope<'_>,
    reference: &str,
) -> Result<String, super::ApiError> {
    let container = daemon
        .containers()
        .get_visible(reference, |c| scope.sees(&c.config().labels))?;
    Ok(container.id.clone())
}

/// Checks that the exec instance `id` runs in a container `scope` sees;
/// one of another tenant's answers as one that does not exist.
pub fn check_exec(
    daemon: &crate::daemon::Daemon,
    scope: Scope<'_>,
    id: &str,
) -> Result<(), super::ApiError> {
    let not_found = || hull_runtime::ContainerError::ExecNotFound(id.to_owned());
    let info = daemon.containers().exec_info(id)?;
    container_id(daemon, scope, &info.container_id).map_err(|_| not_found())?;
    Ok(())
}

/// The full id (`sha256:…`) of the image `reference` names among those
/// `scope` may run: for the operator, the image store's own names; for a
/// tenant, only the images it pulled, loaded or tagged itself. Another
/// tenant's image, by name, id, id prefix or digest, answers as a missing
/// one. The container create path resolves its image through this and
/// hands the runtime the id it returns.
pub async fn image_visible(
    daemon: &crate::daemon::Daemon,
    scope: Scope<'_>,
    reference: &str,
) -> Result<String, super::ApiError> {
    match scope {
        Scope::Operator => {
            let images = daemon.images().clone();
            let reference = reference.to_owned();
            let image = super::blocking(move || images.resolve(&reference)).await?;
            Ok(image.id)
        }
        Scope::Tenant(tenant) => super::tenant_images::resolve(daemon, tenant, reference).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_sees_only_what_carries_its_own_name() {
        let labels = |owner: Option<&str>| -> BTreeMap<String, String> {
            owner
                .map(|o| (OWNER_LABEL.to_owned(), o.to_owned()))
                .into_iter()
                .collect()
        };
        let acme = Scope::Tenant("acme");
        assert!(acme.sees(&labels(Some("acme"))));
        assert!(!acme.sees(&labels(Some("acme2"))));
        assert!(!acme.sees(&labels(Some("beta"))));
        assert!(!acme.sees(&labels(None)), "the operator's own objects");
        assert!(Scope::Operator.sees(&labels(Some("beta"))));
        assert!(Scope::Operator.sees(&labels(None)));
    }

    #[test]
    fn a_tenant_owns_only_its_own_namespace() {
        let acme = Scope::Tenant("acme");
        assert!(acme.owns(Some("acme")));
        for other in [None, Some("beta"), Some("acme2"), Some("")] {
            assert!(!acme.owns(other), "{other:?}");
        }
        assert!(Scope::Operator.owns(None) && Scope::Operator.owns(Some("beta")));
    }

    #[test]
    fn a_tenant_names_only_its_own_volumes() {
        let acme = Scope::Tenant("acme");
        assert_eq!(acme.qualify("data"), "data@acme");
        assert_eq!(acme.unqualify("data@acme"), Some("data"));
        for other in ["data", "data@beta", "data@xacme", "data@beta@acme", "acme"] {
            assert_eq!(acme.unqualify(other), None, "{other}");
        }
        assert_eq!(Scope::Operator.unqualify("data@acme"), Some("data@acme"));
    }

    #[test]
    fn a_tenants_errors_name_its_objects_as_it_does() {
        let acme = Scope::Tenant("acme");
        for (store, shown) in [
            ("get data@acme: no such volume", "get data: no such volume"),
            (
                "invalid volume name \"x@acme\": only [a-zA-Z0-9]…",
                "invalid volume name \"x\": only [a-zA-Z0-9]…",
            ),
            (
                "volume data@acme is attached to the running container web",
                "volume data is attached to the running container web",
            ),
            ("No such container: acme/web", "No such container: web"),
            (
                "cannot read /var/lib/hull/volumes/data@acme/volume.json: gone",
                "cannot read /var/lib/hull/volumes/data/volume.json: gone",
            ),
            // What the tenant spelled, less its own qualifier only.
            (
                "get data@beta@acme: no such volume",
                "get data@beta: no such volume",
            ),
            ("ends with data@acme.", "ends with data."),
            (
                "…volume is in use - [data@acme, tmp@acme]",
                "…volume is in use - [data, tmp]",
            ),
        ] {
            assert_eq!(acme.unqualify_text(store), shown, "{store}");
        }
        // Another tenant's, longer names, and what is no qualifier stay.
        for kept in [
            "get data@acme2: no such volume",
            "get data@acme.corp: no such volume",
            "get data@xacme: no such volume",
            "No such container: xacme/web",
            "network tenant:acme",
            "/srv/acme/web",
            "sh.hull.tenant=acme",
            "@acme",
            "acme/",
            "café@acme2 ünï",
        ] {
            assert_eq!(acme.unqualify_text(kept), kept);
        }
        assert_eq!(acme.unqualify_text("café data@acme ünï"), "café data ünï");
        assert_eq!(Scope::Operator.unqualify_text("data@acme"), "data@acme");
    }
}

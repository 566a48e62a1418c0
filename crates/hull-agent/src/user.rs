//! Resolving a container's `user` string against its `/etc/passwd` and
//! `/etc/group`, with the rules and messages of docker and runc.

/// The largest id docker and runc accept.
const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// runc's wording, which docker users see and scripts match on.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    #[error("user {0} is out of range: uids and gids must be in range 0-{MAX_ID}")]
    OutOfRange(String),
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The credentials a process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// `None` when the user has no passwd entry (the caller defaults to `/`).
    pub home: Option<String>,
}

/// Parses `/etc/passwd`; malformed lines are skipped, as libc does.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if line.starts_with('#') || fields.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: fields[0].to_owned(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_owned(),
            })
        })
        .collect()
}

/// Parses `/etc/group`; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if line.starts_with('#') || fields.len() < 3 {
                return None;
            }
            let members = fields
                .get(3)
                .map(|list| {
                    list.split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some(GroupEntry {
                name: fields[0].to_owned(),
                gid: fields[2].parse().ok()?,
                members,
            })
        })
        .collect()
}

fn parse_id(text: &str) -> Option<Result<u32, UserError>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u32>()
            .ok()
            .filter(|id| *id <= MAX_ID)
            .ok_or_else(|| UserError::OutOfRange(text.to_owned())),
    )
}

/// Resolves `""`, `name`, `uid`, `uid:gid`, `name:group`, `uid:group`, …
///
/// A numeric uid needs no passwd entry (gid 0 then, as runc does).
/// Supplementary groups come from `/etc/group` only when no group is given.
pub fn resolve(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let (uid, entry) = match parse_id(user_part) {
        Some(uid) => {
            let uid = uid?;
            (uid, passwd.iter().find(|e| e.uid == uid))
        }
        None => {
            let entry = passwd
                .iter()
                .find(|e| e.name == user_part)
                .ok_or_else(|| UserError::NoSuchUser(user_part.to_owned()))?;
            (entry.uid, Some(entry))
        }
    };
    let mut resolved = ResolvedUser {
        uid,
        gid: entry.map_or(0, |e| e.gid),
        additional_gids: Vec::new(),
        home: entry.map(|e| e.home.clone()),
    };
    match group_part.filter(|g| !g.is_empty()) {
        Some(group) => {
            resolved.gid = match parse_id(group) {
                Some(gid) => gid?,
                None => groups
                    .iter()
                    .find(|g| g.name == group)
                    .map(|g| g.gid)
                    .ok_or_else(|| UserError::NoSuchGroup(group.to_owned()))?,
            };
        }
        None => {
            if let Some(entry) = entry {
                resolved.additional_gids = groups
                    .iter()
                    .filter(|g| g.members.contains(&entry.name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    Ok(resolved)
}

/// Adds docker's `GroupAdd` groups (names in `/etc/group`, or gids) to
/// the user's supplementary groups, once each, as runc does.
pub fn add_groups(
    user: &mut ResolvedUser,
    extra: &[String],
    groups: &[GroupEntry],
) -> Result<(), UserError> {
    for group in extra {
        let gid = match parse_id(group) {
            Some(gid) => gid?,
            None => groups
                .iter()
                .find(|g| g.name == *group)
                .map(|g| g.gid)
                .ok_or_else(|| UserError::NoSuchGroup(group.clone()))?,
        };
        if !user.additional_gids.contains(&gid) {
            user.additional_gids.push(gid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        users:x:100:\n\
        alice:x:1000:\n\
        wheel:x:10:alice,bob\n\
        audio:x:29:alice\n";

    fn resolve_str(spec: &str) -> Result<ResolvedUser, UserError> {
        resolve(spec, &parse_passwd(PASSWD), &parse_group(GROUP))
    }

    #[test]
    fn parsing_skips_comments_and_malformed_lines() {
        let passwd = parse_passwd(PASSWD);
        assert_eq!(passwd.len(), 4);
        assert_eq!(passwd[2].home, "/home/alice");
        let groups = parse_group(GROUP);
        assert_eq!(groups[3].members, vec!["alice", "bob"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn empty_user_is_root_with_roots_home() {
        let user = resolve_str("").unwrap();
        assert_eq!((user.uid, user.gid), (0, 0));
        assert_eq!(user.home.as_deref(), Some("/root"));
    }

    #[test]
    fn name_takes_uid_gid_home_and_member_groups() {
        let user = resolve_str("alice").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.additional_gids, vec![10, 29]);
        assert_eq!(user.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn numeric_uid_in_passwd_takes_its_entry() {
        let user = resolve_str("1001").unwrap();
        assert_eq!((user.uid, user.gid), (1001, 100));
        assert_eq!(user.additional_gids, vec![10]);
    }

    #[test]
    fn numeric_uid_not_in_passwd_gets_gid_0_and_no_home() {
        let user = resolve_str("4242").unwrap();
        assert_eq!((user.uid, user.gid), (4242, 0));
        assert_eq!(user.home, None);
    }

    #[test]
    fn added_groups_join_the_users_own_by_name_or_id() {
        let mut alice = resolve_str("alice").unwrap();
        let groups = parse_group(GROUP);
        add_groups(
            &mut alice,
            &["users".into(), "4242".into(), "wheel".into()],
            &groups,
        )
        .unwrap();
        assert_eq!(alice.additional_gids, [10, 29, 100, 4242]);
        assert_eq!(
            add_groups(&mut alice, &["nosuch".into()], &groups),
            Err(UserError::NoSuchGroup("nosuch".into()))
        );
        assert!(matches!(
            add_groups(&mut alice, &["99999999999".into()], &groups),
            Err(UserError::OutOfRange(_))
        ));
    }

    #[test]
    fn explicit_group_wins_and_drops_supplementary_groups() {
        let user = resolve_str("1000:1000").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert!(user.additional_gids.is_empty());
        let user = resolve_str("alice:wheel").unwrap();
        assert_eq!(user.gid, 10);
        let user = resolve_str("5000:users").unwrap();
        assert_eq!((user.uid, user.gid), (5000, 100));
        let user = resolve_str("bob:77").unwrap();
        assert_eq!((user.uid, user.gid), (1001, 77));
    }

    #[test]
    fn unknown_names_fail_with_runcs_wording() {
        let err = resolve_str("mallory").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user mallory: no matching entries in passwd file"
        );
        let err = resolve_str("alice:nogroup").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }

    #[test]
    fn without_passwd_file_only_numeric_users_resolve() {
        assert_eq!(resolve("1000:1000", &[], &[]).unwrap().uid, 1000);
        assert_eq!(resolve("", &[], &[]).unwrap().uid, 0);
        assert!(matches!(
            resolve("root", &[], &[]),
            Err(UserError::NoSuchUser(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_files_and_specs_never_panic(
            passwd in "[a-z0-9:#\n/,]{0,200}",
            group in "[a-z0-9:#\n,]{0,200}",
            spec in "[a-z0-9:]{0,20}",
        ) {
            let _ = resolve(&spec, &parse_passwd(&passwd), &parse_group(&group));
        }

        #[test]
        fn numeric_specs_resolve_to_their_ids(uid in 0u32..=MAX_ID, gid in 0u32..=MAX_ID) {
            let user = resolve(&format!("{uid}:{gid}"), &[], &[]).unwrap();
            proptest::prop_assert_eq!((user.uid, user.gid), (uid, gid));
        }
    }

    #[test]
    fn ids_past_int32_are_rejected() {
        assert!(matches!(
            resolve_str("4294967295"),
            Err(UserError::OutOfRange(_))
        ));
        assert!(matches!(
            resolve_str("0:99999999999"),
            Err(UserError::OutOfRange(_))
        ));
    }
}

//! Who the container process runs as: uid, gid and additional gids, resolved from the CRI
//! security context and the image's USER against the rootfs's `/etc/passwd` and `/etc/group`.

use super::SpecError;
use skiff_proto::runtime::v1 as cri;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// The resolved identity of the container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted and deduplicated; always contains `gid` (as containerd does since CVE-2023-25173).
    pub additional_gids: Vec<u32>,
}

/// One `/etc/passwd` entry (the fields we use).
#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One `/etc/group` entry.
#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves the process identity.
///
/// The user comes from `run_as_username`, else `run_as_user`, else the image's USER
/// (`name`, `uid`, `name:group`, `uid:gid`); `run_as_group` overrides the group but needs a
/// CRI user. A numeric uid missing from `/etc/passwd` is fine (gid 0); a missing name is not.
pub(super) fn resolve(
    rootfs: &Path,
    security: &cri::LinuxContainerSecurityContext,
    image_user: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let run_as_group = security.run_as_group.as_ref().map(|g| g.value);
    let (user, group) = if !security.run_as_username.is_empty() {
        (
            security.run_as_username.clone(),
            run_as_group.map(id_string),
        )
    } else if let Some(uid) = &security.run_as_user {
        (id_string(uid.value), run_as_group.map(id_string))
    } else if let Some(gid) = run_as_group {
        return Err(SpecError::Invalid(format!(
            "run_as_group {gid} is set without run_as_user or run_as_username"
        )));
    } else {
        match image_user.map(str::trim).filter(|u| !u.is_empty()) {
            Some(spec) => match spec.split_once(':') {
                Some((user, group)) => (user.to_string(), Some(group.to_string())),
                None => (spec.to_string(), None),
            },
            // No user anywhere: root, without looking at /etc/passwd (containerd's default).
            None => ("0".to_string(), Some("0".to_string())),
        }
    };

    let passwd = read_passwd(rootfs)?;
    let (uid, mut gid, name) = match parse_id(&user)? {
        Some(uid) => match passwd.iter().find(|e| e.uid == uid) {
            Some(entry) => (uid, entry.gid, Some(entry.name.clone())),
            None => (uid, 0, None),
        },
        None => match passwd.iter().find(|e| e.name == user) {
            Some(entry) => (entry.uid, entry.gid, Some(entry.name.clone())),
            None => return Err(SpecError::UnknownUser(user)),
        },
    };

    let groups = read_group(rootfs)?;
    if let Some(group) = group {
        gid = match parse_id(&group)? {
            Some(gid) => gid,
            None => match groups.iter().find(|g| g.name == group) {
                Some(entry) => entry.gid,
                None => return Err(SpecError::UnknownGroup(group)),
            },
        };
    }

    let mut additional_gids = vec![gid];
    let strict = security.supplemental_groups_policy() == cri::SupplementalGroupsPolicy::Strict;
    if let (Some(name), false) = (&name, strict) {
        // Groups that list the user as a member, except the one named after the user.
        additional_gids.extend(
            groups
                .iter()
                .filter(|g| &g.name != name && g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    for &extra in &security.supplemental_groups {
        additional_gids.push(u32::try_from(extra).map_err(|_| {
            SpecError::Invalid(format!("supplemental group {extra} is not a valid gid"))
        })?);
    }
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

fn id_string(id: i64) -> String {
    id.to_string()
}

/// `Some(id)` for a numeric id, `None` for a name; a negative or too large number is invalid.
fn parse_id(text: &str) -> Result<Option<u32>, SpecError> {
    let numeric = !text.is_empty()
        && text
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit());
    if !numeric {
        return Ok(None);
    }
    text.parse::<u32>()
        .map(Some)
        .map_err(|_| SpecError::Invalid(format!("{text:?} is not a valid uid or gid")))
}

fn read_passwd(rootfs: &Path) -> Result<Vec<PasswdEntry>, SpecError> {
    let text = read_rootfs_file(rootfs, "/etc/passwd")?;
    Ok(text.lines().filter_map(parse_passwd_line).collect())
}

fn read_group(rootfs: &Path) -> Result<Vec<GroupEntry>, SpecError> {
    let text = read_rootfs_file(rootfs, "/etc/group")?;
    Ok(text.lines().filter_map(parse_group_line).collect())
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped, as libc does.
fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let mut fields = line.split(':');
    let name = fields.next()?.trim();
    if name.is_empty() || name.starts_with('#') {
        return None;
    }
    let _password = fields.next()?;
    let uid = fields.next()?.trim().parse().ok()?;
    let gid = fields.next()?.trim().parse().ok()?;
    Some(PasswdEntry {
        name: name.to_string(),
        uid,
        gid,
    })
}

/// `name:password:gid:member,member`.
fn parse_group_line(line: &str) -> Option<GroupEntry> {
    let mut fields = line.split(':');
    let name = fields.next()?.trim();
    if name.is_empty() || name.starts_with('#') {
        return None;
    }
    let _password = fields.next()?;
    let gid = fields.next()?.trim().parse().ok()?;
    let members = fields
        .next()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    Some(GroupEntry {
        name: name.to_string(),
        gid,
        members,
    })
}

/// Reads a small text file of the container rootfs; a missing file reads as empty.
///
/// The path is resolved inside `rootfs` ([`resolve_in_root`]): an image whose `/etc/passwd` is
/// a symlink to `/etc/shadow` gets the rootfs's `/etc/shadow`, never the host's.
fn read_rootfs_file(rootfs: &Path, path: &str) -> Result<String, SpecError> {
    let error = |source| SpecError::RootfsFile {
        path: path.to_string(),
        source,
    };
    let host_path = match resolve_in_root(rootfs, Path::new(path)) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(error(e)),
    };
    // O_NOFOLLOW: the last component was just resolved; refuse a symlink swapped in since.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&host_path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(error(e)),
    };
    // Bound the read: a passwd file of a few MiB is already absurd.
    let mut bytes = Vec::new();
    file.by_ref()
        .take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(error)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Most symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: u32 = 40;

/// Resolves `path` as if `root` were `/`: symlinks are followed, but an absolute target
/// restarts at `root` and `..` stops at `root`, so the result always lies under `root`.
pub(super) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    // Components still to walk, front first; `None` stands for `..`.
    let mut pending: Vec<Option<OsString>> = Vec::new();
    push_components(&mut pending, path);
    let mut resolved = PathBuf::new(); // relative to root
    let mut symlinks = 0;
    while let Some(part) = pending.pop() {
        let Some(name) = part else {
            resolved.pop();
            continue;
        };
        let candidate = resolved.join(&name);
        let meta = fs::symlink_metadata(root.join(&candidate))?;
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        symlinks += 1;
        if symlinks > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = fs::read_link(root.join(&candidate))?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        push_components(&mut pending, &target);
    }
    Ok(root.join(resolved))
}

/// Pushes the components of `path` onto the `pending` stack so the first one pops first.
fn push_components(pending: &mut Vec<Option<OsString>>, path: &Path) {
    let parts: Vec<Option<OsString>> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(Some(name.to_os_string())),
            Component::ParentDir => Some(None),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    pending.extend(parts.into_iter().rev());
}

//! Which repository locations an executant fetches scripts from: the operator's allowlist
//! (`--allow-script-repo`) and how a task's `script.repo` is matched against it.

use std::path::{Component, Path, PathBuf};

/// Whether `repo` (a task's `script.repo`) is one of the `allowlist`'s locations.
///
/// An entry is a local path, a `file://` URL or another git URL. A task's location matches
/// an entry when they are the same location (paths compared after resolving `.` and `..`
/// and, when they exist, symbolic links; URLs compared as written, trailing `/` ignored), or
/// when the entry ends in `/**` and the location lies under it (a path must still lie under
/// it once its symbolic links are resolved). Relative paths and URLs with `..` never match.
pub fn repo_allowed(allowlist: &[String], repo: &str) -> bool {
    match Location::parse(repo) {
        Some(Location::Path(path)) => allowlist.iter().any(|entry| match entry_of(entry) {
            Some((Location::Path(allowed), tree)) => path_matches(&allowed, tree, &path),
            _ => false,
        }),
        Some(Location::Url(url)) => allowlist.iter().any(|entry| match entry_of(entry) {
            Some((Location::Url(allowed), false)) => allowed == url,
            Some((Location::Url(allowed), true)) => url.starts_with(&format!("{allowed}/")),
            _ => false,
        }),
        None => false,
    }
}

/// A repository location, normalised.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    /// An absolute local path, `.` and `..` resolved lexically.
    Path(PathBuf),
    /// Any other git URL, without a trailing `/`.
    Url(String),
}

impl Location {
    fn parse(text: &str) -> Option<Location> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("file://") {
            return normalize(Path::new(path)).map(Location::Path);
        }
        if text.contains("://") || is_scp_like(text) {
            let url = text.trim_end_matches('/');
            let escapes = url.split(['/', ':']).any(|segment| segment == "..");
            return (!escapes && !url.is_empty()).then(|| Location::Url(url.to_string()));
        }
        normalize(Path::new(text)).map(Location::Path)
    }
}

/// Whether `entry` can be an allowlist entry: an absolute path, a `file://` URL or another
/// git URL, optionally ending in `/**` (a relative path would never match anything).
pub fn valid_entry(entry: &str) -> bool {
    entry_of(entry).is_some()
}

/// An allowlist entry: its location, and whether it allows everything under it (`/**`).
fn entry_of(entry: &str) -> Option<(Location, bool)> {
    match entry.trim().strip_suffix("/**") {
        Some(base) => Location::parse(base).map(|l| (l, true)),
        None => Location::parse(entry).map(|l| (l, false)),
    }
}

/// `user@host:path`, git's short form for ssh (a colon before any slash).
fn is_scp_like(text: &str) -> bool {
    match (text.find(':'), text.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        _ => false,
    }
}

/// An absolute path with `.` and `..` resolved without touching the file system; `None` for
/// a relative path.
fn normalize(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

fn path_matches(allowed: &Path, tree: bool, path: &Path) -> bool {
    // The entry as written and as resolved (an operator may name a path through a link).
    let mut bases = vec![allowed.to_path_buf()];
    if let Ok(real) = allowed.canonicalize() {
        bases.push(real);
    }
    let real = path.canonicalize().ok();
    if tree {
        let under = |p: &Path| bases.iter().any(|b| p.starts_with(b) && p != b);
        // Lexically under the entry, and still under it with links resolved.
        under(path) && real.as_deref().is_none_or(under)
    } else {
        bases
            .iter()
            .any(|b| b == path || real.as_deref() == Some(b.as_path()))
    }
}

/// The failed result's reason for a repository off the allowlist.
pub fn refusal(repo: &str) -> String {
    format!("script repository `{repo}` is not on this executant's allowlist (--allow-script-repo)")
}

#[cfg(test)]
mod tests {
    use super::repo_allowed;

    #[test]
    fn the_allowlist() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let ws = base.join("ws");
        std::fs::create_dir_all(ws.join("tasks")).unwrap();
        std::fs::create_dir_all(base.join("other/tasks")).unwrap();
        let tasks = ws.join("tasks").display().to_string();
        let list = vec![
            tasks.clone(),
            format!("{}/**", base.join("trees").display()),
            "https://git.example.org/team/tasks.git".into(),
            "https://git.example.org/org/**".into(),
        ];
        std::fs::create_dir_all(base.join("trees/a/tasks")).unwrap();
        std::os::unix::fs::symlink(base.join("other"), base.join("trees/out")).unwrap();
        let b = |p: &str| format!("{}/{p}", base.display());
        let table: &[(String, bool)] = &[
            (tasks.clone(), true),
            (format!("{tasks}/"), true),
            (format!("file://{tasks}"), true),
            (b("ws/./tasks"), true),
            (b("ws/x/../tasks"), true),
            (b("ws/tasks/../../other/tasks"), false),
            (b("other/tasks"), false),
            (b("ws"), false),
            (b("ws/tasks/sub"), false),
            ("ws/tasks".into(), false),
            (b("trees/a/tasks"), true),
            (b("trees/not-yet/tasks"), true),
            (b("trees"), false),
            (b("trees/../other/tasks"), false),
            (b("trees/out/tasks"), false),
            ("https://git.example.org/team/tasks.git".into(), true),
            ("https://git.example.org/team/tasks.git/".into(), true),
            ("https://git.example.org/team/other.git".into(), false),
            ("https://git.example.org/org/a.git".into(), true),
            ("https://git.example.org/org/../team/x.git".into(), false),
            ("https://git.example.org/organisation/a.git".into(), false),
            ("git@git.example.org:team/tasks.git".into(), false),
            ("/etc".into(), false),
            ("".into(), false),
        ];
        for (repo, want) in table {
            assert_eq!(repo_allowed(&list, repo), *want, "{repo}");
        }
        assert!(!repo_allowed(&[], &tasks), "nothing is allowed by default");
    }
}

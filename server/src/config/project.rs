//! Where a conf directory's files are, and where the paths they name start.
//!
//! `--conf` names either a Wren project directory (`conf/`, `script/`,
//! `data/` side by side), that project's `conf/`, or idm's own flat conf
//! directory (everything in one place). Paths in documents (a schedule's or
//! a mapping's script `file`, a CSV file) resolve as Wren resolves them:
//! against the project directory, with `conf/` tried too.

use std::path::{Path, PathBuf};

/// The two directories of a conf tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Where relative paths start: the project directory.
    pub project: PathBuf,
    /// Where `managed.json`, `sync.json`, … are read from.
    pub files: PathBuf,
}

impl Layout {
    /// `given` as `--conf` named it.
    pub fn of(given: &Path) -> Layout {
        let nested = given.join("conf");
        if nested.is_dir() {
            return Layout {
                project: given.to_path_buf(),
                files: nested,
            };
        }
        if given.file_name().is_some_and(|n| n == "conf")
            && let Some(parent) = given.parent().filter(|p| !p.as_os_str().is_empty())
        {
            return Layout {
                project: parent.to_path_buf(),
                files: given.to_path_buf(),
            };
        }
        Layout {
            project: given.to_path_buf(),
            files: given.to_path_buf(),
        }
    }
}

/// The project directory `--conf` stands for (`.` without one).
pub fn project_dir(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from("."), |g| Layout::of(g).project)
}

/// A path a document names, as Wren resolves it: an absolute path as it
/// is; else `<project>/<path>` if it exists, else `<project>/conf/<path>` if
/// that exists, else `<project>/<path>` (so a message names where it was
/// looked for first). Whether it may be read at all is the caller's rule
/// (`ApiDocumentPolicy` for documents sent over the API).
pub fn resolve(project: &Path, path: &str) -> PathBuf {
    let given = Path::new(path);
    if given.is_absolute() {
        return given.to_path_buf();
    }
    let direct = project.join(given);
    if direct.exists() {
        return direct;
    }
    let in_conf = project.join("conf").join(given);
    if in_conf.exists() { in_conf } else { direct }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_project_its_conf_or_a_flat_directory() {
        let root = std::env::temp_dir().join(format!("idm-layout-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("wren/conf")).unwrap();
        std::fs::create_dir_all(root.join("wren/script")).unwrap();
        std::fs::create_dir_all(root.join("flat")).unwrap();
        std::fs::write(root.join("wren/script/greeting.js"), "1").unwrap();
        std::fs::write(root.join("wren/conf/only-here.js"), "1").unwrap();
        let project = Layout::of(&root.join("wren"));
        assert_eq!(project.project, root.join("wren"));
        assert_eq!(project.files, root.join("wren/conf"));
        assert_eq!(Layout::of(&root.join("wren/conf")), project);
        let flat = Layout::of(&root.join("flat"));
        assert_eq!(
            (flat.project.clone(), flat.files),
            (root.join("flat"), root.join("flat"))
        );
        let base = &project.project;
        assert_eq!(
            resolve(base, "script/greeting.js"),
            base.join("script/greeting.js")
        );
        assert_eq!(
            resolve(base, "only-here.js"),
            base.join("conf/only-here.js")
        );
        assert_eq!(resolve(base, "missing.js"), base.join("missing.js"));
        assert_eq!(resolve(base, "/etc/hosts"), PathBuf::from("/etc/hosts"));
        std::fs::remove_dir_all(root).unwrap();
    }
}

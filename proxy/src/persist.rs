//! Files other processes (or the next start of this one) read: written whole or not at all.

use std::io::{self, Write as _};
use std::path::Path;

/// Writes `contents` to `path` through a temporary file in the same directory: write, fsync, rename, fsync the
/// directory. A reader (a proxy watching its certificates, a sidecar booting from its last good config) never sees
/// half a file, and a crash leaves the old file or the new one. `private` files get mode 0600 from the start (unix).
pub fn write_atomically(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // An existing temporary file keeps its old mode; set it explicitly.
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(if private { 0o600 } else { 0o644 }))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replaces several files in `dir` as one, as the kubelet does for Secrets: their contents go to a new versioned
/// directory, `dir/.data` (a symlink) is pointed at it with a rename, and `dir/<name>` are symlinks through `.data`.
/// A reader sees all the old files or all the new ones, never a new certificate with an old key. `(name, contents,
/// private)`.
pub fn swap_in(dir: &Path, files: &[(&str, &str, bool)]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let version = format!(".v{}", rand::random::<u64>());
    let staged = dir.join(&version);
    std::fs::create_dir(&staged)?;
    for (name, contents, private) in files {
        write_atomically(&staged.join(name), contents.as_bytes(), *private)?;
    }
    let link = dir.join(".data.tmp");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&version, &link)?;
    let previous = std::fs::read_link(dir.join(".data")).ok();
    std::fs::rename(&link, dir.join(".data"))?;
    for (name, _, _) in files {
        let path = dir.join(name);
        if std::fs::read_link(&path).is_err() {
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(Path::new(".data").join(name), &path)?;
        }
    }
    if let Some(old) = previous.filter(|p| *p != Path::new(&version)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_leaves_no_temporary_behind() {
        let dir =
            std::env::temp_dir().join(format!("attache-persist-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        write_atomically(&path, b"one", false).unwrap();
        write_atomically(&path, b"two", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn swapped_files_change_together_and_the_old_version_goes() {
        let dir = std::env::temp_dir().join(format!("attache-swap-{}-{}", std::process::id(), rand::random::<u64>()));
        swap_in(&dir, &[("a", "1", false), ("b", "1", true)]).unwrap();
        swap_in(&dir, &[("a", "2", false), ("b", "2", true)]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "2");
        assert_eq!(std::fs::read_to_string(dir.join("b")).unwrap(), "2");
        let versions = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".v")));
        assert_eq!(versions.count(), 1, "the previous version is removed");
        std::fs::remove_dir_all(dir).unwrap();
    }
}

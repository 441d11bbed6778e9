use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind};

use super::{relevant, FsChanges};

fn event(kind: EventKind, paths: &[&str]) -> Event {
    let mut e = Event::new(kind);
    e.paths = paths.iter().map(PathBuf::from).collect();
    e
}

fn names(n: &[&str]) -> HashSet<OsString> {
    n.iter().map(OsString::from).collect()
}

#[test]
fn opens_and_reads_are_not_changes() {
    let watched = names(&["attache.yaml"]);
    for kind in [
        EventKind::Access(AccessKind::Open(AccessMode::Any)),
        EventKind::Access(AccessKind::Close(AccessMode::Read)),
        EventKind::Access(AccessKind::Read),
    ] {
        assert!(!relevant(&event(kind, &["/etc/attache/attache.yaml"]), Some(&watched)), "{kind:?}");
        assert!(!relevant(&event(kind, &["/etc/attache/attache.yaml"]), None), "{kind:?} (directory watch)");
    }
}

#[test]
fn a_watch_of_files_reports_those_files_and_kubernetes_swaps_only() {
    let watched = names(&["attache.yaml"]);
    let modify = EventKind::Modify(ModifyKind::Any);
    let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    assert!(relevant(&event(modify, &["/etc/attache/attache.yaml"]), Some(&watched)));
    // An editor's or sed's write-and-rename lands on the watched name.
    assert!(relevant(&event(rename, &["/etc/attache/.attache.yaml.swp", "/etc/attache/attache.yaml"]), Some(&watched)));
    // The ConfigMap's atomic writer swaps `..data` to a new timestamped directory.
    assert!(relevant(&event(rename, &["/etc/attache/..data"]), Some(&watched)));
    assert!(relevant(&event(EventKind::Create(CreateKind::Folder), &["/etc/attache/..2026_12_03"]), Some(&watched)));
    // A rescan names nothing.
    assert!(relevant(&event(EventKind::Other, &[]), Some(&watched)));
    // A log written beside the config is not the config.
    assert!(!relevant(&event(modify, &["/etc/attache/proxy.log"]), Some(&watched)));
    // A directory watch wants every entry.
    assert!(relevant(&event(modify, &["/etc/attache/proxy.log"]), None));
}

/// Against the real watcher: reading the file, or writing beside it, is not reported; writing it is. (Bounded waits
/// well under the periodic recheck, which reports regardless.)
#[tokio::test]
async fn reading_the_watched_file_is_not_a_change() {
    let dir = std::env::temp_dir().join(format!("attache-fswatch-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("attache.yaml");
    std::fs::write(&file, "a: 1\n").expect("write");
    let mut changes = FsChanges::watch_files([file.as_path()]);
    let quiet = Duration::from_millis(800);
    for _ in 0..3 {
        let _ = std::fs::read_to_string(&file).expect("read");
    }
    std::fs::write(dir.join("proxy.log"), "a line\n").expect("write log");
    assert!(tokio::time::timeout(quiet, changes.next()).await.is_err(), "a read or a neighbour was reported");
    let tmp = dir.join(".attache.yaml.tmp");
    std::fs::write(&tmp, "a: 2\n").expect("write tmp");
    std::fs::rename(&tmp, &file).expect("rename");
    let reported = tokio::time::timeout(Duration::from_secs(3), changes.next()).await.is_ok();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(reported, "the rename was missed");
}

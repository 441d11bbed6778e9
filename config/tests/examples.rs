//! Every example must load and validate, so examples never rot: each `*.yaml` directly in `examples/` is a
//! sidecar's file; each directory under it is a control-plane mesh directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn entries(dir: &Path) -> Vec<PathBuf> {
    let read = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut out: Vec<PathBuf> =
        read.map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path()).collect();
    out.sort();
    out
}

fn is_yaml(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn every_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let all = entries(&dir);
    let files: Vec<&PathBuf> = all.iter().filter(|p| is_yaml(p)).collect();
    let meshes: Vec<&PathBuf> = all.iter().filter(|p| p.is_dir()).collect();
    assert!(!files.is_empty(), "no examples found under {}", dir.display());
    let mut failures: Vec<String> = files
        .iter()
        .filter_map(|path| attache_config::load_str(&read(path)).err().map(|e| format!("{}: {e}", path.display())))
        .collect();
    for mesh in meshes {
        let texts: Vec<(String, String)> = entries(mesh)
            .iter()
            .filter(|p| is_yaml(p))
            .map(|p| (p.file_name().unwrap_or_default().to_string_lossy().into_owned(), read(p)))
            .collect();
        assert!(!texts.is_empty(), "no YAML in {}", mesh.display());
        if let Err(e) = attache_config::mesh::load_mesh(&texts, &BTreeMap::new()) {
            failures.push(format!("{}: {e}", mesh.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

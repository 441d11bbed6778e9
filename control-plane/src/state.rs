//! What the control plane keeps across restarts, in `<state-dir>/state.json`: the last published version and hash
//! (so versions stay monotonic and an unchanged mesh is not republished) and the canary weights set with
//! `attache canary set` (so a restart keeps the split).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Service -> backend -> weight.
pub type Weights = BTreeMap<String, BTreeMap<String, i64>>;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u64,
    pub hash: u64,
    #[serde(default)]
    pub weights: Weights,
}

/// Where the state lives.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `dir/state.json`; `dir` is created if missing.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
        Ok(Self { path: dir.join("state.json") })
    }

    /// The saved state; the default when there is none yet.
    pub fn load(&self) -> anyhow::Result<State> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.path.display())),
        }
    }

    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(state)?;
        attache_proxy::persist::write_atomically(&self.path, &bytes, false)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_starts_empty() {
        let dir = std::env::temp_dir().join(format!("attache-state-{}-{}", std::process::id(), rand::random::<u64>()));
        let file = StateFile::new(&dir).unwrap();
        assert_eq!(file.load().unwrap(), State::default());
        let mut state = State { version: 7, hash: 42, weights: Weights::new() };
        state.weights.entry("reviews".into()).or_default().insert("reviews-v2".into(), 25);
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), state);
        std::fs::remove_dir_all(dir).unwrap();
    }
}

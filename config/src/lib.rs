//! attache-config: the YAML file format (`spec`), the validated immutable model (`model`), and the loader that turns
//! text into a `Snapshot` or a `ConfigError` listing every problem with its field path, line and column.
//!
//! No tokio, no hyper: the proxy and the control plane validate with exactly this code.

pub mod duration;
pub mod error;
mod locate;
pub mod mesh;
pub mod model;
pub mod spec;
mod validate;
pub mod wire;

pub use error::{ConfigError, FieldError, Location};
pub use model::Snapshot;
pub use spec::ConfigSpec;
pub use validate::fnv1a;

/// Parses and validates a YAML document. The snapshot's `version` is 0 (the caller's source numbers it) and its
/// `hash` is a hash of `text`.
pub fn load_str(text: &str) -> Result<Snapshot, ConfigError> {
    validate::load_str(text)
}

/// [`load_str`], then the reader's own checks of the snapshot (e.g. that the certificate files it names can be
/// loaded); their errors get line and column like validation errors. A snapshot is returned only when both pass.
pub fn load_str_checked(text: &str, check: impl FnOnce(&Snapshot) -> Vec<FieldError>) -> Result<Snapshot, ConfigError> {
    let snapshot = validate::load_str(text)?;
    let errors = check(&snapshot);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(validate::locate(text, ConfigError { errors }))
    }
}

/// The JSON Schema of the configuration file, generated from the spec types.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigSpec)).unwrap_or_default()
}

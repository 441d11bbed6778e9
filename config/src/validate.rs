//! Spec -> model: every semantic check, collecting all errors. (Stub, being written.)

use crate::error::{ConfigError, FieldError};
use crate::model::Snapshot;
use crate::spec::ConfigSpec;

pub(crate) fn load_str(text: &str) -> Result<Snapshot, ConfigError> {
    let spec: ConfigSpec =
        serde_yaml::from_str(text).map_err(|e| ConfigError { errors: vec![FieldError::new("", e.to_string())] })?;
    Snapshot::try_from(spec)
}

impl TryFrom<ConfigSpec> for Snapshot {
    type Error = ConfigError;

    fn try_from(_spec: ConfigSpec) -> Result<Self, Self::Error> {
        Err(ConfigError { errors: vec![FieldError::new("", "not implemented")] })
    }
}

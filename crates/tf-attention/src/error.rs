//! The error every configuration check of this workspace returns.

/// A configuration that cannot build a working module.
///
/// Returned by the `validate()` / `try_init()` of every config in the workspace; `init()` panics
/// with the same message. The message names the field and the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {config}: {message}")]
pub struct ConfigError {
    /// The config type that failed, e.g. `MultiHeadAttentionConfig`.
    pub config: &'static str,
    /// What is wrong, with the values involved.
    pub message: String,
}

impl ConfigError {
    /// A new error for `config` saying `message`.
    pub fn new(config: &'static str, message: impl Into<String>) -> Self {
        Self {
            config,
            message: message.into(),
        }
    }
}

/// Checks shared by every config: a size that must be at least one.
pub fn check_nonzero(config: &'static str, name: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(
            config,
            format!("{name} must be at least 1, got 0"),
        ));
    }
    Ok(())
}

/// Checks shared by every config: a dropout probability in [0, 1).
pub fn check_probability(config: &'static str, name: &str, value: f64) -> Result<(), ConfigError> {
    if !value.is_finite() || !(0.0..1.0).contains(&value) {
        return Err(ConfigError::new(
            config,
            format!("{name} must be in [0, 1), got {value}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_value() {
        let err = check_nonzero("XConfig", "d_model", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid XConfig: d_model must be at least 1, got 0"
        );
        let err = check_probability("XConfig", "dropout", 1.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid XConfig: dropout must be in [0, 1), got 1"
        );
        assert!(check_probability("XConfig", "dropout", f64::NAN).is_err());
        assert!(check_probability("XConfig", "dropout", 0.0).is_ok());
    }
}

//! The CNI error result: what a plugin prints on stdout when it fails.

use serde_json::json;
use std::fmt;

use super::CniVersion;

/// Error codes. 1–99 are the spec's well-known codes; 100+ are ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the requested CNI version is not supported.
    IncompatibleVersion,
    /// 2: a configuration field has a value this plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown; the runtime needs no cleanup.
    UnknownContainer,
    /// 4: a required `CNI_*` environment variable is missing or invalid.
    InvalidEnvironment,
    /// 5: reading stdin or a state file failed.
    Io,
    /// 6: the configuration is not valid JSON or a field has the wrong type.
    Decode,
    /// 7: the configuration decodes but its values are invalid.
    InvalidConfig,
    /// 11: a transient condition; the runtime may retry later.
    TryAgainLater,
    /// 50 (STATUS): the plugin cannot service ADD requests.
    NotAvailable,
    /// 51 (STATUS): as 50, and existing containers may have limited connectivity.
    NotAvailableLimitedConnectivity,
    /// 100: a kernel operation (netlink, sysctl, nftables) failed.
    System,
    /// 101: CHECK found the attachment differs from `prevResult`.
    CheckFailed,
}

impl ErrorCode {
    /// The numeric code printed in the error JSON.
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::NotAvailableLimitedConnectivity => 51,
            ErrorCode::System => 100,
            ErrorCode::CheckFailed => 101,
        }
    }
}

/// A CNI error: a code, a short message and longer details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code.
    pub code: ErrorCode,
    /// A short message characterising the error.
    pub msg: String,
    /// A longer description (may be empty).
    pub details: String,
}

impl CniError {
    /// Builds an error from a code, a message and details.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error result JSON for `version`.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        json!({
            "cniVersion": version.as_str(),
            "code": self.code.as_u32(),
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}: {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_keys() {
        let e = CniError::new(ErrorCode::InvalidConfig, "bad subnet", "10.0.0.0/33");
        let v = e.to_json(CniVersion::V1_1_0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "bad subnet");
        assert_eq!(v["details"], "10.0.0.0/33");
    }
}

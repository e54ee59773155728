//! VERSION: report the spec versions we support.

use serde_json::{json, Value};

use crate::spec::{CniError, CniVersion, ErrorCode, SUPPORTED_VERSIONS};

/// Runs VERSION. The input (`{"cniVersion": ...}`) is optional; its version
/// is echoed back, as the spec asks.
pub fn run(stdin: &[u8]) -> Result<Value, CniError> {
    let mut version = CniVersion::LATEST.as_str().to_string();
    if !stdin.iter().all(u8::is_ascii_whitespace) {
        let input: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                ErrorCode::Decode,
                "failed to decode VERSION input",
                e.to_string(),
            )
        })?;
        if let Some(v) = input.get("cniVersion").and_then(Value::as_str) {
            version = v.to_string();
        }
    }
    Ok(json!({
        "cniVersion": version,
        "supportedVersions": SUPPORTED_VERSIONS,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_the_input_version() {
        let out = run(br#"{"cniVersion":"0.4.0"}"#).unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["supportedVersions"].as_array().unwrap().len(), 5);
        assert_eq!(run(b"").unwrap()["cniVersion"], "1.1.0");
        assert_eq!(run(b"{oops").unwrap_err().code, ErrorCode::Decode);
    }
}

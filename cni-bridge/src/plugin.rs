//! The entry point shared by both binaries: read stdin and the `CNI_*`
//! environment, run the command, print its result or the CNI error JSON.

use serde_json::Value;
use std::io::{Read, Write};
use std::process::ExitCode;

use crate::config::Config;
use crate::spec::{CniError, CniVersion, Command, EnvError, Environment, ErrorCode};
use crate::{cmd_add, cmd_check, cmd_del, cmd_gc, cmd_status, cmd_version};

/// What a command produces: JSON to print (ADD, VERSION) or nothing.
pub type Outcome = Result<Option<Value>, CniError>;

/// A plugin's command dispatcher.
pub type Dispatch = fn(Command, &Environment, &[u8]) -> Outcome;

/// Runs a plugin: parses the environment, reads stdin, dispatches, prints.
/// Exit code 0 on success, 1 with an error JSON on stdout on failure.
pub fn main(dispatch: Dispatch) -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Err(e) => Err(CniError::new(
            ErrorCode::Io,
            "failed to read the network configuration from stdin",
            e.to_string(),
        )),
        Ok(_) => run(dispatch, &stdin, &|k| std::env::var(k).ok()),
    };
    let (json, code) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(result)) => (result, ExitCode::SUCCESS),
        Err(e) => (e.to_json(error_version(&stdin)), ExitCode::FAILURE),
    };
    let mut out = std::io::stdout().lock();
    // Nothing sensible is left to do if stdout is gone.
    let _ = writeln!(out, "{json}");
    code
}

/// Parses the environment from `get` and dispatches (testable core of [`main`]).
pub fn run(dispatch: Dispatch, stdin: &[u8], get: &dyn Fn(&str) -> Option<String>) -> Outcome {
    let command = Command::from_lookup(get).map_err(env_error)?;
    let env = Environment::from_lookup(command, get).map_err(env_error)?;
    dispatch(command, &env, stdin)
}

fn env_error(e: EnvError) -> CniError {
    CniError::new(
        ErrorCode::InvalidEnvironment,
        "invalid CNI environment",
        e.to_string(),
    )
}

/// The version for error output: the configuration's if it is readable.
fn error_version(stdin: &[u8]) -> CniVersion {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().and_then(CniVersion::parse))
        .unwrap_or(CniVersion::LATEST)
}

/// Rejects commands that did not exist yet in the configuration's version.
pub fn require_version(command: Command, version: CniVersion) -> Result<(), CniError> {
    let needed = match command {
        Command::Check => CniVersion::V0_4_0,
        Command::Status | Command::Gc => CniVersion::V1_1_0,
        _ => return Ok(()),
    };
    if version < needed {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!(
                "{command:?} needs cniVersion {needed} or later; the configuration says {version}"
            ),
        ));
    }
    Ok(())
}

/// skiff-bridge's dispatcher.
pub fn bridge(command: Command, env: &Environment, stdin: &[u8]) -> Outcome {
    if command == Command::Version {
        return cmd_version::run(stdin).map(Some);
    }
    let conf = Config::load(stdin)?;
    require_version(command, conf.version)?;
    match command {
        Command::Add => cmd_add::run(env, &conf).map(Some),
        Command::Del => cmd_del::run(env, &conf).map(|()| None),
        Command::Check => cmd_check::run(env, &conf).map(|()| None),
        Command::Status => cmd_status::run(&conf).map(|()| None),
        Command::Gc => cmd_gc::run(&conf).map(|()| None),
        Command::Version => unreachable_version(),
    }
}

/// VERSION is answered before the configuration is read.
fn unreachable_version() -> Outcome {
    Err(CniError::new(
        ErrorCode::System,
        "internal error",
        "VERSION reached the dispatcher",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Outcome {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run(bridge, stdin.as_bytes(), &|k| map.get(k).cloned())
    }

    #[test]
    fn environment_errors_are_code_4() {
        let err = run_with(&[], "{}").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEnvironment);
        assert!(err.details.contains("CNI_COMMAND"));
        let err = run_with(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")], "{}").unwrap_err();
        assert!(err.details.contains("CNI_CONTAINERID"));
        assert!(err.details.contains("CNI_NETNS"));
    }

    #[test]
    fn version_gates() {
        let conf = r#"{"cniVersion":"0.3.1","name":"n"}"#;
        let vars = [
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(
            run_with(&vars, conf).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        let conf = r#"{"cniVersion":"1.0.0","name":"n"}"#;
        assert_eq!(
            run_with(&[("CNI_COMMAND", "GC")], conf).unwrap_err().code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            run_with(&[("CNI_COMMAND", "STATUS")], conf)
                .unwrap_err()
                .code,
            ErrorCode::IncompatibleVersion
        );
        let v = run_with(&[("CNI_COMMAND", "VERSION")], "")
            .unwrap()
            .unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn errors_print_in_the_config_version() {
        assert_eq!(
            error_version(br#"{"cniVersion":"0.4.0"}"#),
            CniVersion::V0_4_0
        );
        assert_eq!(error_version(b"garbage"), CniVersion::LATEST);
    }
}

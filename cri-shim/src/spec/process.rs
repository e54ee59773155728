//! The process to run: argv, environment and working directory.

use super::SpecError;
use skiff_proto::runtime::v1 as cri;
use skiff_runtime::image::config::RunConfig;

/// `PATH` when neither the image nor the request sets one (Docker's and containerd's default).
pub(super) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// argv by Docker's rules: the CRI `command` replaces the image Entrypoint and the CRI `args`
/// replace the image Cmd; a `command` without `args` does not pick up the image Cmd.
pub(super) fn args(
    config: &cri::ContainerConfig,
    image: &RunConfig,
) -> Result<Vec<String>, SpecError> {
    let mut argv = config.command.clone();
    let mut args = config.args.clone();
    if argv.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint.clone().unwrap_or_default();
        // `ENTRYPOINT [""]` is Docker's way to say "no entrypoint".
        if entrypoint != [""] {
            argv = entrypoint;
        }
    }
    argv.extend(args);
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// The environment: default `PATH`, `HOSTNAME`, then the image's Env, then the CRI envs, each
/// later `KEY=value` replacing an earlier one with the same key in place.
pub(super) fn env(
    config: &cri::ContainerConfig,
    image: &RunConfig,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    for entry in image.env.iter().flatten() {
        set_env(&mut env, entry.clone());
    }
    for kv in &config.envs {
        let value = String::from_utf8(kv.value.clone()).map_err(|_| {
            SpecError::Invalid(format!("environment variable {:?} is not UTF-8", kv.key))
        })?;
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(SpecError::Invalid(format!(
                "invalid environment variable name {:?}",
                kv.key
            )));
        }
        set_env(&mut env, format!("{}={value}", kv.key));
    }
    Ok(env)
}

/// Replaces or appends `entry`. An image entry without `=` unsets the key, as in Docker.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default().to_string();
    let position = env
        .iter()
        .position(|e| e.split('=').next() == Some(key.as_str()));
    match (position, entry.contains('=')) {
        (Some(i), true) => env[i] = entry,
        (Some(i), false) => {
            env.remove(i);
        }
        (None, true) => env.push(entry),
        (None, false) => {}
    }
}

/// The working directory: the request's, else the image's, else `/` (always absolute).
pub(super) fn cwd(config: &cri::ContainerConfig, image: &RunConfig) -> String {
    let dir = [
        config.working_dir.as_str(),
        image.working_dir.as_deref().unwrap_or(""),
    ]
    .into_iter()
    .find(|d| !d.is_empty())
    .unwrap_or("/");
    if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("/{dir}")
    }
}

//! Writing `--pid-file`.

use std::fs;
use std::path::Path;

use super::error::{OciError, Result};

/// Writes `pid` to `path` atomically (temporary file, then rename), so a caller
/// polling for the file never reads a partial number.
///
/// We write it ourselves rather than through libcontainer's `with_pid_file`, which
/// writes in place and before the create has finished.
pub fn write(path: &Path, pid: i32) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        OciError::InvalidArgument(format!("bad pid file path {}", path.display()))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let context = || format!("write pid file {}", path.display());
    fs::write(&tmp, pid.to_string()).map_err(|err| OciError::io(context(), err))?;
    fs::rename(&tmp, path).map_err(|err| {
        let _ = fs::remove_file(&tmp);
        OciError::io(context(), err)
    })
}

//! Logging for `skiff-oci`, in the line formats runc writes with `--log`.
//!
//! Tools that drive runc read its log file to find out why a command failed;
//! containerd, for one, parses `--log-format json` lines for `level` and `msg`.
//! So lines look like logrus's:
//!
//! - text: `time="2024-05-01T10:00:00.123456789Z" level=info msg="container created" id="c1"`
//! - json: `{"level":"info","msg":"container created","id":"c1","time":"..."}`

use std::fmt::{self, Write as _};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use chrono::SecondsFormat;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::error::{OciError, Result};

/// The `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// logrus-style `key=value` text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global logger.
///
/// With `log_file`, lines at info level (debug with `debug`) are appended to it.
/// Without one, nothing is logged unless `debug` is set, and then it goes to
/// stderr. Keep stderr quiet by default: the container inherits it.
pub fn init(log_file: Option<&Path>, format: LogFormat, debug: bool) -> Result<()> {
    let level = if debug { Level::DEBUG } else { Level::INFO };
    let writer = match log_file {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| OciError::io(format!("open log file {}", path.display()), err))?;
            BoxMakeWriter::new(Mutex::new(file))
        }
        None if debug => BoxMakeWriter::new(std::io::stderr),
        None => return Ok(()),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(writer)
        .event_format(RuncFormat { format })
        .finish();
    // Only fails if a logger is already installed, which is harmless.
    let _ = tracing::subscriber::set_global_default(subscriber);
    Ok(())
}

/// Formats events as runc's log lines.
struct RuncFormat {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for RuncFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let level = level_word(*event.metadata().level());
        let line = match self.format {
            LogFormat::Json => json_line(time, level, fields),
            LogFormat::Text => text_line(&time, level, &fields),
        };
        writeln!(writer, "{line}")
    }
}

/// logrus's level names.
fn level_word(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn json_line(time: String, level: &str, fields: Fields) -> String {
    let mut object = serde_json::Map::new();
    object.insert("level".into(), level.into());
    object.insert("msg".into(), fields.message.into());
    for (key, value) in fields.others {
        object.insert(key, value);
    }
    object.insert("time".into(), time.into());
    serde_json::Value::Object(object).to_string()
}

fn text_line(time: &str, level: &str, fields: &Fields) -> String {
    // `{:?}` quotes and escapes like Go's %q, which logrus uses for values.
    let mut line = format!("time={time:?} level={level} msg={:?}", fields.message);
    for (key, value) in &fields.others {
        match value {
            serde_json::Value::String(text) => {
                let _ = write!(line, " {key}={text:?}");
            }
            other => {
                let _ = write!(line, " {key}={other}");
            }
        }
    }
    line
}

/// An event's message and its other fields (numbers and booleans kept as such).
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.others.push((field.name().to_string(), value.into()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.others.push((field.name().to_string(), value.into()));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.others.push((field.name().to_string(), value.into()));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_text(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record_text(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.others.push((field.name().to_string(), value.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields {
        Fields {
            message: "container \"c1\" created".into(),
            others: vec![("id".into(), "c1".into()), ("pid".into(), 42.into())],
        }
    }

    #[test]
    fn text_lines_look_like_logrus() {
        let line = text_line("T", "info", &sample());
        assert_eq!(
            line,
            r#"time="T" level=info msg="container \"c1\" created" id="c1" pid=42"#
        );
    }

    #[test]
    fn json_lines_carry_level_and_msg() {
        let line = json_line("T".into(), "error", sample());
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "container \"c1\" created");
        assert_eq!(value["id"], "c1");
        assert_eq!(value["pid"], 42);
        assert_eq!(value["time"], "T");
    }
}

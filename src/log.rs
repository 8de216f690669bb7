//! The node's log: `tracing` events, written to stderr by `tracing-subscriber`. Outside the
//! packet path entirely: every control-plane event (start and stop, ports opened and closed, a
//! change applied or refused and why, the store's connection, nodes up and down, CNI ADD/DEL)
//! is one event with fields, emitted from the control side or between batches; the poll loop
//! itself never logs, and dataplane anomalies reach the log only through the control side's
//! rate-limited drop watch (`daemon::anomaly`).
//!
//! [`init`] sets it up once, from `vxmesh run --log-level LEVEL` (default `info`; `RUST_LOG`,
//! when set and not empty, overrides it with a full `EnvFilter` directive such as
//! `vxmesh=debug`) and `--log-format text|json`:
//! - `text` on a terminal or into a file: one line an event, timestamp, level, message and
//!   `key=value` fields (colours on a terminal only).
//! - `json`: one JSON object an event (`timestamp`, `level`, `fields.message`, the fields).
//! - Under systemd (`$JOURNAL_STREAM` names our stderr, so stderr is a journald stream) and
//!   `text`: no timestamp (journald stamps each line), no colours, and each line starts with its
//!   sd-daemon priority prefix, `<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace,
//!   which journald turns into the entry's PRIORITY: `journalctl -u vxmesh@n1 -p warning` shows
//!   warnings and errors only. `json` under journald is written as is (at journald's default
//!   priority), for a collector that parses it.
//!
//! One-shot commands (`vxmesh stats`, `vxmesh network create`, ...) do not log: what they print
//! on stderr is their result, as before.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable lines (with sd-daemon priority prefixes under journald).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("expected text or json, got {s:?}")),
        }
    }
}

/// The levels `--log-level` takes.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Set up the process's log: `level` (one of [`LEVELS`]) unless `RUST_LOG` says otherwise, in
/// `format`, on stderr. Call once, before the first event; an error names a bad `RUST_LOG`.
pub fn init(level: &str, format: Format) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG={v:?}: {e}"))?
        }
        _ => EnvFilter::try_new(level).map_err(|e| format!("--log-level {level}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let set = match (format, journald_stderr()) {
        (Format::Json, _) => builder.json().try_init(),
        (Format::Text, true) => builder.with_ansi(false).event_format(Journald).try_init(),
        (Format::Text, false) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    set.map_err(|e| format!("setting up the log: {e}"))
}

/// Whether stderr is the journald stream systemd gave us: `$JOURNAL_STREAM` is `DEV:INODE` of
/// it (sd-daemon(3)); compared with stderr's own, so a child of the service whose stderr was
/// redirected elsewhere does not write prefixes into a file.
pub fn journald_stderr() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on descriptor 2 into a zeroed, live stat struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the result is checked.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// The sd-daemon priority of a level (syslog's numbers).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Lines for journald: `<PRIO>message key=value...`, no timestamp, no colour.
struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn journald_lines_carry_the_priority_and_the_fields() {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(Journald)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::error!(node = "n1", "stopped");
            tracing::warn!(
                stage = "l2-parse",
                reason = "drop_runt",
                count = 3,
                "dropping"
            );
            tracing::info!(port = "c1", "port opened");
            tracing::debug!("detail");
            tracing::trace!("not shown");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "<3>stopped node=\"n1\"",
                "<4>dropping stage=\"l2-parse\" reason=\"drop_runt\" count=3",
                "<6>port opened port=\"c1\"",
                "<7>detail",
            ]
        );
    }

    #[test]
    fn formats_and_levels_parse() {
        assert_eq!("text".parse::<Format>(), Ok(Format::Text));
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
        for l in LEVELS {
            assert!(EnvFilter::try_new(l).is_ok(), "{l}");
        }
        assert_eq!(priority(Level::TRACE), 7);
    }
}

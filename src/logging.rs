//! Logs to stderr, one line per event. Under systemd each line carries its syslog priority
//! (`<4>` for a warning), so `journalctl -p warning` shows exactly the warnings and errors.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// True when stderr is connected to the journal (systemd sets `JOURNAL_STREAM` to its device
/// and inode; a child that inherited the variable but not the stream does not match).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Installs the global subscriber: `RUST_LOG` filters (default `info`).
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if journal {
        // The journal adds its own timestamps.
        builder
            .with_ansi(false)
            .event_format(Prioritized(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .without_time(),
            ))
            .try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // A subscriber already installed (by a test harness) is fine.
    let _ = installed;
}

/// Prints an error for a human on stderr, with the journal's error priority under systemd.
pub fn print_error(message: &str) {
    let prefix = if stderr_is_journal() { "<3>" } else { "" };
    for line in message.lines() {
        eprintln!("{prefix}roundhouse: {line}");
    }
}

/// Prefixes each line with its syslog priority for journald.
struct Prioritized<F>(F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

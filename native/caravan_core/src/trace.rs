//! The `tracing` events of one lookup, collected as text lines so a slow or
//! partial lookup can be explained from Elixir's Logger: the lookup asked
//! ([`crate::resolver`]), each nameserver that failed, a truncated or
//! doubted answer and the switch to TCP ([`crate::transport`]), and the
//! outcome.
//!
//! A [`Collector`] is a minimal `tracing` subscriber for one lookup. The
//! NIF layer creates one only when Elixir asks (Logger at debug for
//! `Caravan.DNS`) and runs the lookup under it with
//! `tracing::instrument::WithSubscriber`; otherwise no subscriber exists and
//! every event callsite stays disabled, which costs nothing.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// The most lines one lookup keeps; later events are counted, not kept.
pub const MAX_LINES: usize = 100;

/// The longest line kept, in bytes: a field may hold a long value (a list
/// of nameservers, a dependency's debug dump of a message), and formatting
/// stops at this bound.
pub const MAX_LINE_BYTES: usize = 1024;

#[derive(Default)]
struct Lines {
    kept: Vec<String>,
    dropped: usize,
}

/// Collects every event at `DEBUG` or above as `"LEVEL target: message
/// key=value ..."`. Cloning shares the lines.
#[derive(Clone, Default)]
pub struct Collector {
    lines: Arc<Mutex<Lines>>,
    next_span: Arc<AtomicU64>,
}

impl Collector {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A `tracing` dispatcher that feeds this collector.
    pub fn dispatch(&self) -> tracing::Dispatch {
        tracing::Dispatch::new(self.clone())
    }

    /// The lines collected so far, in order, plus one line saying how many
    /// were dropped past [`MAX_LINES`], if any.
    pub fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock();
        let mut out = lines.kept.clone();
        if lines.dropped > 0 {
            out.push(format!("({} more events dropped)", lines.dropped));
        }
        out
    }
}

/// A `fmt::Write` that keeps at most `left` more bytes, then fails, which
/// stops the formatting of a long value early.
struct Bounded<'a> {
    out: &'a mut String,
    left: usize,
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.left {
            self.out.push_str(s);
            self.left -= s.len();
            return Ok(());
        }
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        self.out.push_str(" ...");
        self.left = 0;
        Err(fmt::Error)
    }
}

/// Writes an event's fields: the message, then ` key=value` for the rest,
/// within [`MAX_LINE_BYTES`] in all.
struct Fields {
    message: String,
    rest: String,
    left: usize,
}

impl Fields {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.left == 0 {
            return;
        }
        let is_message = field.name() == "message";
        let out = if is_message {
            &mut self.message
        } else {
            &mut self.rest
        };
        let before = out.len();
        let mut bounded = Bounded {
            out,
            left: self.left,
        };
        let _ = if is_message {
            bounded.write_fmt(value)
        } else {
            write!(bounded, " {}={}", field.name(), value)
        };
        let written = bounded.out.len() - before;
        self.left = self.left.saturating_sub(written);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl Subscriber for Collector {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // In tracing, more verbose levels compare greater (TRACE > DEBUG).
        *metadata.level() <= Level::DEBUG
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut lines = self.lines.lock();
        if lines.kept.len() >= MAX_LINES {
            lines.dropped += 1;
            return;
        }
        let mut fields = Fields {
            message: String::new(),
            rest: String::new(),
            left: MAX_LINE_BYTES,
        };
        event.record(&mut fields);
        let meta = event.metadata();
        lines.kept.push(format!(
            "{} {}: {}{}",
            meta.level(),
            meta.target(),
            fields.message,
            fields.rest
        ));
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::instrument::WithSubscriber;

    #[test]
    fn collects_debug_and_above_with_fields() {
        let collector = Collector::new();
        tracing::dispatcher::with_default(&collector.dispatch(), || {
            tracing::trace!("too verbose");
            tracing::debug!(server = %"127.0.0.1:53", attempt = 2, "retrying");
            tracing::warn!("truncated");
        });
        let lines = collector.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("DEBUG caravan_core::trace::tests: retrying"));
        assert!(lines[0].contains("server=127.0.0.1:53"));
        assert!(lines[0].contains("attempt=2"));
        assert!(lines[1].starts_with("WARN "));
    }

    #[test]
    fn only_events_of_the_instrumented_future() {
        let collector = Collector::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            async { tracing::debug!("inside") }
                .with_subscriber(collector.dispatch())
                .await;
            tracing::debug!("outside");
        });
        assert_eq!(collector.lines().len(), 1);
        assert!(collector.lines()[0].ends_with("inside"));
    }

    #[test]
    fn long_values_are_cut() {
        let collector = Collector::new();
        let long = "x".repeat(10 * MAX_LINE_BYTES);
        tracing::dispatcher::with_default(&collector.dispatch(), || {
            tracing::debug!(value = %long, "big é");
        });
        let line = &collector.lines()[0];
        assert!(line.len() < MAX_LINE_BYTES + 100, "{}", line.len());
        assert!(line.contains("big é value=xxx"));
        assert!(line.ends_with(" ..."));
    }

    #[test]
    fn bounded() {
        let collector = Collector::new();
        tracing::dispatcher::with_default(&collector.dispatch(), || {
            for i in 0..MAX_LINES + 5 {
                tracing::debug!(i, "event");
            }
        });
        let lines = collector.lines();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[MAX_LINES], "(5 more events dropped)");
    }
}

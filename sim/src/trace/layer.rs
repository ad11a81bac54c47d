//! The `tracing` layer that captures what the code under test logs.
//!
//! Spans keep their formatted fields in the registry's extensions; each
//! event is written as `outer{a=1}:inner{b=2}: message c=3` and handed to
//! the [`TraceSink`], which stamps it with virtual time, node and task.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::TraceSink;

/// Captures events into a [`TraceSink`].
pub(crate) struct CaptureLayer {
    sink: Arc<TraceSink>,
}

impl CaptureLayer {
    pub fn new(sink: Arc<TraceSink>) -> CaptureLayer {
        CaptureLayer { sink }
    }
}

/// A span's fields, formatted.
struct SpanFields(String);

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.sink.enabled(metadata.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.sink.enabled(metadata.level())
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.sink.level())
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = String::new();
        attrs.record(&mut FieldWriter::new(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            let mut writer = FieldWriter::new(fields);
            writer.first = writer.out.is_empty();
            values.record(&mut writer);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().fields().field(PROBE_FIELD).is_some() {
            let mut probe = ProbeReader(None);
            event.record(&mut probe);
            if let Some(name) = probe.0 {
                self.sink.count_probe(&name);
            }
        }
        self.sink.record_program(*event.metadata().level(), |text| {
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    text.push_str(span.name());
                    let extensions = span.extensions();
                    if let Some(SpanFields(fields)) = extensions.get::<SpanFields>() {
                        if !fields.is_empty() {
                            text.push('{');
                            text.push_str(fields);
                            text.push('}');
                        }
                    }
                    text.push_str(": ");
                }
            }
            event.record(&mut FieldWriter::new(text));
        });
    }
}

/// The field that names a sometimes-probe: `tracing::info!(probe = "name", ...)`.
pub(crate) const PROBE_FIELD: &str = "probe";

/// Reads the value of an event's [`PROBE_FIELD`].
struct ProbeReader(Option<String>);

impl Visit for ProbeReader {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == PROBE_FIELD {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == PROBE_FIELD {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// Writes fields as `message a=1 b="x"`: the message first and bare,
/// strings without quotes, everything else with `Debug`.
struct FieldWriter<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> FieldWriter<'a> {
    fn new(out: &'a mut String) -> FieldWriter<'a> {
        FieldWriter { out, first: true }
    }

    fn separate(&mut self) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.separate();
        if field.name() != "message" {
            self.out.push_str(field.name());
            self.out.push('=');
        }
        self.out.push_str(value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.separate();
        let written = if field.name() == "message" {
            write!(self.out, "{value:?}")
        } else {
            write!(self.out, "{}={value:?}", field.name())
        };
        written.expect("writing to a String cannot fail");
    }
}

//! The written form of a plan: TOML files (one `[[fault]]` table per
//! fault) and the serde form used for JSON and other formats.
//!
//! Loading goes through [`toml::Spanned`] so every error names the file,
//! the line and the column of the offending table or field.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Fault, FaultEvent, FaultPlan, PlanError, PlanOrigin};
use crate::net::Direction;
use faultline_core::duration::{format_decimal, format_offset, parse_duration, parse_offset};

/// A plan as serde sees it.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    #[serde(default)]
    fault: Vec<EventDocument>,
}

/// One fault as serde sees it: every field a string (or list of strings);
/// which fields apply depends on `kind`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDocument {
    at: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// The same, with the position of every field (TOML only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpannedPlan {
    #[serde(default)]
    fault: Vec<Spanned<SpannedEvent>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpannedEvent {
    at: Spanned<String>,
    kind: Spanned<String>,
    node: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    a: Option<Spanned<Vec<String>>>,
    b: Option<Spanned<Vec<String>>>,
    direction: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    offset: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
}

/// A problem with one field of one event.
struct FieldProblem {
    /// The field at fault, or `None` for the event as a whole.
    field: Option<&'static str>,
    message: String,
}

impl SpannedEvent {
    /// The plain document and where each present field is.
    fn split(self) -> (EventDocument, BTreeMap<&'static str, Range<usize>>) {
        let mut spans = BTreeMap::new();
        let mut take = |field: &'static str, value: Option<Spanned<String>>| {
            value.map(|value| {
                spans.insert(field, value.span());
                value.into_inner()
            })
        };
        let at = take("at", Some(self.at)).expect("`at` is required");
        let kind = take("kind", Some(self.kind)).expect("`kind` is required");
        let node = take("node", self.node);
        let peer = take("peer", self.peer);
        let direction = take("direction", self.direction);
        let duration = take("duration", self.duration);
        let offset = take("offset", self.offset);
        let from = take("from", self.from);
        let to = take("to", self.to);
        let name = take("name", self.name);
        let mut list = |field: &'static str, value: Option<Spanned<Vec<String>>>| {
            value.map(|value| {
                spans.insert(field, value.span());
                value.into_inner()
            })
        };
        let a = list("a", self.a);
        let b = list("b", self.b);
        let document = EventDocument {
            at,
            kind,
            node,
            peer,
            a,
            b,
            direction,
            duration,
            offset,
            from,
            to,
            name,
        };
        (document, spans)
    }
}

const KINDS: &str = "partition, heal, kill, restart, stall, skew, reset, clog, unclog, custom";

impl EventDocument {
    fn present(&self) -> [(&'static str, bool); 10] {
        [
            ("node", self.node.is_some()),
            ("peer", self.peer.is_some()),
            ("a", self.a.is_some()),
            ("b", self.b.is_some()),
            ("direction", self.direction.is_some()),
            ("duration", self.duration.is_some()),
            ("offset", self.offset.is_some()),
            ("from", self.from.is_some()),
            ("to", self.to.is_some()),
            ("name", self.name.is_some()),
        ]
    }

    /// Check which fields are present for the kind: `required` must be,
    /// nothing outside `required` and `optional` may be.
    fn check_fields(&self, required: &[&str], optional: &[&str]) -> Result<(), FieldProblem> {
        for (field, present) in self.present() {
            let allowed = required.contains(&field) || optional.contains(&field);
            if present && !allowed {
                return Err(FieldProblem {
                    field: Some(field),
                    message: format!("`{field}` does not apply to kind {:?}", self.kind),
                });
            }
            if !present && required.contains(&field) {
                return Err(FieldProblem {
                    field: None,
                    message: format!("kind {:?} needs `{field}`", self.kind),
                });
            }
        }
        Ok(())
    }

    fn to_event(&self) -> Result<FaultEvent, FieldProblem> {
        let at = parse_duration(&self.at).map_err(|message| FieldProblem {
            field: Some("at"),
            message,
        })?;
        let fault = self.to_fault()?;
        Ok(FaultEvent { at, fault })
    }

    fn to_fault(&self) -> Result<Fault, FieldProblem> {
        let text = |value: &Option<String>| value.clone().expect("checked present");
        let fault = match self.kind.as_str() {
            "partition" | "heal" => self.partition_or_heal()?,
            "kill" => {
                self.check_fields(&["node"], &[])?;
                Fault::Kill {
                    node: text(&self.node),
                }
            }
            "restart" => {
                self.check_fields(&["node"], &[])?;
                Fault::Restart {
                    node: text(&self.node),
                }
            }
            "stall" => {
                self.check_fields(&["node", "duration"], &[])?;
                let duration =
                    parse_duration(&text(&self.duration)).map_err(|message| FieldProblem {
                        field: Some("duration"),
                        message,
                    })?;
                Fault::Stall {
                    node: text(&self.node),
                    duration,
                }
            }
            "skew" => {
                self.check_fields(&["node", "offset"], &[])?;
                let offset_nanos =
                    parse_offset(&text(&self.offset)).map_err(|message| FieldProblem {
                        field: Some("offset"),
                        message,
                    })?;
                Fault::Skew {
                    node: text(&self.node),
                    offset_nanos,
                }
            }
            "reset" => {
                self.check_fields(&["node"], &["peer"])?;
                Fault::Reset {
                    node: text(&self.node),
                    peer: self.peer.clone(),
                }
            }
            "clog" | "unclog" => self.clog_or_unclog()?,
            "custom" => {
                self.check_fields(&["name"], &["node"])?;
                Fault::Custom {
                    name: text(&self.name),
                    node: self.node.clone(),
                }
            }
            other => {
                return Err(FieldProblem {
                    field: Some("kind"),
                    message: format!("unknown kind {other:?}; expected one of {KINDS}"),
                })
            }
        };
        Ok(fault)
    }

    fn partition_or_heal(&self) -> Result<Fault, FieldProblem> {
        self.check_fields(&["a", "b"], &["direction"])?;
        let (a, b) = (
            self.a.clone().expect("checked"),
            self.b.clone().expect("checked"),
        );
        let direction = self.direction()?;
        Ok(if self.kind == "partition" {
            Fault::Partition { a, b, direction }
        } else {
            Fault::Heal { a, b, direction }
        })
    }

    fn clog_or_unclog(&self) -> Result<Fault, FieldProblem> {
        self.check_fields(&["from", "to"], &[])?;
        let (from, to) = (
            self.from.clone().expect("checked"),
            self.to.clone().expect("checked"),
        );
        Ok(if self.kind == "clog" {
            Fault::Clog { from, to }
        } else {
            Fault::Unclog { from, to }
        })
    }

    fn direction(&self) -> Result<Direction, FieldProblem> {
        match self.direction.as_deref() {
            None | Some("both") => Ok(Direction::Both),
            Some("one-way") => Ok(Direction::OneWay),
            Some(other) => Err(FieldProblem {
                field: Some("direction"),
                message: format!("unknown direction {other:?}; expected \"both\" or \"one-way\""),
            }),
        }
    }

    fn from_event(event: &FaultEvent) -> EventDocument {
        let mut document = EventDocument {
            at: format_decimal(event.at),
            kind: event.fault.kind().to_owned(),
            ..EventDocument::default()
        };
        match &event.fault {
            Fault::Partition { a, b, direction } | Fault::Heal { a, b, direction } => {
                document.a = Some(a.clone());
                document.b = Some(b.clone());
                document.direction = Some(
                    match direction {
                        Direction::Both => "both",
                        Direction::OneWay => "one-way",
                    }
                    .to_owned(),
                );
            }
            Fault::Kill { node } | Fault::Restart { node } => document.node = Some(node.clone()),
            Fault::Stall { node, duration } => {
                document.node = Some(node.clone());
                document.duration = Some(format_decimal(*duration));
            }
            Fault::Skew { node, offset_nanos } => {
                document.node = Some(node.clone());
                document.offset = Some(format_offset(*offset_nanos));
            }
            Fault::Reset { node, peer } => {
                document.node = Some(node.clone());
                document.peer = peer.clone();
            }
            Fault::Clog { from, to } | Fault::Unclog { from, to } => {
                document.from = Some(from.clone());
                document.to = Some(to.clone());
            }
            Fault::Custom { name, node } => {
                document.name = Some(name.clone());
                document.node = node.clone();
            }
        }
        document
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1; // at most three steps back: a UTF-8 character is 4 bytes at most
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

impl FaultPlan {
    /// Parse and validate a plan in TOML; errors name `file` and the line.
    pub fn from_toml(text: &str, file: &str) -> Result<FaultPlan, PlanError> {
        let error_at = |offset: Option<usize>, problem: String| {
            let (line, column) = offset.map(|offset| position(text, offset)).unzip();
            PlanError {
                file: file.to_owned(),
                line,
                column,
                problem,
            }
        };
        let parsed: SpannedPlan = toml::from_str(text).map_err(|error| {
            error_at(
                error.span().map(|span| span.start),
                error.message().to_owned(),
            )
        })?;
        let mut events = Vec::with_capacity(parsed.fault.len());
        let mut positions = Vec::with_capacity(parsed.fault.len());
        for spanned in parsed.fault {
            let table = spanned.span();
            let (document, spans) = spanned.into_inner().split();
            let event = document.to_event().map_err(|problem| {
                let span = problem
                    .field
                    .and_then(|field| spans.get(field))
                    .unwrap_or(&table);
                error_at(Some(span.start), problem.message)
            })?;
            events.push(event);
            positions.push(position(text, table.start));
        }
        let plan = FaultPlan {
            events,
            origin: Some(PlanOrigin {
                file: file.to_owned(),
                positions,
            }),
        };
        plan.validate(None)?;
        Ok(plan)
    }

    /// Read, parse and validate the plan in `path`.
    pub fn load(path: &Path) -> Result<FaultPlan, PlanError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| PlanError {
            file: file.clone(),
            line: None,
            column: None,
            problem: format!("cannot read the plan: {error}"),
        })?;
        FaultPlan::from_toml(&text, &file)
    }

    /// The plan as TOML that [`FaultPlan::from_toml`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(&PlanDocument::from(self.clone()))
            .expect("a plan document of strings always serialises to TOML")
    }
}

impl From<FaultPlan> for PlanDocument {
    fn from(plan: FaultPlan) -> PlanDocument {
        PlanDocument {
            fault: plan.events.iter().map(EventDocument::from_event).collect(),
        }
    }
}

impl TryFrom<PlanDocument> for FaultPlan {
    type Error = PlanError;

    fn try_from(document: PlanDocument) -> Result<FaultPlan, PlanError> {
        let mut events = Vec::with_capacity(document.fault.len());
        for (index, event) in document.fault.iter().enumerate() {
            events.push(event.to_event().map_err(|problem| PlanError {
                file: "<plan>".to_owned(),
                line: None,
                column: None,
                problem: format!("fault #{}: {}", index + 1, problem.message),
            })?);
        }
        let plan = FaultPlan::new(events);
        plan.validate(None)?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PLAN: &str = r#"
[[fault]]
at = "1s"
kind = "partition"
a = ["n0"]
b = ["n1", "n2"]

[[fault]]
at = "2s"
kind = "heal"
a = ["n0"]
b = ["n1", "n2"]
direction = "both"

[[fault]]
at = "2.5s"
kind = "stall"
node = "n1"
duration = "300ms"
"#;

    #[test]
    fn a_plan_file_loads() {
        let plan = FaultPlan::from_toml(PLAN, "plan.toml").expect("valid");
        assert_eq!(plan.events.len(), 3);
        assert_eq!(plan.events[2].at, Duration::from_millis(2_500));
        assert_eq!(
            plan.events[2].fault,
            Fault::Stall {
                node: "n1".to_owned(),
                duration: Duration::from_millis(300)
            }
        );
        assert_eq!(plan.line_of(1), Some(8));
    }

    #[test]
    fn toml_round_trips() {
        let plan = FaultPlan::from_toml(PLAN, "plan.toml").expect("valid");
        let again = FaultPlan::from_toml(&plan.to_toml(), "again.toml").expect("valid");
        assert_eq!(plan.events, again.events);
    }

    #[test]
    fn json_round_trips_through_serde() {
        let plan = FaultPlan::from_toml(PLAN, "plan.toml").expect("valid");
        let json = serde_json::to_string(&plan).expect("serialises");
        let again: FaultPlan = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(plan.events, again.events);
    }

    fn error(text: &str) -> PlanError {
        FaultPlan::from_toml(text, "bad.toml").expect_err("invalid")
    }

    #[test]
    fn field_errors_point_at_the_field() {
        let error =
            error("[[fault]]\nat = \"1s\"\nkind = \"stall\"\nnode = \"a\"\nduration = \"-3s\"\n");
        assert_eq!((error.line, error.column), (Some(5), Some(12)));
        assert!(error.problem.contains("negative"), "{error}");
        assert!(error.to_string().starts_with("bad.toml:5:12: "), "{error}");
    }

    #[test]
    fn unknown_kinds_fields_and_missing_fields_are_named() {
        let unknown_kind = error("[[fault]]\nat = \"1s\"\nkind = \"explode\"\n");
        assert_eq!(unknown_kind.line, Some(3));
        assert!(unknown_kind.problem.contains("unknown kind \"explode\""));

        let unknown_field = error("[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnodes = \"a\"\n");
        assert_eq!(unknown_field.line, Some(4));
        assert!(unknown_field.problem.contains("unknown field `nodes`"));

        let misplaced =
            error("[[fault]]\nat = \"1s\"\nkind = \"kill\"\nnode = \"a\"\nduration = \"1s\"\n");
        assert_eq!(misplaced.line, Some(5));
        assert!(misplaced.problem.contains("`duration` does not apply"));

        let missing = error("\n[[fault]]\nat = \"1s\"\nkind = \"stall\"\nnode = \"a\"\n");
        assert_eq!(missing.line, Some(2));
        assert!(missing.problem.contains("needs `duration`"));
    }

    proptest::proptest! {
        #[test]
        fn any_text_loads_or_fails_without_panicking(text in "\\PC{0,200}") {
            if let Err(error) = FaultPlan::from_toml(&text, "any.toml") {
                proptest::prop_assert!(error.to_string().starts_with("any.toml"));
            }
        }

        #[test]
        fn plan_shaped_text_loads_or_fails_without_panicking(
            at in "[-0-9.a-zµ]{0,6}",
            kind in "(partition|heal|kill|restart|stall|skew|reset|clog|unclog|custom|x)",
            field in "(node|a|b|duration|offset|from|to|name|peer|direction)",
            value in "[a-z0-9.\\-]{0,5}",
        ) {
            let text = format!("[[fault]]\nat = \"{at}\"\nkind = \"{kind}\"\n{field} = \"{value}\"\n");
            if let Err(error) = FaultPlan::from_toml(&text, "shaped.toml") {
                proptest::prop_assert!(error.line.is_some(), "{}", error);
            }
        }
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let error = error("[[fault]]\nat = \"1s\nkind = \"kill\"\n");
        assert_eq!(error.line, Some(2));
    }
}

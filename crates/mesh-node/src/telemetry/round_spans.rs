//! One node's spans of the rounds it takes part in, opened and closed by the
//! round driver as it carries out the engine's actions and reads its messages.
//!
//! ```text
//!  round (leader: StartRound proposed .. CompleteRound proposed; ids from round_ids)
//!  ├── propose            leader: a round command, proposed .. committed or refused
//!  ├── train              participant: Train action .. trained update back
//!  ├── mask               participant, secure aggregation: first key advertised .. masked input sent
//!  │   └── send_update    the masked input's request, sent .. answered
//!  ├── send_update        participant without secure aggregation: the signed update's request
//!  ├── group_aggregate    group aggregator: first member message .. report (or failure) sent;
//!  │                      linked to each member's send_update
//!  └── aggregate          final aggregator: Combine action .. model combined; its parent is
//!                         the context the leader's AggregateRequest carried
//! ```
//!
//! Every span of a round hangs from the round's `round` span, whose ids each
//! node derives ([`super::round_ids`]); outgoing round messages carry the
//! sending span's context. Open spans are bounded ([`OPEN_SPANS_MAX`]); a
//! node that misses a span's end (a round aborted under it, a leader change)
//! ends it when the job's next round reaches it or when the bound is hit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use mesh_consensus::command::{JobId, NodeId};
use mesh_round::protocol::messages::{SecAggStep, TraceContext};
use mesh_round::protocol::{RoundKey, RoundMessage};
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{
    Span, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};

/// Most spans a node keeps open at once (rounds it leads included).
pub const OPEN_SPANS_MAX: usize = 256;
/// Most contexts of ended spans kept for the messages sent after them
/// (group reports and aggregate reports are sent again until the round ends).
const CLOSED_CONTEXTS_MAX: usize = 1024;

/// Set while an exporter is installed: without one, spans are not even built,
/// and no message carries a context (so the wire is what older builds send).
static ENABLED: AtomicBool = AtomicBool::new(false);

pub(super) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A node's part in a round, one open span each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Train,
    Mask,
    Group(u32),
    Aggregate,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Train => "train",
            Step::Mask => "mask",
            Step::Group(_) => "group_aggregate",
            Step::Aggregate => "aggregate",
        }
    }
}

/// The round spans of one node.
pub struct RoundSpans {
    tracer: BoxedTracer,
    enabled: bool,
    mesh: String,
    roots: BTreeMap<(JobId, u32), BoxedSpan>,
    open: BTreeMap<(RoundKey, Step), BoxedSpan>,
    closed: BTreeMap<(RoundKey, Step), SpanContext>,
    /// The context each round's AggregateRequest carried (the parent of `aggregate`).
    requested: BTreeMap<RoundKey, SpanContext>,
}

impl RoundSpans {
    /// Spans for a node of mesh `mesh_id`, on the global tracer (a no-op
    /// unless [`super::Telemetry::init`] installed an exporter first).
    pub fn new(mesh_id: &str) -> Self {
        Self {
            tracer: opentelemetry::global::tracer(super::TRACER_NAME),
            enabled: ENABLED.load(Ordering::Relaxed),
            mesh: mesh_id.to_owned(),
            roots: BTreeMap::new(),
            open: BTreeMap::new(),
            closed: BTreeMap::new(),
            requested: BTreeMap::new(),
        }
    }

    /// Spans open now (for tests and bounds).
    pub fn open_count(&self) -> usize {
        self.roots.len() + self.open.len()
    }

    fn root(&self, job: &JobId, round: u32) -> SpanContext {
        super::round_root(&self.mesh, job, round)
    }

    fn attributes(key: &RoundKey) -> Vec<KeyValue> {
        vec![
            KeyValue::new("mesh.job", key.job.0.clone()),
            KeyValue::new("mesh.round", i64::from(key.round)),
            KeyValue::new("mesh.attempt", i64::from(key.attempt)),
        ]
    }

    fn child(&self, builder: SpanBuilder, parent: SpanContext) -> BoxedSpan {
        let cx = Context::new().with_remote_span_context(parent);
        self.tracer.build_with_context(builder, &cx)
    }

    /// Leader: it proposes the start of round `round` of `job`.
    pub fn round_started(&mut self, job: &JobId, round: u32, participants: usize) {
        if !self.enabled || self.roots.contains_key(&(job.clone(), round)) {
            return;
        }
        self.end_earlier_rounds(job, round);
        let (trace, span) = super::round_ids(&self.mesh, job, round);
        let builder = SpanBuilder::from_name("round")
            .with_trace_id(trace)
            .with_span_id(span)
            .with_attributes([
                KeyValue::new("mesh.job", job.0.clone()),
                KeyValue::new("mesh.round", i64::from(round)),
                KeyValue::new("mesh.participants", participants as i64),
            ]);
        let span = self.tracer.build_with_context(builder, &Context::new());
        self.make_room();
        self.roots.insert((job.clone(), round), span);
    }

    /// Leader: it proposes the round's end; `completed` false for an abort
    /// (the round goes on with its next attempt, so the span stays open).
    pub fn round_ended(&mut self, job: &JobId, round: u32, completed: bool) {
        if !completed {
            if let Some(span) = self.roots.get_mut(&(job.clone(), round)) {
                span.add_event("attempt aborted", Vec::new());
            }
            return;
        }
        // A group this node aggregates reports to the leader; when that is
        // this node, the report never leaves it (no `on_send`), so the
        // group's span ends with the round it reported to.
        self.end_open_spans(job, |r| r == round, None);
        if let Some(mut span) = self.roots.remove(&(job.clone(), round)) {
            span.end();
        }
    }

    /// Leader: a span for proposing `command` of round `round` of `job`;
    /// the caller ends it once the proposal is committed or refused.
    pub fn propose(&self, command: &str, job: &JobId, round: u32) -> Option<BoxedSpan> {
        if !self.enabled {
            return None;
        }
        let builder = SpanBuilder::from_name("propose").with_attributes([
            KeyValue::new("mesh.command", command.to_owned()),
            KeyValue::new("mesh.job", job.0.clone()),
            KeyValue::new("mesh.round", i64::from(round)),
        ]);
        Some(self.child(builder, self.root(job, round)))
    }

    /// Participant: training for `key` starts.
    pub fn train_started(&mut self, key: &RoundKey) {
        self.start(key, Step::Train, None, Vec::new());
    }

    /// Participant: training for `key` ended (`error` when it failed).
    pub fn train_done(&mut self, key: &RoundKey, error: Option<&str>) {
        self.end(key, Step::Train, error);
    }

    /// Final aggregator: combining `inputs` group results for `key` starts.
    pub fn combine_started(&mut self, key: &RoundKey, inputs: usize) {
        let parent = self.requested.get(key).cloned();
        let attributes = vec![KeyValue::new("mesh.inputs", inputs as i64)];
        self.start(key, Step::Aggregate, parent, attributes);
    }

    /// Final aggregator: combining for `key` ended.
    pub fn combine_done(&mut self, key: &RoundKey, error: Option<&str>) {
        self.end(key, Step::Aggregate, error);
    }

    /// A round message arrived from `from` (after the gate opened it).
    pub fn on_received(&mut self, from: &NodeId, message: &RoundMessage) {
        if !self.enabled {
            return;
        }
        let Some(key) = message.key() else {
            return;
        };
        let sent_by = message
            .trace()
            .map(remote)
            .filter(|cx| cx.trace_id() == self.root(&key.job, key.round).trace_id());
        match message {
            RoundMessage::AggregateRequest { .. } => {
                if let Some(cx) = sent_by {
                    bounded_insert(&mut self.requested, key.clone(), cx);
                }
            }
            RoundMessage::Plain { group, .. } => self.member_message(key, *group, from, sent_by),
            RoundMessage::SecAgg { group, step, .. } if is_client_step(step) => {
                let update = matches!(step, SecAggStep::Masked(_));
                self.member_message(key, *group, from, sent_by.filter(|_| update));
            }
            _ => {}
        }
    }

    /// Group aggregator: a member's message; its update's context becomes a link.
    fn member_message(
        &mut self,
        key: &RoundKey,
        group: u32,
        from: &NodeId,
        update: Option<SpanContext>,
    ) {
        let step = Step::Group(group);
        if !self.open.contains_key(&(key.clone(), step))
            && !self.closed.contains_key(&(key.clone(), step))
        {
            let attributes = vec![KeyValue::new("mesh.group", i64::from(group))];
            self.start(key, step, None, attributes);
        }
        if let (Some(span), Some(cx)) = (self.open.get_mut(&(key.clone(), step)), update) {
            span.add_link(cx, vec![KeyValue::new("mesh.member", from.0.clone())]);
        }
    }

    /// A round message is about to be sealed for `to`: stamps it with the
    /// context of the span it belongs to, and returns the `send_update` span
    /// for an update (the caller ends it when the request is answered).
    pub fn on_send(&mut self, to: &NodeId, message: &mut RoundMessage) -> Option<BoxedSpan> {
        if !self.enabled {
            return None;
        }
        let key = message.key()?.clone();
        let mut send = None;
        let context = match &*message {
            RoundMessage::Plain { .. } => {
                send = Some(self.send_update(&key, to, None));
                send.as_ref().map(|s| s.span_context().clone())
            }
            RoundMessage::SecAgg { step, .. } if is_client_step(step) => {
                if !self.open.contains_key(&(key.clone(), Step::Mask))
                    && !self.closed.contains_key(&(key.clone(), Step::Mask))
                {
                    self.start(&key, Step::Mask, None, Vec::new());
                }
                if matches!(step, SecAggStep::Masked(_)) {
                    let parent = self.context(&key, Step::Mask);
                    send = Some(self.send_update(&key, to, parent));
                    self.end(&key, Step::Mask, None);
                    send.as_ref().map(|s| s.span_context().clone())
                } else {
                    self.context(&key, Step::Mask)
                }
            }
            RoundMessage::SecAgg { group, .. } | RoundMessage::GroupResult { group, .. } => {
                self.context(&key, Step::Group(*group))
            }
            RoundMessage::GroupReport { input, .. } => {
                let step = Step::Group(input.group);
                self.end(&key, step, None);
                self.context(&key, step)
            }
            RoundMessage::GroupFailed { group, .. } => {
                self.end(&key, Step::Group(*group), Some("group failed"));
                None
            }
            RoundMessage::AggregateReport { .. } => self.context(&key, Step::Aggregate),
            RoundMessage::AggregateRequest { .. } => Some(self.root(&key.job, key.round)),
            RoundMessage::BlobRequest { .. }
            | RoundMessage::BlobReply { .. }
            | RoundMessage::BlobPartRequest { .. }
            | RoundMessage::BlobPart { .. } => None,
        };
        message.set_trace(context.as_ref().and_then(wire));
        send
    }

    fn send_update(&self, key: &RoundKey, to: &NodeId, parent: Option<SpanContext>) -> BoxedSpan {
        let mut attributes = Self::attributes(key);
        attributes.push(KeyValue::new("mesh.to", to.0.clone()));
        let builder = SpanBuilder::from_name("send_update")
            .with_kind(SpanKind::Client)
            .with_attributes(attributes);
        self.child(
            builder,
            parent.unwrap_or_else(|| self.root(&key.job, key.round)),
        )
    }

    /// The context of this node's `step` span of `key`, open or ended.
    fn context(&self, key: &RoundKey, step: Step) -> Option<SpanContext> {
        let index = (key.clone(), step);
        self.open
            .get(&index)
            .map(|s| s.span_context().clone())
            .or_else(|| self.closed.get(&index).cloned())
    }

    /// Context for the participant's training (tests: `None` when off).
    pub fn context_for_train(&self, key: &RoundKey) -> Option<TraceContext> {
        self.context(key, Step::Train).as_ref().and_then(wire)
    }

    fn start(
        &mut self,
        key: &RoundKey,
        step: Step,
        parent: Option<SpanContext>,
        mut attributes: Vec<KeyValue>,
    ) {
        if !self.enabled {
            return;
        }
        self.end(key, step, Some("started again"));
        self.end_earlier_rounds(&key.job, key.round);
        attributes.extend(Self::attributes(key));
        let builder = SpanBuilder::from_name(step.name()).with_attributes(attributes);
        let parent = parent.unwrap_or_else(|| self.root(&key.job, key.round));
        let span = self.child(builder, parent);
        self.make_room();
        self.open.insert((key.clone(), step), span);
    }

    fn end(&mut self, key: &RoundKey, step: Step, error: Option<&str>) {
        let Some(mut span) = self.open.remove(&(key.clone(), step)) else {
            return;
        };
        if let Some(error) = error {
            span.set_status(Status::error(error.to_owned()));
        }
        span.end();
        bounded_insert(
            &mut self.closed,
            (key.clone(), step),
            span.span_context().clone(),
        );
    }

    /// Ends this node's open spans of `job`'s rounds before `round`: the
    /// job has moved on, so whatever they waited for is not coming.
    fn end_earlier_rounds(&mut self, job: &JobId, round: u32) {
        self.end_open_spans(job, |r| r < round, Some("round moved on"));
        let old_roots: Vec<(JobId, u32)> = self
            .roots
            .keys()
            .filter(|(j, r)| j == job && *r < round)
            .cloned()
            .collect();
        for index in old_roots {
            if let Some(mut span) = self.roots.remove(&index) {
                span.set_status(Status::error("round moved on"));
                span.end();
            }
        }
    }

    /// Ends this node's open spans of `job`'s rounds that `which` picks.
    fn end_open_spans(&mut self, job: &JobId, which: impl Fn(u32) -> bool, error: Option<&str>) {
        let picked: Vec<(RoundKey, Step)> = self
            .open
            .keys()
            .filter(|(k, _)| k.job == *job && which(k.round))
            .cloned()
            .collect();
        for (key, step) in picked {
            self.end(&key, step, error);
        }
    }

    /// Keeps the open spans under [`OPEN_SPANS_MAX`] by ending the first ones.
    fn make_room(&mut self) {
        while self.open_count() >= OPEN_SPANS_MAX {
            if let Some(((key, step), _)) = self.open.first_key_value() {
                let (key, step) = (key.clone(), *step);
                self.end(&key, step, Some("too many open spans"));
            } else if let Some((_, mut span)) = self.roots.pop_first() {
                span.set_status(Status::error("too many open spans"));
                span.end();
            } else {
                break;
            }
        }
        debug_assert!(self.open_count() < OPEN_SPANS_MAX);
    }
}

/// True for the SecAgg steps a member sends its group aggregator.
fn is_client_step(step: &SecAggStep) -> bool {
    matches!(
        step,
        SecAggStep::Advertise(_)
            | SecAggStep::ShareKeys(_)
            | SecAggStep::Masked(_)
            | SecAggStep::Unmask(_)
    )
}

fn bounded_insert<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: V) {
    while map.len() >= CLOSED_CONTEXTS_MAX {
        map.pop_first();
    }
    map.insert(key, value);
}

/// The wire form of a recorded span's context (none for an unsampled one).
fn wire(cx: &SpanContext) -> Option<TraceContext> {
    (cx.is_valid() && cx.is_sampled()).then(|| TraceContext {
        trace_id: cx.trace_id().to_bytes(),
        span_id: cx.span_id().to_bytes(),
        flags: cx.trace_flags().to_u8(),
    })
}

/// A context from the wire, as the remote parent or link it names.
fn remote(trace: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wire_and_remote_are_inverse_for_sampled_contexts() {
        let cx = TraceContext::from_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        assert_eq!(wire(&remote(&cx)), Some(cx));
        let unsampled = TraceContext { flags: 0, ..cx };
        assert_eq!(wire(&remote(&unsampled)), None, "unsampled: nothing sent");
    }
}

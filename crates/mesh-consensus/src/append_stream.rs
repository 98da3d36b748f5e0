//! The leader's stream of AppendEntries requests to one follower, with
//! commit-only requests folded into the next request.
//!
//! ```text
//!   openraft replication ──requests──► AppendStream ──sent──► RaftClient::append_entries
//!     entries, or the first request of a session   → sent at once
//!     no entries, at the place the follower matched → held up to COMMIT_HOLD_MS:
//!         a later request at the same place arrives → it is sent instead (it
//!                                                     carries the newer commit)
//!         the hold ends, or the requests end        → the held one is sent
//! ```
//!
//! Why: after every commit openraft sends each follower a request without
//! entries that only tells it the new commit index. Under a steady stream of
//! writes the next request, with entries, follows a fraction of a millisecond
//! later and carries the same commit index, so the first one doubled the RPCs
//! per commit (and the wake-ups on both ends) for nothing. Folding loses
//! nothing: the later request starts at the same log id under the same vote,
//! so its answer is the answer the held one would have had, and openraft
//! acknowledges every in-flight request up to the log id an answer matches.
//! When no write follows, the commit index reaches the follower at most
//! [`COMMIT_HOLD_MS`] later.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::errors::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};
use openraft::RaftNetworkV2;

use crate::network::RaftClient;
use crate::types::{LogId, TypeConfig};

/// Longest time a commit-only request waits for a later request to ride on.
pub const COMMIT_HOLD_MS: u64 = 2;

type Request = AppendEntriesRequest<TypeConfig>;
/// One answer of an append stream.
pub(crate) type StreamItem = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// The last log id a request covers (its previous log id when it has no entries).
pub(crate) fn last_log_id(request: &Request) -> Option<LogId> {
    request
        .entries
        .last()
        .map(|entry| entry.log_id())
        .or(request.prev_log_id)
}

/// What to do with a request that arrives while a commit-only one is held.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fold {
    /// Send the later request instead: it starts at the same place under the
    /// same vote and carries entries.
    SendLater,
    /// Hold the later request instead: also commit-only at the same place, newer.
    HoldLater,
    /// Not at the same place: send the held one first, then the later one.
    SendBoth,
}

/// Whether `later` can stand in for the held commit-only request `held`.
pub(crate) fn fold(held: &Request, later: &Request) -> Fold {
    if later.vote != held.vote || later.prev_log_id != held.prev_log_id {
        Fold::SendBoth
    } else if later.entries.is_empty() {
        Fold::HoldLater
    } else {
        Fold::SendLater
    }
}

/// Whether `request` only moves the commit index at the place the follower
/// is known to match (`matched`, from this stream's last answer). A session's
/// first request, a probe, is never held.
pub(crate) fn is_commit_only(request: &Request, matched: Option<&Option<LogId>>) -> bool {
    request.entries.is_empty() && matched == Some(&request.prev_log_id)
}

/// Turns openraft's request stream into the answers, folding commit-only requests.
pub(crate) struct AppendStream<'c, S> {
    client: &'c mut RaftClient,
    input: S,
    input_done: bool,
    /// A request taken from `input` while holding, to send next.
    next: Option<Request>,
    /// The log id the follower matched at the last answer of this stream.
    matched: Option<Option<LogId>>,
    option: RPCOption,
    stopped: bool,
}

impl<'c, S> AppendStream<'c, S>
where
    S: Stream<Item = Request> + Unpin + Send + 'static,
{
    pub(crate) fn new(client: &'c mut RaftClient, input: S, option: RPCOption) -> Self {
        Self {
            client,
            input,
            input_done: false,
            next: None,
            matched: None,
            option,
            stopped: false,
        }
    }

    async fn pull(&mut self) -> Option<Request> {
        if self.input_done {
            return None;
        }
        let request = self.input.next().await;
        self.input_done = request.is_none();
        request
    }

    /// The next request to send, after folding commit-only requests.
    async fn next_to_send(&mut self) -> Option<Request> {
        let mut held = match self.next.take() {
            Some(request) => request,
            None => self.pull().await?,
        };
        if !is_commit_only(&held, self.matched.as_ref()) {
            return Some(held);
        }
        let deadline = tokio::time::sleep(Duration::from_millis(COMMIT_HOLD_MS));
        tokio::pin!(deadline);
        loop {
            if self.input_done {
                return Some(held);
            }
            // `Next` only borrows the stream: a request being built when the
            // hold ends stays in the stream and comes out on the next pull.
            let later = tokio::select! {
                () = &mut deadline => return Some(held),
                later = self.pull() => later,
            };
            let Some(later) = later else {
                return Some(held);
            };
            match fold(&held, &later) {
                Fold::SendLater => return Some(later),
                Fold::HoldLater => held = later,
                Fold::SendBoth => {
                    self.next = Some(later);
                    return Some(held);
                }
            }
        }
    }

    /// Sends the next request and returns its answer; `None` ends the stream.
    pub(crate) async fn step(&mut self) -> Option<StreamItem> {
        if self.stopped {
            return None;
        }
        let request = self.next_to_send().await?;
        let prev = request.prev_log_id;
        let last = last_log_id(&request);
        let answer = match self
            .client
            .append_entries(request, self.option.clone())
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                self.stopped = true;
                return Some(Err(e));
            }
        };
        // A partial success or a refusal ends the stream, as openraft's own
        // sequential stream does; the replication task starts a new one.
        if let AppendEntriesResponse::PartialSuccess(upto) = &answer {
            self.stopped = *upto != last;
        }
        let result = answer.into_stream_result(prev, last);
        match &result {
            Ok(matched) => self.matched = Some(*matched),
            Err(_) => self.stopped = true,
        }
        Some(Ok(result))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::{Entry, MemberId, Vote};

    fn log_id(term: u64, index: u64) -> LogId {
        let leader = openraft::impls::leader_id_adv::LeaderId {
            term,
            node_id: MemberId(1),
        };
        LogId::new(leader, index)
    }

    fn request(term: u64, prev: Option<LogId>, entries: u64, commit: Option<LogId>) -> Request {
        let first = prev.map_or(0, |p| p.index + 1);
        AppendEntriesRequest {
            vote: Vote::new_committed(term, MemberId(1)),
            prev_log_id: prev,
            entries: (first..first + entries)
                .map(|i| Entry::new_blank(log_id(term, i)))
                .collect(),
            leader_commit: commit,
        }
    }

    #[test]
    fn only_an_entry_less_request_where_the_follower_matched_is_held() {
        let at_5 = Some(log_id(1, 5));
        let commit_only = request(1, at_5, 0, at_5);
        assert!(is_commit_only(&commit_only, Some(&at_5)));
        // The first request of a stream (a probe) is sent at once.
        assert!(!is_commit_only(&commit_only, None));
        // So is one somewhere the follower is not known to match.
        assert!(!is_commit_only(&commit_only, Some(&Some(log_id(1, 4)))));
        // And one with entries.
        assert!(!is_commit_only(&request(1, at_5, 1, at_5), Some(&at_5)));
    }

    #[test]
    fn a_later_request_at_the_same_place_stands_in_for_the_held_one() {
        let at_5 = Some(log_id(1, 5));
        let held = request(1, at_5, 0, at_5);
        assert_eq!(fold(&held, &request(1, at_5, 2, at_5)), Fold::SendLater);
        assert_eq!(fold(&held, &request(1, at_5, 0, at_5)), Fold::HoldLater);
        // Elsewhere, or under another vote: both are sent, in order.
        assert_eq!(
            fold(&held, &request(1, Some(log_id(1, 6)), 1, at_5)),
            Fold::SendBoth
        );
        assert_eq!(fold(&held, &request(2, at_5, 1, at_5)), Fold::SendBoth);
    }

    #[test]
    fn a_request_covers_its_entries_or_its_previous_log_id() {
        let at_5 = Some(log_id(1, 5));
        assert_eq!(last_log_id(&request(1, at_5, 0, None)), at_5);
        assert_eq!(last_log_id(&request(1, at_5, 3, None)), Some(log_id(1, 8)));
        assert_eq!(last_log_id(&request(1, None, 0, None)), None);
    }
}

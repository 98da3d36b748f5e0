//! Decoding the command inside a `Once` proposal without recursion.
//!
//! `Once` wraps a `Box<Command>`, and a derived decoder would follow nested
//! `Once` tags as deep as the bytes go: fuzzing found a log command and a
//! Raft RPC of a few kilobytes of nested `Once` tags that overflowed the
//! stack and aborted the process. A `Once` never wraps another
//! (`Command::validate` refuses it), so the decoder refuses the second level
//! before descending into it.

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

use super::Command;

thread_local! {
    /// `Once` levels being decoded on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Leaves one level when dropped, on every path out of [`inner`].
struct Level;

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Decodes the command of a `Once`, refusing one that is itself a `Once`
/// before reading it.
pub(super) fn inner<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Box<Command>, D::Error> {
    let depth = DEPTH.with(|d| {
        let depth = d.get();
        d.set(depth + 1);
        depth
    });
    let _level = Level;
    if depth > 0 {
        return Err(serde::de::Error::custom(
            "a Once proposal cannot wrap another",
        ));
    }
    Box::<Command>::deserialize(deserializer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn once(command: Command) -> Command {
        Command::Once {
            session: 1,
            seq: 2,
            command: Box::new(command),
        }
    }

    #[test]
    fn one_level_decodes_and_two_are_refused() {
        let put = Command::Put {
            key: "k".into(),
            value: "v".into(),
        };
        let single = once(put.clone());
        assert_eq!(Command::decode(&single.encode()).unwrap(), single);
        let nested = once(once(put));
        assert!(Command::decode(&nested.encode()).is_err());
        // The depth is back to zero after a refusal.
        assert_eq!(Command::decode(&single.encode()).unwrap(), single);
    }

    /// Found by fuzzing: 100,000 nested `Once` tags overflowed the stack.
    #[test]
    fn deeply_nested_once_tags_are_an_error_not_a_stack_overflow() {
        let tag = single_tag();
        let bytes: Vec<u8> = tag
            .iter()
            .copied()
            .cycle()
            .take(tag.len() * 100_000)
            .collect();
        assert!(Command::decode(&bytes).is_err());
    }

    /// The bytes of a `Once` header (variant, session, seq) before its command.
    fn single_tag() -> Vec<u8> {
        let inner = Command::Delete { key: "".into() };
        let whole = once(inner.clone()).encode();
        whole[..whole.len() - inner.encode().len()].to_vec()
    }
}

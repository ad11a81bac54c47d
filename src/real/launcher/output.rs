//! [`OutputTail`]: the last bytes of a process's output.

use std::collections::VecDeque;

/// Keeps the last `limit` bytes pushed into it, in order.
pub(super) struct OutputTail {
    bytes: VecDeque<u8>,
    limit: usize,
}

impl OutputTail {
    pub(super) fn new(limit: usize) -> OutputTail {
        assert!(limit > 0, "a tail keeps at least one byte");
        OutputTail {
            bytes: VecDeque::with_capacity(limit),
            limit,
        }
    }

    /// Append `chunk`, forgetting the oldest bytes beyond the limit.
    pub(super) fn push(&mut self, chunk: &[u8]) {
        let kept = &chunk[chunk.len().saturating_sub(self.limit)..];
        let overflow = (self.bytes.len() + kept.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.bytes.extend(kept);
        assert!(
            self.bytes.len() <= self.limit,
            "the tail stays within its limit"
        );
    }

    /// The tail as text. A character cut by the limit at the start is
    /// dropped; other invalid UTF-8 becomes U+FFFD.
    pub(super) fn text(&self) -> String {
        let bytes: Vec<u8> = self.bytes.iter().copied().collect();
        let continuation = |byte: &&u8| (**byte & 0b1100_0000) == 0b1000_0000;
        let cut = bytes.iter().take(3).take_while(continuation).count();
        String::from_utf8_lossy(&bytes[cut..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes_across_pushes() {
        let mut tail = OutputTail::new(8);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.text(), "lo world");
        tail.push(b"0123456789abc");
        assert_eq!(tail.text(), "56789abc");
    }

    #[test]
    fn drops_a_character_cut_in_half_at_the_start() {
        let mut tail = OutputTail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the limit cuts `é`
        assert_eq!(tail.text(), "€");
    }
}

//! Length-prefixed frames: a `u32` big-endian payload length, then the
//! payload. A frame announcing more than the reader's limit is refused before
//! anything is allocated for it, and a payload is read in growing chunks, so
//! a lying header costs no more memory than the bytes that really arrive.

use std::io::{Read, Write};

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Default largest payload (1 GiB): a model of 256 million `f32` parameters.
pub const FRAME_BYTES_MAX_DEFAULT: u32 = 1 << 30;

/// Why a frame could not be read or written. All of them leave the stream
/// out of step, so the peer must be restarted, not retried.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than the limit.
    #[error("frame of {announced_bytes} bytes is over the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Bytes the prefix announced (or the payload to write has).
        announced_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {read_bytes} of {expected_bytes} bytes read")]
    Truncated {
        /// Bytes the frame needed (header included while reading the header).
        expected_bytes: u64,
        /// Bytes that arrived.
        read_bytes: u64,
    },
    /// The stream ended cleanly between frames.
    #[error("stream closed")]
    Closed,
    /// Reading or writing failed.
    #[error("frame I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The length prefix of a payload of `payload_len` bytes, if it is within `limit_bytes`.
pub fn encode_header(payload_len: usize, limit_bytes: u32) -> Result<[u8; 4], FrameError> {
    let too_large = || FrameError::TooLarge {
        announced_bytes: payload_len as u64,
        limit_bytes: u64::from(limit_bytes),
    };
    let len = u32::try_from(payload_len).map_err(|_| too_large())?;
    if len > limit_bytes {
        return Err(too_large());
    }
    Ok(len.to_be_bytes())
}

/// The payload length a prefix announces, if it is within `limit_bytes`.
pub fn decode_header(header: [u8; 4], limit_bytes: u32) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header);
    if len > limit_bytes {
        return Err(FrameError::TooLarge {
            announced_bytes: u64::from(len),
            limit_bytes: u64::from(limit_bytes),
        });
    }
    usize::try_from(len).map_err(|_| FrameError::TooLarge {
        announced_bytes: u64::from(len),
        limit_bytes: usize::MAX as u64,
    })
}

/// Writes one frame (prefix and payload) and flushes.
pub fn write_frame<W: Write>(
    writer: &mut W,
    payload: &[u8],
    limit_bytes: u32,
) -> Result<(), FrameError> {
    let header = encode_header(payload.len(), limit_bytes)?;
    writer.write_all(&header)?;
    writer.write_all(payload)?;
    writer.flush()?;
    Ok(())
}

/// Reads one frame's payload. A clean end of stream before the first byte
/// is [`FrameError::Closed`]; an end anywhere later is [`FrameError::Truncated`].
pub fn read_frame<R: Read>(reader: &mut R, limit_bytes: u32) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Err(FrameError::Closed);
    }
    if got < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated {
            expected_bytes: FRAME_HEADER_BYTES as u64,
            read_bytes: got as u64,
        });
    }
    let len = decode_header(header, limit_bytes)?;
    let mut payload = Vec::new();
    let read = reader.take(len as u64).read_to_end(&mut payload)?;
    if read < len {
        return Err(FrameError::Truncated {
            expected_bytes: len as u64,
            read_bytes: read as u64,
        });
    }
    Ok(payload)
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_oversized_announcement_is_refused_before_reading_the_payload() {
        let mut bytes = 2_000u32.to_be_bytes().to_vec();
        bytes.extend([0u8; 16]);
        let err = read_frame(&mut bytes.as_slice(), 1_000).unwrap_err();
        assert!(
            matches!(
                err,
                FrameError::TooLarge {
                    announced_bytes: 2_000,
                    limit_bytes: 1_000
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_header_and_a_truncated_payload_are_told_apart_from_a_clean_end() {
        assert!(matches!(
            read_frame(&mut [].as_slice(), 64),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut [0u8, 0].as_slice(), 64),
            Err(FrameError::Truncated {
                expected_bytes: 4,
                read_bytes: 2
            })
        ));
        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend([1, 2, 3]);
        assert!(matches!(
            read_frame(&mut short.as_slice(), 64),
            Err(FrameError::Truncated {
                expected_bytes: 10,
                read_bytes: 3
            })
        ));
    }

    #[test]
    fn writing_a_payload_over_the_limit_is_refused() {
        let mut out = Vec::new();
        assert!(matches!(
            write_frame(&mut out, &[0u8; 9], 8),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty(), "nothing is written for a refused frame");
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_order(payloads in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..300), 0..8)
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                write_frame(&mut stream, p, 1 << 16).unwrap();
            }
            let mut reader = stream.as_slice();
            for p in &payloads {
                prop_assert_eq!(&read_frame(&mut reader, 1 << 16).unwrap(), p);
            }
            prop_assert!(matches!(read_frame(&mut reader, 1 << 16), Err(FrameError::Closed)));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_exceed_the_limit(
            bytes in prop::collection::vec(any::<u8>(), 0..2_000),
            limit in 0u32..1_024,
        ) {
            let mut reader = bytes.as_slice();
            for _ in 0..bytes.len() + 1 {
                match read_frame(&mut reader, limit) {
                    Ok(payload) => prop_assert!(payload.len() <= limit as usize),
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn any_cut_of_a_frame_is_truncated_not_a_short_payload(
            payload in prop::collection::vec(any::<u8>(), 1..200),
            cut in 1usize..204,
        ) {
            let mut stream = Vec::new();
            write_frame(&mut stream, &payload, 1 << 16).unwrap();
            let cut = cut.min(stream.len() - 1);
            let result = read_frame(&mut &stream[..cut], 1 << 16);
            prop_assert!(matches!(result, Err(FrameError::Truncated { .. })), "{:?}", result);
        }
    }
}

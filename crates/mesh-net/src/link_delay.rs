//! Simulated propagation delay for in-process links: bytes that arrive on a
//! memory-transport connection are held for the link's one-way delay before
//! the reader sees them. Only [`crate::TransportKind::Memory`] uses it (the
//! benchmarks that measure gossip over many in-process nodes), so the real
//! Noise, Yamux, gossipsub and admission code runs with wide-area timing.
//!
//! Each end delays what it receives, so each direction of a connection is
//! delayed once. Every accepted or dialled connection draws its delay from
//! the node's seeded generator, uniform in `[min_ms, max_ms]`. Reading goes
//! on while earlier bytes wait, up to [`HELD_BYTES_MAX`], so the delay adds
//! latency without capping throughput.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, Sleep};

/// Most bytes one connection end holds back before it stops reading.
pub const HELD_BYTES_MAX: usize = 4 << 20;
/// Bytes read from the inner stream at once.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// The range every link's one-way delay is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkDelay {
    /// Shortest one-way delay, ms.
    pub min_ms: u64,
    /// Longest one-way delay, ms (at least `min_ms`).
    pub max_ms: u64,
}

/// Draws each new connection's delay from a seeded generator.
#[derive(Clone, Debug)]
pub struct DelayDrawer {
    range: LinkDelay,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl DelayDrawer {
    /// Delays in `range`, drawn in order from `seed`.
    pub fn new(range: LinkDelay, seed: u64) -> Self {
        Self {
            range,
            rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))),
        }
    }

    /// The next connection's one-way delay.
    pub fn draw(&self) -> Duration {
        let high = self.range.max_ms.max(self.range.min_ms);
        let ms = match self.rng.lock() {
            Ok(mut rng) => rng.random_range(self.range.min_ms..=high),
            Err(_) => self.range.min_ms,
        };
        Duration::from_millis(ms)
    }

    /// Wraps `inner` so what it receives is delayed by a newly drawn delay.
    pub fn wrap<C>(&self, inner: C) -> Delayed<C> {
        Delayed::new(inner, self.draw())
    }
}

/// A byte stream whose received bytes reach the reader `delay` after they
/// arrived. Writes pass straight through.
pub struct Delayed<C> {
    inner: C,
    delay: Duration,
    held: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: usize,
    inner_done: bool,
    timer: Pin<Box<Sleep>>,
}

impl<C> Delayed<C> {
    /// `inner` with its received bytes delayed by `delay`.
    pub fn new(inner: C, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            held: VecDeque::new(),
            held_bytes: 0,
            inner_done: false,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl<C: AsyncRead + Unpin> Delayed<C> {
    /// Reads whatever the inner stream has now into the held queue, stamped
    /// with when it may be released. An error is returned at once.
    fn fill(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        while !self.inner_done && self.held_bytes < HELD_BYTES_MAX {
            match Pin::new(&mut self.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => self.inner_done = true,
                Poll::Ready(Ok(n)) => {
                    let due = Instant::now() + self.delay;
                    self.held.push_back((due, chunk[..n].to_vec()));
                    self.held_bytes += n;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Copies released bytes of the queue's head into `buf`.
    fn release(&mut self, buf: &mut [u8]) -> usize {
        let Some((_, head)) = self.held.front_mut() else {
            return 0;
        };
        let n = head.len().min(buf.len());
        buf[..n].copy_from_slice(&head[..n]);
        head.drain(..n);
        if head.is_empty() {
            self.held.pop_front();
        }
        self.held_bytes -= n;
        n
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Delayed<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.fill(cx) {
            return Poll::Ready(Err(e));
        }
        let Some(&(due, _)) = this.held.front() else {
            return if this.inner_done {
                Poll::Ready(Ok(0))
            } else {
                Poll::Pending
            };
        };
        if due > Instant::now() {
            this.timer.as_mut().reset(due);
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(this.release(buf)))
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Delayed<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use futures::AsyncReadExt;

    #[tokio::test]
    async fn received_bytes_wait_for_the_delay_and_keep_their_order() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let delay = Duration::from_millis(30);
        let mut delayed = Delayed::new(Cursor::new(data.clone()), delay);
        let start = Instant::now();
        let mut got = Vec::new();
        delayed.read_to_end(&mut got).await.ok();
        assert_eq!(got, data);
        assert!(start.elapsed() >= delay);
    }

    #[tokio::test]
    async fn reading_goes_on_while_bytes_wait_up_to_the_bound() {
        let data = vec![7u8; HELD_BYTES_MAX + (1 << 20)];
        let mut delayed = Delayed::new(Cursor::new(data), Duration::from_secs(3_600));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 64];
        let first = Pin::new(&mut delayed).poll_read(&mut cx, &mut buf);
        assert!(first.is_pending());
        assert_eq!(delayed.held_bytes, HELD_BYTES_MAX);
        assert!(!delayed.inner_done);
    }

    #[test]
    fn the_same_seed_draws_the_same_delays_within_the_range() {
        let range = LinkDelay {
            min_ms: 20,
            max_ms: 50,
        };
        let draws = |seed| {
            let drawer = DelayDrawer::new(range, seed);
            (0..50).map(|_| drawer.draw()).collect::<Vec<_>>()
        };
        let a = draws(9);
        assert_eq!(a, draws(9));
        assert!(a.iter().all(|d| (20..=50).contains(&d.as_millis())));
        assert!(a.iter().any(|d| *d != a[0]));
    }
}

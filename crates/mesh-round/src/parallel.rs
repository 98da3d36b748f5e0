//! Running one function over many items on a few scoped threads, with the
//! results in item order (so a simulation's outcome never depends on which
//! thread finished first).

/// Applies `f` to every item, splitting the items into `threads` contiguous
/// chunks run on scoped threads; returns the results in item order. A panic
/// in `f` is resumed on the calling thread.
pub fn map_in_threads<T, R, F>(items: &mut [T], threads: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(&mut T) -> R + Sync,
{
    if items.is_empty() {
        return Vec::new();
    }
    let per_thread = items.len().div_ceil(threads.max(1));
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter_mut().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order_for_any_thread_count() {
        for threads in [0, 1, 2, 3, 16] {
            let mut items: Vec<u32> = (0..10).collect();
            let out = map_in_threads(&mut items, threads, |x| {
                *x += 1;
                *x * 2
            });
            assert_eq!(out, (1..=10).map(|x| x * 2).collect::<Vec<_>>());
            assert_eq!(items, (1..=10).collect::<Vec<_>>());
        }
    }
}

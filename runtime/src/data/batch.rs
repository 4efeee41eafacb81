//! Deterministic, resumable batching: each epoch is a permutation seeded by (seed, epoch), so a
//! resumed run that restores (epoch, position) sees exactly the batches it would have seen.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    pub epoch: u64,
    pub position: usize,
}

#[derive(Debug, Clone)]
pub struct Batcher {
    len: usize,
    seed: u64,
    state: BatcherState,
    order: Vec<usize>,
}

impl Batcher {
    /// Batches over `len` records. `len` must be positive (datasets are never empty).
    pub fn new(len: usize, seed: u64) -> Self {
        let mut b = Batcher {
            len,
            seed,
            state: BatcherState {
                epoch: 0,
                position: 0,
            },
            order: Vec::new(),
        };
        b.shuffle();
        b
    }

    pub fn restore(len: usize, seed: u64, state: BatcherState) -> Self {
        let mut b = Batcher::new(len, seed);
        b.state = state;
        b.shuffle();
        b
    }

    pub fn state(&self) -> BatcherState {
        self.state
    }

    fn shuffle(&mut self) {
        self.order = (0..self.len).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ self.state.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        self.order.shuffle(&mut rng);
    }

    /// The next `size` record indices, crossing into the next epoch (reshuffled) when needed.
    pub fn next_batch(&mut self, size: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size && self.len > 0 {
            if self.state.position >= self.len {
                self.state.epoch += 1;
                self.state.position = 0;
                self.shuffle();
            }
            out.push(self.order[self.state.position]);
            self.state.position += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_exactly_and_covers_epochs() {
        let mut a = Batcher::new(10, 3);
        let first: Vec<usize> = a.next_batch(4);
        let state = a.state();
        let rest_a: Vec<Vec<usize>> = (0..5).map(|_| a.next_batch(4)).collect();
        let mut b = Batcher::restore(10, 3, state);
        let rest_b: Vec<Vec<usize>> = (0..5).map(|_| b.next_batch(4)).collect();
        assert_eq!(rest_a, rest_b);
        let mut seen: Vec<usize> = first.into_iter().chain(rest_a[0].clone()).collect();
        seen.extend(&rest_a[1][..2]);
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}

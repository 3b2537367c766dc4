//! Stable number allocation across compile rounds.

use std::{collections::HashMap, hash::Hash};

/// Hands out numbers for keys so that a key keeps its number from one compile round to the
/// next, for as long as it is used in every round.
///
/// A round is one `compile()`: every key asked for during the round is live; at
/// [`IdTable::finish_round`] the keys not asked for are forgotten. Numbers are allocated in
/// increasing order from `first` to `last`, so a forgotten number is not handed out again
/// unless the whole range has been used up (then allocation wraps around and skips the
/// numbers still live).
pub(super) struct IdTable<K> {
    /// Keys of previous rounds not yet asked for in this round.
    previous: HashMap<K, u32>,
    /// Keys asked for in this round.
    current: HashMap<K, u32>,
    /// Next number to try.
    next: u32,
    first: u32,
    last: u32,
    /// The range was used up once: from now on, allocation must skip live numbers.
    wrapped: bool,
}

impl<K: Hash + Eq + Clone> IdTable<K> {
    /// A table allocating from `first` to `last` inclusive.
    pub(super) fn new(first: u32, last: u32) -> Self {
        assert!(first <= last, "empty id range");
        Self {
            previous: HashMap::new(),
            current: HashMap::new(),
            next: first,
            first,
            last,
            wrapped: false,
        }
    }

    /// The number of `key`, allocating one if the key is new (or was forgotten).
    pub(super) fn id(&mut self, key: &K) -> u32 {
        if let Some(&id) = self.current.get(key) {
            return id;
        }
        let id = match self.previous.remove(key) {
            Some(id) => id,
            None => self.allocate(),
        };
        self.current.insert(key.clone(), id);
        id
    }

    /// End the round: keys not asked for since the previous call are forgotten.
    /// Make `key` get `id` when it is next asked for (numbers restored from an earlier run,
    /// e.g. read back from pinned maps after an agent restart). Later allocations start past
    /// the highest seeded number.
    pub(super) fn seed(&mut self, key: K, id: u32) {
        if id < self.first || id > self.last {
            return;
        }
        self.previous.insert(key, id);
        if id >= self.next && id < self.last {
            self.next = id + 1;
        }
    }

    pub(super) fn finish_round(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    fn allocate(&mut self) -> u32 {
        let span = u64::from(self.last - self.first) + 1;
        for _ in 0..=span {
            let id = self.next;
            if id == self.last {
                self.next = self.first;
                self.wrapped = true;
            } else {
                self.next = id + 1;
            }
            if !self.wrapped || !self.is_live(id) {
                return id;
            }
        }
        // Every number of the range is live: billions of keys, which memory rules out.
        panic!("id range {}..={} exhausted", self.first, self.last);
    }

    /// Whether `id` belongs to a key of this or the previous round. Only needed (and only
    /// called) after the range wrapped around, so a linear scan is fine.
    fn is_live(&self, id: u32) -> bool {
        self.current
            .values()
            .chain(self.previous.values())
            .any(|&v| v == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_numbers_are_reused_and_not_reallocated() {
        let mut t = IdTable::new(1, 100);
        t.seed("old", 7);
        t.seed("out-of-range", 1000);
        assert_eq!(t.id(&"new"), 8);
        assert_eq!(t.id(&"old"), 7);
        assert_eq!(t.id(&"out-of-range"), 9);
    }

    #[test]
    fn stable_within_and_across_rounds() {
        let mut t = IdTable::new(16, 100);
        assert_eq!(t.id(&"a"), 16);
        assert_eq!(t.id(&"b"), 17);
        assert_eq!(t.id(&"a"), 16);
        t.finish_round();
        assert_eq!(t.id(&"b"), 17);
        assert_eq!(t.id(&"c"), 18);
        assert_eq!(t.id(&"a"), 16);
    }

    #[test]
    fn forgotten_keys_get_new_numbers() {
        let mut t = IdTable::new(1, 100);
        assert_eq!(t.id(&"a"), 1);
        assert_eq!(t.id(&"b"), 2);
        t.finish_round();
        // "a" not used in this round: forgotten.
        assert_eq!(t.id(&"b"), 2);
        t.finish_round();
        assert_eq!(t.id(&"a"), 3);
        assert_eq!(t.id(&"b"), 2);
    }

    #[test]
    fn wraps_around_skipping_live_numbers() {
        let mut t = IdTable::new(1, 3);
        assert_eq!(t.id(&"a"), 1);
        assert_eq!(t.id(&"b"), 2);
        assert_eq!(t.id(&"c"), 3);
        t.finish_round();
        assert_eq!(t.id(&"b"), 2);
        t.finish_round();
        // 1 and 3 are free again, 2 is live.
        assert_eq!(t.id(&"d"), 1);
        assert_eq!(t.id(&"e"), 3);
        assert_eq!(t.id(&"b"), 2);
    }
}

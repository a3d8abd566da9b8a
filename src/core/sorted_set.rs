//! A small ordered set kept as a sorted vector.
//!
//! Every connection belongs to a handful of sets — its rooms, its user's
//! connections, its membership's connections — that usually hold one or
//! two elements. A `BTreeSet` allocates a whole node (room for eleven) for
//! its first element; a sorted vector holds what it holds, iterates in the
//! same order, and frees its storage when it empties.

use std::borrow::Borrow;

/// An ordered set of `T`: iteration in ascending order, as `BTreeSet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SortedSet<T>(Vec<T>);

impl<T> Default for SortedSet<T> {
    fn default() -> Self {
        SortedSet(Vec::new())
    }
}

impl<T: Ord> SortedSet<T> {
    /// Adds `value`; `false` if it was there already.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        match self.0.binary_search(&value) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; `false` if it was not there.
    pub(crate) fn remove<Q>(&mut self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.0.binary_search_by(|x| x.borrow().cmp(value)) {
            Ok(at) => {
                self.0.remove(at);
                if self.0.is_empty() {
                    self.0 = Vec::new();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Whether `value` is in the set.
    pub(crate) fn contains<Q>(&self, value: &Q) -> bool
    where
        T: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|x| x.borrow().cmp(value)).is_ok()
    }

    /// Whether it is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Ord> FromIterator<T> for SortedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v: Vec<T> = iter.into_iter().collect();
        v.sort();
        v.dedup();
        SortedSet(v)
    }
}

impl<'a, T> IntoIterator for &'a SortedSet<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;
    use std::collections::BTreeSet;

    quickcheck! {
        /// The same answers and the same order as a `BTreeSet`, whatever
        /// sequence of inserts and removes.
        fn behaves_as_a_btree_set(ops: Vec<(bool, u8)>) -> bool {
            let mut ours = SortedSet::default();
            let mut model = BTreeSet::new();
            for (insert, v) in ops {
                let same = if insert {
                    ours.insert(v) == model.insert(v)
                } else {
                    ours.remove(&v) == model.remove(&v)
                };
                if !same
                    || ours.0.len() != model.len()
                    || !ours.0.iter().eq(model.iter())
                    || !(0..=255u8).all(|x| ours.contains(&x) == model.contains(&x))
                {
                    return false;
                }
            }
            let collected: SortedSet<u8> = model.iter().rev().copied().chain(model.iter().copied()).collect();
            collected.0.iter().eq(model.iter()) && (ours.is_empty() == model.is_empty())
        }
    }

    #[test]
    fn an_emptied_set_holds_no_storage() {
        let mut s = SortedSet::default();
        s.insert(1u64);
        assert!(s.remove(&1));
        assert_eq!(s.0.capacity(), 0);
    }
}

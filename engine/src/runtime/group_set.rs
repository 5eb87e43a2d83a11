//! Sets of group ids as vectors: what the shard keeps for its dirty and
//! awake groups. A `BTreeSet` allocates and frees nodes as it
//! fills and empties (every tick inserts each awake group into the dirty
//! set, every turn takes it), and at 64 groups its node splits were the
//! largest allocation site of the shard's loop; a vector keeps its
//! capacity. Iteration is in ascending order, as the `BTreeSet`'s was.

use crate::raft::GroupId;

/// Group ids, ascending, each at most once.
#[derive(Clone, Debug, Default)]
pub(super) struct GroupSet {
    ids: Vec<GroupId>,
}

impl GroupSet {
    /// Adds `id`; false if it was there. Appending in ascending order (what
    /// a tick over the awake groups does) is a push.
    pub(super) fn insert(&mut self, id: GroupId) -> bool {
        match self.ids.last() {
            None => {
                self.ids.push(id);
                true
            }
            Some(&last) if last < id => {
                self.ids.push(id);
                true
            }
            Some(_) => match self.ids.binary_search(&id) {
                Ok(_) => false,
                Err(at) => {
                    self.ids.insert(at, id);
                    true
                }
            },
        }
    }

    /// Removes `id`; false if it was not there.
    pub(super) fn remove(&mut self, id: &GroupId) -> bool {
        match self.ids.binary_search(id) {
            Ok(at) => {
                self.ids.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.ids.clear();
    }

    #[cfg(test)]
    pub(super) fn iter(&self) -> std::slice::Iter<'_, GroupId> {
        self.ids.iter()
    }
}

/// The groups a shard must look at (`Shard::dirty`): marked in any order,
/// as often as inputs arrive, and taken sorted and once each. A mark is a
/// push (a sorted vector's insertion would move the ids after it, which
/// for thousands of groups marked in random order is quadratic); the
/// repeats, at most one per mark since the last take, go at the take.
#[derive(Clone, Debug, Default)]
pub(super) struct DirtyGroups {
    ids: Vec<GroupId>,
}

impl DirtyGroups {
    /// Marks `id` (a repeat of the last mark is not pushed again).
    pub(super) fn insert(&mut self, id: GroupId) {
        if self.ids.last() != Some(&id) {
            self.ids.push(id);
        }
    }

    /// Unmarks `id`; false if it was not marked.
    pub(super) fn remove(&mut self, id: &GroupId) -> bool {
        let before = self.ids.len();
        self.ids.retain(|g| g != id);
        self.ids.len() != before
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub(super) fn clear(&mut self) {
        self.ids.clear();
    }

    /// Moves the marked groups into `into` (emptied first), ascending and
    /// each once, and leaves this set empty with `into`'s former room.
    pub(super) fn take_into(&mut self, into: &mut Vec<GroupId>) {
        into.clear();
        std::mem::swap(&mut self.ids, into);
        into.sort_unstable();
        into.dedup();
    }
}

impl FromIterator<GroupId> for DirtyGroups {
    fn from_iter<I: IntoIterator<Item = GroupId>>(iter: I) -> Self {
        DirtyGroups {
            ids: iter.into_iter().collect(),
        }
    }
}

impl FromIterator<GroupId> for GroupSet {
    fn from_iter<I: IntoIterator<Item = GroupId>>(iter: I) -> Self {
        let mut ids: Vec<GroupId> = iter.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        GroupSet { ids }
    }
}

impl<'a> IntoIterator for &'a GroupSet {
    type Item = &'a GroupId;
    type IntoIter = std::slice::Iter<'a, GroupId>;
    fn into_iter(self) -> Self::IntoIter {
        self.ids.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_group_set_holds_what_a_btree_set_holds_in_the_same_order() {
        let mut rng = crate::raft::SeededRng::new(7);
        let mut set = GroupSet::default();
        let mut model = BTreeSet::new();
        for step in 0..5_000u64 {
            let id = GroupId(rng.next_u64() % 40);
            match rng.next_u64() % 5 {
                0 | 1 => assert_eq!(set.insert(id), model.insert(id), "insert {id:?} at step {step}"),
                2 => assert_eq!(set.remove(&id), model.remove(&id), "remove {id:?} at step {step}"),
                3 => {
                    // Ascending runs, as a tick inserts the awake groups.
                    for id in (id.0..id.0 + 5).map(GroupId) {
                        assert_eq!(set.insert(id), model.insert(id));
                    }
                }
                _ => {
                    if rng.next_u64().is_multiple_of(10) {
                        set.clear();
                        model.clear();
                    }
                }
            }
            assert_eq!(
                set.iter().copied().collect::<Vec<_>>(),
                model.iter().copied().collect::<Vec<_>>()
            );
            assert_eq!(set.is_empty(), model.is_empty());
        }
        let collected: GroupSet = [3, 1, 2, 3, 1].into_iter().map(GroupId).collect();
        assert_eq!(collected.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn dirty_groups_are_taken_ascending_and_once_each() {
        let mut rng = crate::raft::SeededRng::new(11);
        let mut dirty = DirtyGroups::default();
        let mut model = BTreeSet::new();
        let mut taken = Vec::new();
        for step in 0..5_000u64 {
            let id = GroupId(rng.next_u64() % 40);
            match rng.next_u64() % 8 {
                0..=4 => {
                    dirty.insert(id);
                    model.insert(id);
                }
                5 => assert_eq!(dirty.remove(&id), model.remove(&id), "remove {id:?} at step {step}"),
                _ => {
                    dirty.take_into(&mut taken);
                    assert!(dirty.is_empty());
                    assert_eq!(taken, model.iter().copied().collect::<Vec<_>>(), "take at step {step}");
                    model.clear();
                }
            }
            assert_eq!(dirty.is_empty(), model.is_empty());
        }
        let collected: GroupSet = [3, 1, 2, 3, 1].into_iter().map(GroupId).collect();
        assert_eq!(collected.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}

//! A session's entries by channel (its subscriptions, those in flight, its subscription
//! streams): a short list while there are few — one or a few per connection is the usual
//! case — and a hash table past [`LIST_MAX`].
//!
//! Why not a hash table throughout: a table with one entry takes four buckets (256 bytes with
//! this entry size) and its control bytes on the heap, about 280 bytes, against 64 for a list
//! of one — most of what an idle connection with one subscription can give back. Lookups
//! happen per client command (publish, presence, unsubscribe, refresh…), never per delivery,
//! so a scan of up to [`LIST_MAX`] keys costs nothing that matters, and the table keeps many
//! subscriptions (`client.channel_limit` 0 allows any number) from making each command a long
//! scan.

use std::sync::Arc;

use ahash::AHashMap;

/// Entries kept as a list; one more turns it into a table.
const LIST_MAX: usize = 16;

/// See the module docs.
pub(super) enum SubMap<V> {
    List(Vec<(Arc<str>, V)>),
    /// Boxed: the map stays a pointer wide while it is a list.
    Table(Box<AHashMap<Arc<str>, V>>),
}

impl<V> Default for SubMap<V> {
    fn default() -> Self {
        SubMap::List(Vec::new())
    }
}

impl<V> SubMap<V> {
    pub fn get(&self, channel: &str) -> Option<&V> {
        match self {
            SubMap::List(l) => l.iter().find(|(k, _)| &**k == channel).map(|(_, v)| v),
            SubMap::Table(t) => t.get(channel),
        }
    }

    pub fn get_mut(&mut self, channel: &str) -> Option<&mut V> {
        match self {
            SubMap::List(l) => l.iter_mut().find(|(k, _)| &**k == channel).map(|(_, v)| v),
            SubMap::Table(t) => t.get_mut(channel),
        }
    }

    pub fn contains_key(&self, channel: &str) -> bool {
        self.get(channel).is_some()
    }

    /// Adds or replaces the channel's entry; the replaced value is returned.
    pub fn insert(&mut self, channel: Arc<str>, value: V) -> Option<V> {
        if let Some(v) = self.get_mut(&channel) {
            return Some(std::mem::replace(v, value));
        }
        match self {
            SubMap::List(l) if l.len() < LIST_MAX => {
                // Grow one entry at a time at first (a plain push reserves four).
                if l.len() == l.capacity() {
                    l.reserve_exact(l.len().max(1));
                }
                l.push((channel, value));
            }
            SubMap::List(l) => {
                let mut t: AHashMap<Arc<str>, V> = std::mem::take(l).into_iter().collect();
                t.insert(channel, value);
                *self = SubMap::Table(Box::new(t));
            }
            SubMap::Table(t) => {
                t.insert(channel, value);
            }
        }
        None
    }

    pub fn remove_entry(&mut self, channel: &str) -> Option<(Arc<str>, V)> {
        match self {
            SubMap::List(l) => {
                let i = l.iter().position(|(k, _)| &**k == channel)?;
                Some(l.swap_remove(i))
            }
            SubMap::Table(t) => t.remove_entry(channel),
        }
    }

    pub fn remove(&mut self, channel: &str) -> Option<V> {
        self.remove_entry(channel).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        match self {
            SubMap::List(l) => l.len(),
            SubMap::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &V)> {
        let (list, table) = match self {
            SubMap::List(l) => (Some(l.iter().map(|(k, v)| (k, v))), None),
            SubMap::Table(t) => (None, Some(t.iter())),
        };
        list.into_iter().flatten().chain(table.into_iter().flatten())
    }

    pub fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.iter().map(|(k, _)| k)
    }

    /// Takes the entries out.
    pub fn into_entries(self) -> impl Iterator<Item = (Arc<str>, V)> {
        let (list, table) = match self {
            SubMap::List(l) => (Some(l), None),
            SubMap::Table(t) => (None, Some(*t)),
        };
        list.into_iter().flatten().chain(table.into_iter().flatten())
    }

    /// Gives back what the entries no longer use (all of it once empty, a table included).
    pub fn shrink_to_fit(&mut self) {
        match self {
            _ if self.is_empty() => *self = SubMap::default(),
            SubMap::List(l) => l.shrink_to_fit(),
            SubMap::Table(t) => t.shrink_to_fit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(i: usize) -> Arc<str> {
        format!("ch{i}").into()
    }

    #[test]
    fn one_entry_takes_one_slot() {
        let mut m = SubMap::default();
        assert!(m.insert(ch(0), 1).is_none());
        let SubMap::List(l) = &m else { panic!("a list") };
        assert_eq!(l.capacity(), 1);
        assert_eq!(m.get("ch0"), Some(&1));
        assert_eq!(m.insert(ch(0), 2), Some(1), "a second insert replaces");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn list_and_table_answer_alike() {
        let mut m = SubMap::default();
        for i in 0..40 {
            assert!(m.insert(ch(i), i).is_none());
            assert_eq!(matches!(m, SubMap::Table(_)), i >= LIST_MAX, "after {} entries", i + 1);
            for j in 0..=i {
                assert_eq!(m.get(&format!("ch{j}")), Some(&j));
            }
            assert!(!m.contains_key(&format!("ch{}", i + 1)));
            assert_eq!(m.len(), i + 1);
            let mut keys: Vec<_> = m.keys().map(|k| k.to_string()).collect();
            keys.sort();
            let mut want: Vec<_> = (0..=i).map(|j| format!("ch{j}")).collect();
            want.sort();
            assert_eq!(keys, want);
        }
        *m.get_mut("ch3").unwrap() = 300;
        assert_eq!(m.get("ch3"), Some(&300));
        assert_eq!(m.remove_entry("ch3"), Some((ch(3), 300)));
        assert_eq!(m.remove("ch3"), None);
        for i in (0..40).filter(|&i| i != 3) {
            assert_eq!(m.remove(&format!("ch{i}")), Some(i));
        }
        assert!(m.is_empty());
        m.shrink_to_fit();
        assert!(matches!(&m, SubMap::List(l) if l.capacity() == 0), "an empty map holds nothing");
    }

    #[test]
    fn removing_from_a_list_keeps_the_others() {
        let mut m = SubMap::default();
        for i in 0..5 {
            m.insert(ch(i), i);
        }
        assert_eq!(m.remove("ch1"), Some(1));
        assert_eq!(m.remove("nope"), None);
        let mut left: Vec<_> = m.iter().map(|(_, v)| *v).collect();
        left.sort();
        assert_eq!(left, [0, 2, 3, 4]);
        m.shrink_to_fit();
        assert_eq!(m.len(), 4);
    }
}

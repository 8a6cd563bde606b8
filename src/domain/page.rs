//! Lists come in pages: at most `limit` items after a position in the list's order, and
//! whether more follow. A position is the sort key of the last item seen (keyset
//! pagination), so a page costs the same at the millionth row as at the first, and a
//! walk sees each item once even while others are added or deleted.

/// What a caller asks of a list: at most `limit` items after the item whose sort key is
/// `after` (from the start when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest<K> {
    pub limit: usize,
    pub after: Option<K>,
}

impl<K> PageRequest<K> {
    pub fn first(limit: usize) -> Self {
        Self { limit, after: None }
    }

    /// How many rows to read to know whether more follow.
    pub fn fetch(&self) -> usize {
        self.limit + 1
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// More items follow the last one.
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The page from `rows` read with `request.fetch()`: the extra row only says that
    /// more follow.
    pub fn from_rows<K>(mut rows: Vec<T>, request: &PageRequest<K>) -> Self {
        let has_more = rows.len() > request.limit;
        rows.truncate(request.limit);
        Self {
            items: rows,
            has_more,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            has_more: self.has_more,
        }
    }

    /// The sort key of the last item, when more follow: where the next page starts.
    pub fn next_after<K>(&self, key: impl FnOnce(&T) -> K) -> Option<K> {
        self.items.last().filter(|_| self.has_more).map(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_its_limit_and_says_whether_more_follow() {
        let request = PageRequest::<i64>::first(2);
        let page = Page::from_rows(vec![1, 2, 3], &request);
        assert_eq!(page.items, [1, 2]);
        assert!(page.has_more);
        assert_eq!(page.next_after(|n| *n), Some(2));
        let last = Page::from_rows(vec![1, 2], &request);
        assert!(!last.has_more);
        assert_eq!(last.next_after(|n| *n), None, "no cursor on the last page");
    }
}

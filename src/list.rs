//! The one intrusive doubly linked list of the core: a heap's page queues, a thread's
//! queues of segments with free pages, and its list of all its segments.
//!
//! A node type says where its links are for each kind of list it can be in
//! ([`Linked<K>`]); the list never allocates and never owns its nodes.

use core::marker::PhantomData;
use core::ptr;

/// The links of a node in one kind of list. Both are null while the node is in no list
/// of that kind (or is its only member).
pub(crate) struct Links<T> {
    pub next: *mut T,
    pub prev: *mut T,
}

impl<T> Links<T> {
    pub(crate) const fn new() -> Self {
        Links {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        }
    }
}

/// A node type that can be in lists of kind `K` (a marker type).
///
/// # Safety
/// `links(node)` returns a pointer to a `Links<Self>` field inside `*node`, the same field
/// for every call, and no other kind's `links` returns that field.
pub(crate) unsafe trait Linked<K>: Sized {
    /// The links of `node` for lists of kind `K`.
    ///
    /// # Safety
    /// `node` points to a live `Self`.
    unsafe fn links(node: *mut Self) -> *mut Links<Self>;
}

/// A doubly linked list of `T` through their `K` links.
///
/// Invariants: `first` and `last` are both null (empty) or both members; following `next`
/// from `first` reaches `last` and every member once; `prev` mirrors `next`.
pub(crate) struct List<T, K> {
    pub first: *mut T,
    pub last: *mut T,
    _kind: PhantomData<fn() -> K>,
}

impl<T, K> Clone for List<T, K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, K> Copy for List<T, K> {}

impl<T: Linked<K>, K> List<T, K> {
    pub(crate) const fn new() -> Self {
        List {
            first: ptr::null_mut(),
            last: ptr::null_mut(),
            _kind: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_null()
    }

    /// # Safety
    /// `node` is live and in no list of kind `K`.
    pub(crate) unsafe fn push_front(&mut self, node: *mut T) {
        // SAFETY: `node` is live (the `# Safety` contract), as `links` requires.
        let links = unsafe { T::links(node) };
        // SAFETY: `links` points to `node`'s `K` links, live, and not in any list, so no one
        // else reads or writes them; no reference to them is made.
        unsafe {
            (*links).prev = ptr::null_mut();
            (*links).next = self.first;
        }
        if self.first.is_null() {
            self.last = node;
        } else {
            // SAFETY: a non-null `first` is a member (the invariants), hence live; its links
            // are written through the pointer `links` returns, no reference is made.
            unsafe { (*T::links(self.first)).prev = node };
        }
        self.first = node;
    }

    /// # Safety
    /// `node` is live and in no list of kind `K`.
    pub(crate) unsafe fn push_back(&mut self, node: *mut T) {
        // SAFETY: `node` is live (the `# Safety` contract), as `links` requires.
        let links = unsafe { T::links(node) };
        // SAFETY: `links` points to `node`'s `K` links, live, and not in any list, so no one
        // else reads or writes them; no reference to them is made.
        unsafe {
            (*links).next = ptr::null_mut();
            (*links).prev = self.last;
        }
        if self.last.is_null() {
            self.first = node;
        } else {
            // SAFETY: a non-null `last` is a member (the invariants), hence live; its links
            // are written through the pointer `links` returns, no reference is made.
            unsafe { (*T::links(self.last)).next = node };
        }
        self.last = node;
    }

    /// # Safety
    /// `node` is a member of this list.
    pub(crate) unsafe fn remove(&mut self, node: *mut T) {
        // SAFETY: `node` is a member (the `# Safety` contract), hence live.
        let links = unsafe { T::links(node) };
        // SAFETY: `links` points to the live member's links, which only this list's owner
        // touches; no reference to them is made.
        let (prev, next) = unsafe { ((*links).prev, (*links).next) };
        if prev.is_null() {
            debug_assert!(self.first == node, "list: removing a non-member");
            self.first = next;
        } else {
            // SAFETY: `prev` is `node`'s neighbour, a member (the invariants), hence live.
            unsafe { (*T::links(prev)).next = next };
        }
        if next.is_null() {
            debug_assert!(self.last == node, "list: removing a non-member");
            self.last = prev;
        } else {
            // SAFETY: `next` is `node`'s neighbour, a member (the invariants), hence live.
            unsafe { (*T::links(next)).prev = prev };
        }
        // SAFETY: `node` is still live; its links are written through the pointer only.
        unsafe {
            (*links).next = ptr::null_mut();
            (*links).prev = ptr::null_mut();
        }
    }

    /// The member after `node` (null at the end).
    ///
    /// # Safety
    /// `node` is a member of this list.
    #[inline]
    pub(crate) unsafe fn next(node: *mut T) -> *mut T {
        // SAFETY: `node` is a member (the `# Safety` contract), hence live, as `links`
        // requires; its links are read through the pointer, no reference is made.
        unsafe { (*T::links(node)).next }
    }

    /// Calls `f` on every member from `first` on; `f` may remove (or move) the member it
    /// is given, but no other. (It takes the first member rather than `&self`, so that `f`
    /// may change the list.)
    ///
    /// # Safety
    /// `first` is null or a member of a well-formed list (see the invariants).
    pub(crate) unsafe fn walk(first: *mut T, mut f: impl FnMut(*mut T)) {
        let mut node = first;
        while !node.is_null() {
            // SAFETY: `node` is a member; its successor is read before `f` may unlink it.
            let next = unsafe { Self::next(node) };
            f(node);
            node = next;
        }
    }
}

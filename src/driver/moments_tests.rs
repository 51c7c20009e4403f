//! Unit tests of `moments.rs`.

use super::*;

/// a → b → c, a → d (d newer than b).
fn tree() -> MomentTree<u32> {
    let mut t = MomentTree::default();
    t.insert("a", None, 1);
    t.insert("b", Some("a"), 2);
    t.insert("c", Some("b"), 3);
    t.insert("d", Some("a"), 4);
    t
}

fn f(roots_or_descendants: bool, leaves: bool, no_leaves: bool) -> ListFilter {
    ListFilter {
        roots_or_descendants,
        leaves,
        no_leaves,
    }
}

#[test]
fn listing_follows_libvirts_walks() {
    let t = tree();
    assert_eq!(t.list(None, f(false, false, false)), ["a", "d", "b", "c"]);
    assert_eq!(t.list(None, f(true, false, false)), ["a"]);
    assert_eq!(t.list(None, f(false, true, false)), ["d", "c"]);
    assert_eq!(t.list(None, f(false, false, true)), ["a", "b"]);
    assert_eq!(t.list(Some("a"), f(false, false, false)), ["d", "b"]);
    assert_eq!(t.list(Some("a"), f(true, false, false)), ["d", "b", "c"]);
    assert_eq!(
        t.list(Some("c"), f(true, false, false)),
        Vec::<String>::new()
    );
}

#[test]
fn removing_a_middle_moment_reparents_its_children() {
    let mut t = tree();
    t.set_current(Some("b"));
    assert_eq!(t.remove("b"), Some(2));
    assert_eq!(t.parent("c"), Some("a"));
    assert_eq!(t.current(), None);
    assert_eq!(t.list(Some("a"), f(false, false, false)), ["c", "d"]);
}

#[test]
fn redefining_keeps_children_and_moves_the_moment() {
    let mut t = tree();
    t.insert("b", Some("d"), 20);
    assert_eq!(t.get("b"), Some(&20));
    assert_eq!(t.parent("b"), Some("d"));
    assert_eq!(t.children("b"), ["c"]);
    assert_eq!(t.children("a"), ["d"]);
}

#[test]
fn a_single_leaf_is_found_and_cycles_are_refused() {
    let mut t = MomentTree::default();
    t.insert("x", None, 0);
    t.insert("y", Some("x"), 0);
    assert_eq!(t.single_leaf().as_deref(), Some("y"));
    let detail =
        |r: Result<(), DriverError>| r.unwrap_err().detail().unwrap_or_default().to_string();
    assert_eq!(
        detail(t.check_cycles("x", Some("y"))),
        "parent y would create cycle to x"
    );
    assert_eq!(
        detail(t.check_cycles("x", Some("x"))),
        "cannot set moment x as its own parent"
    );
    assert_eq!(
        detail(t.check_cycles("z", Some("w"))),
        "parent w for moment z not found"
    );
    assert!(t.check_cycles("y", Some("x")).is_ok());
    assert_eq!(tree().single_leaf(), None);
}

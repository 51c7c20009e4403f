//! A small generic XML element tree: what the typed models are parsed from,
//! and how the parts they do not interpret are kept and written back.
//!
//! Flow: [`parse`] turns a string into an [`Element`] tree iteratively (a
//! hostile document cannot drive recursion, and [`Limits`] bound its size,
//! depth and node count before anything grows); the models read what they
//! need from it; [`Element::write`] formats a tree the way libvirt does
//! (2-space indentation, single-quoted attributes, `<x/>` when empty).
//! Writing recurses, which is fine only because parsing bounded the depth.

mod parse;
pub(crate) mod rng;
mod write;

pub(crate) use parse::detail_error;
pub use parse::{parse, Limits};
pub use write::escape_into;

/// One element: name, attributes in document order, children in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The qualified name as written (`disk`, `qemu:commandline`).
    pub name: String,
    /// Attributes in document order, values unescaped and normalised.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub children: Vec<Node>,
}

/// A child of an element. Comments and processing instructions are not
/// kept: libvirt drops them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (text and CDATA, references resolved).
    Text(String),
}

impl Element {
    /// An element with no attributes and no children.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: append an attribute.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.push((name.into(), value.into()));
        self
    }

    /// Builder: append a text child.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Builder: append a child element.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Set attribute `name`, replacing its value in place or appending it.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    /// Remove attribute `name` and return its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// The child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The child elements called `name`, mutable, in order.
    pub fn children_named_mut<'a>(
        &'a mut self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a mut Element> {
        self.children.iter_mut().filter_map(move |n| match n {
            Node::Element(e) if e.name == name => Some(e),
            _ => None,
        })
    }

    /// The child elements called `name`, in order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.name == name)
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.elements().find(|e| e.name == name)
    }

    /// All descendant text concatenated in document order: XPath's
    /// `string()` of this element, which is what libvirt reads for values
    /// such as `<name>`. Iterative, like everything that walks input trees.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut stack: Vec<std::slice::Iter<'_, Node>> = vec![self.children.iter()];
        while let Some(top) = stack.last_mut() {
            match top.next() {
                Some(Node::Text(t)) => out.push_str(t),
                Some(Node::Element(e)) => stack.push(e.children.iter()),
                None => {
                    stack.pop();
                }
            }
        }
        out
    }

    /// Like [`Element::text`], but `None` when empty: libvirt's
    /// `virXPathString` returns NULL for an empty string, so an empty
    /// `<name></name>` counts as missing.
    pub fn text_nonempty(&self) -> Option<String> {
        Some(self.text()).filter(|t| !t.is_empty())
    }

    /// Whether this element has any child element (rather than only text).
    pub(crate) fn has_element_children(&self) -> bool {
        self.children.iter().any(|n| matches!(n, Node::Element(_)))
    }
}

/// The XML name of `v` in a table of (name, value) pairs.
pub(crate) fn lookup_name<T: Copy + PartialEq>(table: &[(&'static str, T)], v: T) -> &'static str {
    table
        .iter()
        .find(|(_, x)| *x == v)
        .map_or("", |(name, _)| name)
}

/// The value named `s` in a table of (name, value) pairs.
pub(crate) fn lookup_value<T: Copy>(table: &[(&'static str, T)], s: &str) -> Option<T> {
    table.iter().find(|(name, _)| *name == s).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_concatenates_descendants() {
        let e = Element::new("name")
            .with_text("a")
            .with_child(Element::new("b").with_text("x"))
            .with_text("c");
        assert_eq!(e.text(), "axc");
        assert_eq!(Element::new("n").text_nonempty(), None);
    }

    #[test]
    fn attrs_keep_order_and_replace_in_place() {
        let mut e = Element::new("d").with_attr("a", "1").with_attr("b", "2");
        e.set_attr("a", "3");
        e.set_attr("c", "4");
        assert_eq!(
            e.attrs,
            vec![
                ("a".to_owned(), "3".to_owned()),
                ("b".to_owned(), "2".to_owned()),
                ("c".to_owned(), "4".to_owned())
            ]
        );
        assert_eq!(e.remove_attr("b").as_deref(), Some("2"));
        assert_eq!(e.attr("b"), None);
    }
}

//! Formatting an [`Element`] tree the way libvirt formats its XML.
//!
//! - two spaces of indentation per level, one element per line;
//! - attributes in single quotes;
//! - `<x/>` for an element with neither children nor text;
//! - `<x>text</x>` for an element with only text;
//! - whitespace-only text between child elements is layout, not content,
//!   and is replaced by our own indentation;
//! - mixed content (child elements next to real text) is written inline,
//!   untouched, because re-indenting it would change the text;
//! - escaping as libvirt's `virBufferEscapeString`: `& < > ' "` become
//!   entities, and control characters other than tab, LF and CR are dropped.

use super::{Element, Node};

impl Element {
    /// Append this element, indented by `indent` levels, with a final
    /// newline.
    pub fn write(&self, out: &mut String, indent: usize) {
        push_indent(out, indent);
        self.write_inner(out, indent, true);
        out.push('\n');
    }

    /// This element formatted on its own, without indentation.
    pub fn to_xml_string(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write_inner(&self, out: &mut String, indent: usize, pretty: bool) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("='");
            escape_into(out, v);
            out.push('\'');
        }

        let mixed = self.has_element_children()
            && self
                .children
                .iter()
                .any(|n| matches!(n, Node::Text(t) if !is_blank(t)));

        if !self.has_element_children() {
            let text: String = self
                .children
                .iter()
                .filter_map(|n| match n {
                    Node::Text(t) => Some(t.as_str()),
                    Node::Element(_) => None,
                })
                .collect();
            if text.is_empty() {
                out.push_str("/>");
            } else {
                out.push('>');
                escape_into(out, &text);
                self.close(out);
            }
            return;
        }

        out.push('>');
        if pretty && !mixed {
            out.push('\n');
            for child in self.elements() {
                push_indent(out, indent + 1);
                child.write_inner(out, indent + 1, true);
                out.push('\n');
            }
            push_indent(out, indent);
        } else {
            for child in &self.children {
                match child {
                    Node::Text(t) => escape_into(out, t),
                    Node::Element(e) => e.write_inner(out, indent, false),
                }
            }
        }
        self.close(out);
    }

    fn close(&self, out: &mut String) {
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

fn push_indent(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn is_blank(t: &str) -> bool {
    t.chars().all(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
}

/// Append `s` escaped for use in text or in a single- or double-quoted
/// attribute value, as libvirt does.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if u32::from(c) < 0x20 => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Limits};
    use super::*;

    fn roundtrip(s: &str) -> String {
        parse(s, "(t)", &Limits::default())
            .expect("parses")
            .to_xml_string()
    }

    #[test]
    fn formats_like_libvirt() {
        let input = "<clock offset=\"utc\">\n\t<timer name='rtc' tickpolicy=\"catchup\"></timer>\n  <timer name='pit'/></clock>";
        assert_eq!(
            roundtrip(input),
            "<clock offset='utc'>\n  <timer name='rtc' tickpolicy='catchup'/>\n  <timer name='pit'/>\n</clock>\n"
        );
    }

    #[test]
    fn escapes_all_five_and_drops_controls() {
        let e = Element::new("d")
            .with_attr("a", "x'y\"z")
            .with_text("a & <b> \"c\" 'd'\u{1}");
        assert_eq!(
            e.to_xml_string(),
            "<d a='x&apos;y&quot;z'>a &amp; &lt;b&gt; &quot;c&quot; &apos;d&apos;</d>\n"
        );
    }

    #[test]
    fn keeps_text_and_mixed_content() {
        assert_eq!(roundtrip("<d>  </d>"), "<d>  </d>\n");
        assert_eq!(roundtrip("<d>line1\nline2</d>"), "<d>line1\nline2</d>\n");
        assert_eq!(
            roundtrip("<p>a <b>bold</b> c</p>"),
            "<p>a <b>bold</b> c</p>\n"
        );
    }

    #[test]
    fn indents_nested_children() {
        let e = Element::new("a")
            .with_child(Element::new("b").with_child(Element::new("c").with_attr("x", "1")));
        let mut out = String::new();
        e.write(&mut out, 1);
        assert_eq!(out, "  <a>\n    <b>\n      <c x='1'/>\n    </b>\n  </a>\n");
    }
}

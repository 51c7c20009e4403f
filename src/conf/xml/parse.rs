//! Iterative parsing of a document into an [`Element`] tree, with limits.
//!
//! Errors come out as libvirt's VIR_ERR_XML_DETAIL, shaped like the ones
//! libvirt builds from libxml2's (util/virxml.c, catchXMLError):
//!
//! ```text
//! (domain_definition):11: AttValue: " or ' expected
//!     <disk type='file' device=
//! -----------------------------^
//! ```
//!
//! i.e. `DOC:LINE: MESSAGE`, the offending line, and a pointer line. The
//! message texts are quick-xml's or ours, not libxml2's, except where noted.
//!
//! Deliberate differences from libvirt: a DOCTYPE (and so any entity
//! declaration) is refused, where libxml2 would expand internal entities;
//! only the five predefined entities and character references are
//! resolved.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{Element, Node};
use crate::conf::error::{ConfError, ConfErrorDomain, ConfErrorKind};

/// Bounds on what a document may make us build. Checked while parsing, so a
/// hostile document fails before it costs more than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum input length in bytes.
    pub max_bytes: usize,
    /// Maximum element nesting depth (the root is depth 1).
    pub max_depth: usize,
    /// Maximum number of nodes (elements plus text runs).
    pub max_nodes: usize,
}

impl Default for Limits {
    /// 10 MiB, libxml2's default depth limit of 256, and 200 000 nodes
    /// (a domain with a thousand disks needs fewer than 10 000).
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            max_depth: 256,
            max_nodes: 200_000,
        }
    }
}

/// Parse `input` into its root element.
///
/// `doc_name` is the label libvirt puts in front of parser errors, e.g.
/// `(domain_definition)`.
pub fn parse(input: &str, doc_name: &str, limits: &Limits) -> Result<Element, ConfError> {
    let err = |pos: usize, msg: &str| detail_error(input.as_bytes(), doc_name, pos, msg);

    if input.len() > limits.max_bytes {
        return Err(err(
            0,
            &format!(
                "document of {} bytes exceeds the limit of {} bytes",
                input.len(),
                limits.max_bytes
            ),
        ));
    }
    if input.trim_matches(is_xml_space).is_empty() {
        // libxml2's words; its context line comes out as "(null)". Only a
        // document without a single byte is "empty": after white space it
        // expects a start tag, on the line where the space ends.
        let (line, what) = if input.is_empty() {
            (1, "Document is empty")
        } else {
            (
                1 + input.matches('\n').count(),
                "Start tag expected, '<' not found",
            )
        };
        return Err(ConfError::new(
            ConfErrorKind::XmlDetail,
            ConfErrorDomain::Domain,
            format!("{doc_name}:{line}: {what}\n(null)\n^"),
        ));
    }

    let mut reader = Reader::from_str(input);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.check_comments = true;
    config.expand_empty_elements = false;
    config.trim_text(false);

    // Open elements, innermost last. Its length is the current depth.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut nodes = 0usize;
    // Where each open element started, for libxml2's "line N".
    let mut opened_at: Vec<usize> = Vec::new();

    loop {
        let before = to_usize(reader.buffer_position());
        let event = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => return Err(err(to_usize(reader.error_position()), &e.to_string())),
        };
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(err(before, "Extra content at the end of the document"));
            }
            Event::Start(start) => {
                if stack.len() >= limits.max_depth {
                    // libxml2's words for the same limit.
                    let msg = format!(
                        "Excessive depth in document: {} use XML_PARSE_HUGE option",
                        limits.max_depth
                    );
                    return Err(err(before, &msg));
                }
                count_node(&mut nodes, limits).map_err(|m| err(before, &m))?;
                stack.push(start_element(&start).map_err(|m| err(before, &m))?);
                opened_at.push(before);
            }
            Event::Empty(start) => {
                count_node(&mut nodes, limits).map_err(|m| err(before, &m))?;
                let el = start_element(&start).map_err(|m| err(before, &m))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the name matches.
                let Some(el) = stack.pop() else {
                    return Err(err(before, "unexpected end tag"));
                };
                opened_at.pop();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let after = to_usize(reader.buffer_position());
                push_text(&mut stack, &t.xml10_content(), &mut nodes, limits)
                    .map_err(|m| err(bad_char_pos(input, before, after), &m))?;
            }
            Event::CData(t) => {
                let after = to_usize(reader.buffer_position());
                push_text(&mut stack, &t.xml10_content(), &mut nodes, limits)
                    .map_err(|m| err(bad_char_pos(input, before, after), &m))?;
            }
            Event::GeneralRef(r) => {
                let c = resolve_reference(&r).map_err(|m| err(before, &m))?;
                push_text(&mut stack, c.encode_utf8(&mut [0u8; 4]), &mut nodes, limits)
                    .map_err(|m| err(before, &m))?;
            }
            Event::DocType(_) => {
                return Err(err(
                    before,
                    "DOCTYPE is not allowed (no DTDs or entity declarations)",
                ));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }

    if let Some(open) = stack.last() {
        let at = opened_at.last().copied().unwrap_or(0).min(input.len());
        let line = 1 + input.as_bytes()[..at]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        let msg = format!("Premature end of data in tag {} line {line}", open.name);
        return Err(err(input.len(), &msg));
    }
    root.ok_or_else(|| err(input.len(), "Start tag expected, '<' not found"))
}

/// Make an element from a start tag, checking and unescaping attributes.
fn start_element(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = start.name().as_ref().to_owned();
    let mut el = Element::new(name);
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?;
        if let Some(bad) = value.chars().find(|c| !is_xml_char(*c)) {
            return Err(format!(
                "invalid character value {:#x} in attribute '{key}'",
                u32::from(bad)
            ));
        }
        el.attrs.push((key, value.into_owned()));
    }
    Ok(el)
}

/// Append text to the innermost open element, merging adjacent runs (a
/// reference splits text into several events). Text outside the root may
/// only be whitespace. The error is the message to report.
fn push_text(
    stack: &mut [Element],
    text: &str,
    nodes: &mut usize,
    limits: &Limits,
) -> Result<(), String> {
    if let Some(bad) = text.chars().find(|c| !is_xml_char(*c)) {
        // libxml2's words.
        return Err(format!("PCDATA invalid Char value {}", u32::from(bad)));
    }
    let Some(parent) = stack.last_mut() else {
        if text.chars().all(is_xml_space) {
            return Ok(());
        }
        return Err("Extra content at the end of the document".to_owned());
    };
    if let Some(Node::Text(prev)) = parent.children.last_mut() {
        prev.push_str(text);
        return Ok(());
    }
    if text.is_empty() {
        return Ok(());
    }
    *nodes += 1;
    if *nodes > limits.max_nodes {
        return Err(format!("document has more than {} nodes", limits.max_nodes));
    }
    parent.children.push(Node::Text(text.to_owned()));
    Ok(())
}

fn count_node(nodes: &mut usize, limits: &Limits) -> Result<(), String> {
    *nodes += 1;
    if *nodes > limits.max_nodes {
        return Err(format!("document has more than {} nodes", limits.max_nodes));
    }
    Ok(())
}

/// Resolve `&name;`: the five predefined entities and character
/// references. Anything else would need a DTD, which we refuse.
fn resolve_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, String> {
    if r.is_char_ref() {
        let c = r
            .resolve_char_ref()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("invalid character reference &{};", &**r))?;
        if !is_xml_char(c) {
            // libxml2's words.
            return Err(format!(
                "xmlParseCharRef: invalid xmlChar value {}",
                u32::from(c)
            ));
        }
        return Ok(c);
    }
    match &**r {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        // libxml2's words.
        other => Err(format!("Entity '{other}' not defined")),
    }
}

/// Where to point for an error in the text between `start` and `end`: at
/// the first character that is not allowed, as libxml2 does, else at the
/// start of the text.
fn bad_char_pos(input: &str, start: usize, end: usize) -> usize {
    input
        .get(start..end.min(input.len()))
        .and_then(|span| span.char_indices().find(|(_, c)| !is_xml_char(*c)))
        .map_or(start, |(i, _)| start + i)
}

/// XML 1.0 `Char`: what may appear in a document at all.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn to_usize(pos: u64) -> usize {
    usize::try_from(pos).unwrap_or(usize::MAX)
}

/// Build libvirt's parser error: `DOC:LINE: MSG`, then the line holding
/// byte `pos`, then a pointer to the column (tabs kept so it lines up).
pub(crate) fn detail_error(bytes: &[u8], doc_name: &str, pos: usize, msg: &str) -> ConfError {
    let pos = pos.min(bytes.len());
    let line = 1 + bytes[..pos].iter().filter(|&&b| b == b'\n').count();
    if pos == bytes.len() && bytes.last() == Some(&b'\n') {
        // Past the last line end libxml2 has no context line to show.
        return ConfError::new(
            ConfErrorKind::XmlDetail,
            ConfErrorDomain::Domain,
            format!("{doc_name}:{line}: {msg}\n(null)\n^"),
        );
    }

    // Like libvirt: step back over line ends, then to the start of the line.
    let mut cur = pos;
    while cur > 0 && cur < bytes.len() && matches!(bytes[cur], b'\n' | b'\r') {
        cur -= 1;
    }
    if cur == bytes.len() && cur > 0 {
        cur -= 1;
    }
    while cur > 0 && !matches!(bytes[cur], b'\n' | b'\r') {
        cur -= 1;
    }
    if matches!(bytes.get(cur), Some(b'\n' | b'\r')) {
        cur += 1;
    }
    let start = cur.min(bytes.len());
    let end = bytes[start..]
        .iter()
        .position(|&b| matches!(b, b'\n' | b'\r'))
        .map_or(bytes.len(), |n| start + n);
    let context = String::from_utf8_lossy(&bytes[start..end]);
    let col = pos.saturating_sub(start);
    let pointer: String = context
        .bytes()
        .take(col)
        .map(|b| if b == b'\t' { '\t' } else { '-' })
        .chain(std::iter::once('^'))
        .collect();

    ConfError::new(
        ConfErrorKind::XmlDetail,
        ConfErrorDomain::Domain,
        format!("{doc_name}:{line}: {msg}\n{context}\n{pointer}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "(domain_definition)";

    fn p(s: &str) -> Result<Element, ConfError> {
        parse(s, DOC, &Limits::default())
    }

    fn detail(r: Result<Element, ConfError>) -> String {
        let e = r.expect_err("should fail");
        assert_eq!(e.kind(), ConfErrorKind::XmlDetail);
        e.detail().unwrap_or_default().to_owned()
    }

    #[test]
    fn builds_tree_with_text_references_and_cdata() {
        let e = p("<?xml version='1.0'?>\n<!-- c --><a x=\"1&amp;2\" y='&#x41;'>t&lt;<b/><![CDATA[<c>]]></a>\n")
            .expect("parses");
        assert_eq!(e.name, "a");
        assert_eq!(e.attr("x"), Some("1&2"));
        assert_eq!(e.attr("y"), Some("A"));
        assert_eq!(
            e.children,
            vec![
                Node::Text("t<".into()),
                Node::Element(Element::new("b")),
                Node::Text("<c>".into())
            ]
        );
    }

    #[test]
    fn attribute_values_are_normalised() {
        let e = p("<a v='x\ny\tz'/>").expect("parses");
        assert_eq!(e.attr("v"), Some("x y z"));
    }

    #[test]
    fn empty_document_reads_like_libxml2() {
        assert_eq!(
            detail(p("")),
            "(domain_definition):1: Document is empty\n(null)\n^"
        );
        assert_eq!(
            detail(p("  \n ")),
            "(domain_definition):2: Start tag expected, '<' not found\n(null)\n^"
        );
    }

    #[test]
    fn syntax_error_points_at_line() {
        let d = detail(p("<domain>\n  <disk type='file' device=\n"));
        let mut lines = d.lines();
        assert!(lines
            .next()
            .unwrap_or_default()
            .starts_with("(domain_definition):2: "));
        assert_eq!(lines.next(), Some("  <disk type='file' device="));
        assert!(lines.next().unwrap_or_default().ends_with('^'));
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let d = detail(p(
            "<!DOCTYPE domain [<!ENTITY x \"vm\">]>\n<domain><name>&x;</name></domain>",
        ));
        assert!(d.contains("DOCTYPE is not allowed"), "{d}");
        let d = detail(p("<domain><name>&x;</name></domain>"));
        assert!(d.contains("Entity 'x' not defined"), "{d}");
    }

    #[test]
    fn refuses_control_characters() {
        let d = detail(p("<domain><name>ctl\u{1}x</name></domain>"));
        assert!(d.contains("PCDATA invalid Char value 1"), "{d}");
        assert!(p("<a v='\u{1}'/>").is_err());
        assert!(p("<a>&#1;</a>").is_err());
        assert!(p("<a>&#0;</a>").is_err());
    }

    #[test]
    fn refuses_structural_errors() {
        assert!(p("<a><b></a>").is_err());
        assert!(p("<a>").is_err());
        assert!(p("<a/><b/>").is_err());
        assert!(p("<a/>text").is_err());
        assert!(p("text").is_err());
        assert!(p("<a x='1' x='2'/>").is_err());
        assert!(p("<a x=1/>").is_err());
        assert!(p("<a>&</a>").is_err());
    }

    #[test]
    fn depth_limit_holds_without_recursion() {
        let depth = 3_000_000;
        let mut s = String::with_capacity(depth * 7);
        for _ in 0..depth {
            s.push_str("<a>");
        }
        let d = detail(p(&s));
        assert!(
            d.contains("Excessive depth in document: 256"),
            "{}",
            &d[..80]
        );

        let ok = "<a>".repeat(256) + &"</a>".repeat(256);
        assert!(p(&ok).is_ok());
        let deep = "<a>".repeat(257) + &"</a>".repeat(257);
        assert!(p(&deep).is_err());
    }

    #[test]
    fn size_and_node_limits_hold() {
        let limits = Limits {
            max_bytes: 100,
            ..Limits::default()
        };
        assert!(parse(&"<a/>".repeat(10), DOC, &limits).is_err());
        let limits = Limits {
            max_nodes: 10,
            ..Limits::default()
        };
        let many = format!("<a>{}</a>", "<b/>".repeat(10));
        assert!(parse(&many, DOC, &limits).is_err());
        let fits = format!("<a>{}</a>", "<b/>".repeat(9));
        assert!(parse(&fits, DOC, &limits).is_ok());
    }
}

//! A small SVG writer: elements with attributes, escaped text, and groups that carry a
//! `class` and `data-*` names so a chart can be read back by structure (tests do).

use std::fmt::Write as _;

/// An SVG document being written, element by element.
pub struct Svg {
    out: String,
    open_groups: usize,
}

/// Attributes as (name, value); values are escaped on output.
pub type Attrs<'a> = &'a [(&'a str, &'a str)];

impl Svg {
    pub fn new(width: u32, height: u32) -> Svg {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
        );
        Svg {
            out,
            open_groups: 0,
        }
    }

    /// `<name attrs/>`.
    pub fn element(&mut self, name: &str, attrs: Attrs) {
        self.out.push('<');
        self.out.push_str(name);
        self.attrs(attrs);
        self.out.push_str("/>\n");
    }

    /// `<text attrs>content</text>`.
    pub fn text(&mut self, attrs: Attrs, content: &str) {
        self.out.push_str("<text");
        self.attrs(attrs);
        self.out.push('>');
        self.out.push_str(&escape(content));
        self.out.push_str("</text>\n");
    }

    /// A shape with a tooltip: `<name attrs><title>tip</title></name>`.
    pub fn element_with_title(&mut self, name: &str, attrs: Attrs, title: &str) {
        self.out.push('<');
        self.out.push_str(name);
        self.attrs(attrs);
        let _ = writeln!(self.out, "><title>{}</title></{name}>", escape(title));
    }

    /// `<g attrs>`; close with [`Svg::close_group`].
    pub fn open_group(&mut self, attrs: Attrs) {
        self.out.push_str("<g");
        self.attrs(attrs);
        self.out.push_str(">\n");
        self.open_groups += 1;
    }

    pub fn close_group(&mut self) {
        debug_assert!(self.open_groups > 0, "closing a group that is not open");
        self.open_groups = self.open_groups.saturating_sub(1);
        self.out.push_str("</g>\n");
    }

    /// The document, with any group left open closed.
    pub fn finish(mut self) -> String {
        while self.open_groups > 0 {
            self.close_group();
        }
        self.out.push_str("</svg>\n");
        self.out
    }

    fn attrs(&mut self, attrs: Attrs) {
        for (name, value) in attrs {
            let _ = write!(self.out, r#" {name}="{}""#, escape(value));
        }
    }
}

/// A coordinate with one decimal: enough for a screen, short in the file.
pub fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// `x1,y1 x2,y2 ...` for a polyline or polygon.
pub fn points(xy: &[(f64, f64)]) -> String {
    xy.iter()
        .map(|(x, y)| format!("{},{}", px(*x), px(*y)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped_and_groups_closed() {
        let mut svg = Svg::new(10, 10);
        svg.open_group(&[("data-config", "a \"b\" <c>")]);
        svg.text(&[("x", "1")], "p99 <= 50 ms & no loss");
        let doc = svg.finish();
        assert!(
            doc.contains(r#"data-config="a &quot;b&quot; &lt;c&gt;""#),
            "{doc}"
        );
        assert!(doc.contains("p99 &lt;= 50 ms &amp; no loss"), "{doc}");
        assert!(doc.ends_with("</g>\n</svg>\n"), "{doc}");
    }
}

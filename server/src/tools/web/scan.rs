//! A linear, non-recursive look at untrusted HTML before it is parsed.
//!
//! The parsers behind [`super::extract::html_to_text`] (html5ever through
//! dom_smoothie and htmd) recurse once per level of nesting, and html5ever's
//! scope checks walk the whole stack of open elements for every tag. Bytes
//! alone bound neither: a 25 KB page of 5,000 nested `<div>`s overflows a
//! blocking thread's stack, which aborts the process (a stack overflow is not
//! a panic anything can catch), and 100,000 of them (500 KB) keep a thread
//! busy for many minutes, past any deadline, since a blocking task cannot be
//! cancelled. So [`within_bounds`] first estimates, in one pass over the
//! tags, how deep the parsed tree can get and how many elements it can have;
//! a page over [`MAX_NESTING_DEPTH`], [`MAX_ELEMENTS`] or [`MAX_DEPTH_SUM`] is
//! never parsed, and [`plain_text`] (tags stripped, in one loop) stands in.
//!
//! The estimate follows the HTML tree builder where a page could make it
//! *under*-estimate: end tags the builder ignores (a stray `</span>` behind a
//! `<div>`) close nothing here either, formatting elements it re-opens
//! ("reconstructs") after an implicit close are counted again, `/>` closes an
//! element only in SVG or MathML, and comments and raw text end where the
//! tokenizer ends them. Where it is unsure it errs high (every start tag may
//! reconstruct; scripting-dependent raw text is read as markup): a strange
//! page loses the readable-article extraction, never the server.

/// Deepest element nesting handed to the parsers. Real pages stay well
/// under 100 levels. Measured on a debug build's 2 MiB thread stack (tokio's
/// blocking threads), the conversion overflowed at under 1,000 nested `div`s
/// and at about 170 nested tables (some 650 levels with the `tbody` and `tr`
/// the tree builder adds, which the estimate partly misses); 128 leaves a
/// margin of about four there, more in a release build.
pub(crate) const MAX_NESTING_DEPTH: usize = 128;
/// Most elements (start tags, and formatting elements re-opened) handed to
/// the parsers. Readability has the same bound on what it scores.
pub(crate) const MAX_ELEMENTS: usize = 100_000;
/// Most nesting summed over the elements (each counted at its depth): the
/// conversion's time grows with it (readability works up each element's
/// ancestors), not with the elements alone. A debug build took about 6 s
/// for 1.25 million (10,000 elements 125 deep on average), so this keeps the
/// worst page within web_fetch's 30 s deadline in a debug build and far
/// within it in a release one; a typical page sums to under 100,000.
pub(crate) const MAX_DEPTH_SUM: usize = 2_000_000;

/// Elements with no content and no end tag.
const VOID: [&str; 16] = [
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta",
    "param", "source", "track",
];
/// Elements whose content, in HTML, is text whatever it looks like (the
/// tokenizer's RAWTEXT, RCDATA and PLAINTEXT states). Those whose state
/// depends on scripting (`noscript`) or that browsers treat differently
/// (`iframe`, `noembed`, `noframes`) are read as markup: erring high.
const RAW_TEXT: [&str; 6] = ["script", "style", "textarea", "title", "xmp", "plaintext"];
/// The formatting elements, which the tree builder re-opens after an
/// implicit close.
const FORMATTING: [&str; 14] =
    ["a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u"];
/// The "special" elements: an end tag of an ordinary element stops at them.
const SPECIAL: [&str; 80] = [
    "address",
    "applet",
    "area",
    "article",
    "aside",
    "base",
    "basefont",
    "bgsound",
    "blockquote",
    "body",
    "br",
    "button",
    "caption",
    "center",
    "col",
    "colgroup",
    "dd",
    "details",
    "dir",
    "div",
    "dl",
    "dt",
    "embed",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "frame",
    "frameset",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "header",
    "hgroup",
    "hr",
    "html",
    "iframe",
    "img",
    "input",
    "keygen",
    "li",
    "link",
    "listing",
    "main",
    "marquee",
    "menu",
    "meta",
    "nav",
    "noembed",
    "noframes",
    "noscript",
    "object",
    "ol",
    "p",
    "param",
    "plaintext",
    "pre",
    "script",
    "search",
    "section",
    "select",
    "source",
    "style",
    "summary",
    "table",
    "tbody",
    "td",
    "template",
    "textarea",
    "tfoot",
    "th",
    "thead",
    "title",
    "tr",
    "track",
];
/// Elements an end tag of a special element does not close past.
const SCOPE_BOUNDARIES: [&str; 9] = ["applet", "caption", "html", "table", "td", "th", "marquee", "object", "template"];
/// Start tags that close an open `p`.
/// (`table` only in standards mode: left out, erring high.)
const CLOSES_P: [&str; 34] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "center",
    "details",
    "dialog",
    "dir",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "header",
    "hgroup",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "search",
    "section",
    "summary",
    "ul",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "listing",
    "form",
];
/// Start tags that end SVG or MathML content (back to HTML; `font` only
/// with some attributes: always here, erring high).
const FOREIGN_BREAKOUT: [&str; 45] = [
    "b",
    "font",
    "big",
    "blockquote",
    "body",
    "br",
    "center",
    "code",
    "dd",
    "div",
    "dl",
    "dt",
    "em",
    "embed",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "head",
    "hr",
    "i",
    "img",
    "li",
    "listing",
    "menu",
    "meta",
    "nobr",
    "ol",
    "p",
    "pre",
    "ruby",
    "s",
    "small",
    "span",
    "strong",
    "strike",
    "sub",
    "sup",
    "table",
    "tt",
    "u",
    "ul",
    "var",
];
/// Elements inside SVG or MathML whose content is HTML again.
const INTEGRATION_POINTS: [&str; 9] =
    ["foreignobject", "desc", "title", "mi", "mo", "mn", "ms", "mtext", "annotation-xml"];

/// One piece of an HTML document, as the tokenizer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'a> {
    Start { name: String, self_closing: bool },
    End { name: String },
    Text(&'a str),
}

/// A forward-only reader of tokens; every step moves on, so one pass over
/// the document is linear in its length.
struct Tokenizer<'a> {
    html: &'a str,
    pos: usize,
    /// The end tag that ends the raw text just entered, if any.
    raw_text_end: Option<String>,
}

impl<'a> Tokenizer<'a> {
    fn new(html: &'a str) -> Self {
        Self { html, pos: 0, raw_text_end: None }
    }

    /// Reads the content of the raw-text element `name` next (called after
    /// its start tag, when the content is to be skipped as text).
    fn enter_raw_text(&mut self, name: &str) {
        self.raw_text_end = Some(format!("</{name}"));
    }

    fn next_token(&mut self) -> Option<Token<'a>> {
        let bytes = self.html.as_bytes();
        if let Some(end) = self.raw_text_end.take() {
            let start = self.pos;
            let found = if end == "</plaintext" { None } else { find_ascii_ci(bytes, start, end.as_bytes()) };
            self.pos = found.unwrap_or(bytes.len());
            if self.pos > start {
                return Some(Token::Text(&self.html[start..self.pos]));
            }
        }
        loop {
            if self.pos >= bytes.len() {
                return None;
            }
            let start = self.pos;
            if bytes[start] != b'<' {
                let end = bytes[start..].iter().position(|byte| *byte == b'<').map_or(bytes.len(), |at| start + at);
                self.pos = end;
                return Some(Token::Text(&self.html[start..end]));
            }
            let next = bytes.get(start + 1).copied();
            match next {
                Some(b'!') => {
                    self.pos = skip_markup_declaration(bytes, start);
                }
                Some(b'?') => {
                    self.pos = skip_past(bytes, start, b">");
                }
                Some(b'/') => match bytes.get(start + 2) {
                    Some(byte) if byte.is_ascii_alphabetic() => {
                        let (name, _, end) = read_tag(bytes, start + 2);
                        self.pos = end;
                        return Some(Token::End { name });
                    }
                    Some(b'>') => self.pos = start + 3,
                    Some(_) | None => self.pos = skip_past(bytes, start, b">"),
                },
                Some(byte) if byte.is_ascii_alphabetic() => {
                    let (name, self_closing, end) = read_tag(bytes, start + 1);
                    self.pos = end;
                    return Some(Token::Start { name, self_closing });
                }
                Some(_) | None => {
                    // A `<` that starts no tag is text.
                    let end = bytes[start + 1..]
                        .iter()
                        .position(|byte| *byte == b'<')
                        .map_or(bytes.len(), |at| start + 1 + at);
                    self.pos = end;
                    return Some(Token::Text(&self.html[start..end]));
                }
            }
        }
    }
}

/// The index just past the first `needle` at or after `from`, or the end.
fn skip_past(bytes: &[u8], from: usize, needle: &[u8]) -> usize {
    bytes[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map_or(bytes.len(), |at| from + at + needle.len())
}

/// Where `needle` (lowercase ASCII) first starts at or after `from`, ignoring
/// ASCII case.
fn find_ascii_ci(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes[from..].windows(needle.len()).position(|window| window.eq_ignore_ascii_case(needle)).map(|at| from + at)
}

/// Past a `<!...>`: a comment ends at the first `-->` or `--!>` (`<!-->` and
/// `<!--->` are empty ones), anything else at the first `>` (a CDATA section
/// in SVG ends later, at `]]>`: stopping early only reads more as markup).
fn skip_markup_declaration(bytes: &[u8], start: usize) -> usize {
    if !bytes[start..].starts_with(b"<!--") {
        return skip_past(bytes, start, b">");
    }
    let body = start + 4;
    if bytes[body..].starts_with(b">") {
        return body + 1;
    }
    if bytes[body..].starts_with(b"->") {
        return body + 2;
    }
    let mut at = body;
    while at < bytes.len() {
        if bytes[at..].starts_with(b"-->") {
            return at + 3;
        }
        if bytes[at..].starts_with(b"--!>") {
            return at + 4;
        }
        at += 1;
    }
    bytes.len()
}

/// The states of a tag's attributes that matter for where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrState {
    /// Between attributes, or in a name (a quote there is part of the name).
    Names,
    /// After `=`, before the value.
    BeforeValue,
    DoubleQuoted,
    SingleQuoted,
    Unquoted,
}

/// Reads a tag from its name (at `from`): its lowercased name, whether it
/// ends in `/>`, and the index past it. Quotes count only as an attribute's
/// value (after `=`), as the tokenizer reads them.
fn read_tag(bytes: &[u8], from: usize) -> (String, bool, usize) {
    let name_end = bytes[from..]
        .iter()
        .position(|byte| byte.is_ascii_whitespace() || matches!(byte, b'/' | b'>'))
        .map_or(bytes.len(), |at| from + at);
    let name = String::from_utf8_lossy(&bytes[from..name_end]).to_ascii_lowercase();
    let mut state = AttrState::Names;
    let mut after_slash = false;
    // Whether an attribute's name has begun: only then does `=` start its
    // value (before it, `=` begins a name, and a quote after it is no quote).
    let mut in_attribute = false;
    let mut at = name_end;
    while at < bytes.len() {
        let byte = bytes[at];
        at += 1;
        match state {
            AttrState::Names => match byte {
                b'>' => return (name, after_slash, at),
                b'=' if in_attribute => state = AttrState::BeforeValue,
                b'/' => {
                    after_slash = true;
                    in_attribute = false;
                    continue;
                }
                byte if byte.is_ascii_whitespace() => {}
                _ => in_attribute = true,
            },
            AttrState::BeforeValue => match byte {
                b'>' => return (name, false, at),
                b'"' => state = AttrState::DoubleQuoted,
                b'\'' => state = AttrState::SingleQuoted,
                byte if byte.is_ascii_whitespace() => {}
                _ => state = AttrState::Unquoted,
            },
            AttrState::DoubleQuoted => {
                if byte == b'"' {
                    state = AttrState::Names;
                    in_attribute = false;
                }
            }
            AttrState::SingleQuoted => {
                if byte == b'\'' {
                    state = AttrState::Names;
                    in_attribute = false;
                }
            }
            AttrState::Unquoted => match byte {
                b'>' => return (name, false, at),
                byte if byte.is_ascii_whitespace() => {
                    state = AttrState::Names;
                    in_attribute = false;
                }
                _ => {}
            },
        }
        after_slash = false;
    }
    (name, false, bytes.len())
}

/// An open element of the estimate.
struct Open {
    name: String,
    /// For a cell and the like (`MARKERS`): how many formatting elements
    /// were closed implicitly when it opened. Those closed inside it are
    /// forgotten when it closes, as the tree builder clears its list of
    /// formatting elements back to the cell's marker.
    closed_mark: Option<usize>,
}

/// Elements that put a marker in the tree builder's list of formatting
/// elements: what is closed inside them is not re-opened outside.
const MARKERS: [&str; 7] = ["applet", "caption", "marquee", "object", "td", "template", "th"];

/// The estimate of the tree the builder would make: its open elements and
/// the formatting elements it would re-open.
#[derive(Default)]
struct Estimate {
    open: Vec<Open>,
    /// Formatting elements closed implicitly, which the builder re-opens at
    /// the next content.
    closed_formatting: Vec<String>,
    elements: usize,
    /// The depth of every element pushed, summed.
    depth_sum: usize,
}

impl Estimate {
    fn is_over(&self) -> bool {
        self.open.len() > MAX_NESTING_DEPTH || self.elements > MAX_ELEMENTS || self.depth_sum > MAX_DEPTH_SUM
    }

    /// Whether the innermost of SVG, MathML and their HTML integration
    /// points is SVG or MathML: there `/>` closes an element.
    fn in_foreign_content(&self) -> bool {
        self.open
            .iter()
            .rev()
            .find(|open| is_foreign_root(&open.name) || INTEGRATION_POINTS.contains(&open.name.as_str()))
            .is_some_and(|open| is_foreign_root(&open.name))
    }

    /// Whether any SVG or MathML is open (raw text is then read as markup:
    /// inside them `title`, `style` and `script` are not raw text).
    fn any_foreign_open(&self) -> bool {
        self.open.iter().any(|open| is_foreign_root(&open.name))
    }

    fn push(&mut self, name: &str) {
        let closed_mark = MARKERS.contains(&name).then_some(self.closed_formatting.len());
        self.open.push(Open { name: name.to_owned(), closed_mark });
        self.depth_sum += self.open.len();
    }

    /// Pops the open elements from index `at` on. The formatting elements
    /// among them (but `at` when `closing_at`: closed by its own end tag)
    /// are re-opened later, unless a marker among them forgets them.
    fn pop_to(&mut self, at: usize, closing_at: bool) {
        let popped: Vec<Open> = self.open.drain(at..).collect();
        let outermost_marker = popped.iter().position(|open| open.closed_mark.is_some());
        if let Some(marker) = outermost_marker.and_then(|idx| popped[idx].closed_mark) {
            self.closed_formatting.truncate(marker);
        }
        let kept = outermost_marker.unwrap_or(popped.len());
        for (idx, open) in popped.into_iter().enumerate().take(kept) {
            if FORMATTING.contains(&open.name.as_str()) && !(closing_at && idx == 0) {
                self.closed_formatting.push(open.name);
            }
        }
    }

    /// The tree builder re-opens the formatting elements it closed
    /// implicitly (counted at every start tag and text: erring high).
    fn reopen_formatting(&mut self) {
        if self.closed_formatting.is_empty() {
            return;
        }
        self.elements += self.closed_formatting.len();
        let reopened: Vec<String> = self.closed_formatting.drain(..).collect();
        // All that is closed from now on was opened after the open markers.
        for open in &mut self.open {
            if let Some(mark) = &mut open.closed_mark {
                *mark = 0;
            }
        }
        for name in reopened {
            self.push(&name);
        }
    }

    /// The index of the innermost open element `matches` accepts, looking no
    /// further than an element `stop` says to stop at.
    fn find_open(&self, matches: impl Fn(&str) -> bool, stop: impl Fn(&str) -> bool) -> Option<usize> {
        for (idx, open) in self.open.iter().enumerate().rev() {
            if matches(&open.name) {
                return Some(idx);
            }
            if stop(&open.name) {
                return None;
            }
        }
        None
    }

    /// Closes the formatting element at `at` (its end tag, or a new `a` or
    /// `nobr`): popped when nothing special is open inside it; otherwise the
    /// tree builder moves it (its "adoption agency") and keeps the depth, so
    /// the estimate keeps it too.
    fn close_formatting(&mut self, at: usize) {
        if !self.open[at + 1..].iter().any(|open| SPECIAL.contains(&open.name.as_str())) {
            self.pop_to(at, true);
        }
    }

    fn start(&mut self, name: &str, self_closing: bool) {
        self.reopen_formatting();
        self.elements += 1;
        if FOREIGN_BREAKOUT.contains(&name)
            && self.in_foreign_content()
            && let Some(at) = self.find_open(is_foreign_root, |_| false)
        {
            self.pop_to(at, false);
        }
        if CLOSES_P.contains(&name)
            && let Some(at) = self.find_open(|open| open == "p", |open| is_scope_boundary(open) || open == "button")
        {
            self.pop_to(at, false);
        }
        match name {
            "a" | "nobr" => {
                if let Some(at) = self.find_open(|open| open == name, is_scope_boundary) {
                    self.close_formatting(at);
                }
            }
            "li" | "dd" | "dt" => {
                let siblings: &[&str] = if name == "li" { &["li"] } else { &["dd", "dt"] };
                let stop = |open: &str| SPECIAL.contains(&open) && !matches!(open, "address" | "div" | "p");
                if let Some(at) = self.find_open(|open| siblings.contains(&open), stop) {
                    self.pop_to(at, false);
                }
            }
            "td" | "th" => {
                if let Some(at) = self.find_open(|open| matches!(open, "td" | "th"), |open| open == "table") {
                    self.pop_to(at, false);
                }
            }
            "tr" => {
                if let Some(at) = self.find_open(|open| open == "tr", |open| open == "table") {
                    self.pop_to(at, false);
                }
            }
            "option" | "optgroup" | "rb" | "rp" | "rt" | "rtc" => {
                let siblings: &[&str] = match name {
                    "option" => &["option"],
                    "optgroup" => &["option", "optgroup"],
                    _ => &["rb", "rp", "rt", "rtc"],
                };
                while self.open.last().is_some_and(|open| siblings.contains(&open.name.as_str())) {
                    self.pop_to(self.open.len() - 1, false);
                }
            }
            _ => {}
        }
        if VOID.contains(&name) || (self_closing && self.in_foreign_content()) {
            return;
        }
        self.push(name);
    }

    fn end(&mut self, name: &str) {
        match name {
            // The tree builder never pops these: content after them goes
            // on where it was.
            "html" | "body" => {}
            // `</form>` takes the form out of the stack, not what is inside.
            "form" => {
                if let Some(at) = self.find_open(|open| open == "form", is_scope_boundary) {
                    self.open.remove(at);
                }
            }
            _ if FORMATTING.contains(&name) => {
                if let Some(at) = self.find_open(|open| open == name, is_scope_boundary) {
                    self.close_formatting(at);
                } else if let Some(idx) = self.closed_formatting.iter().rposition(|closed| closed == name) {
                    self.closed_formatting.remove(idx);
                }
            }
            _ if SPECIAL.contains(&name) => {
                let stop = |open: &str| {
                    is_scope_boundary(open)
                        || (name == "li" && matches!(open, "ol" | "ul"))
                        || (name == "p" && open == "button")
                };
                if let Some(at) = self.find_open(|open| open == name, stop) {
                    self.pop_to(at, false);
                }
            }
            _ => {
                if let Some(at) = self.find_open(|open| open == name, |open| SPECIAL.contains(&open)) {
                    self.pop_to(at, false);
                }
            }
        }
    }
}

fn is_foreign_root(name: &str) -> bool {
    matches!(name, "svg" | "math")
}

/// Elements an end tag of a special element does not close past (the tree
/// builder's default scope).
fn is_scope_boundary(name: &str) -> bool {
    SCOPE_BOUNDARIES.contains(&name) || INTEGRATION_POINTS.contains(&name)
}

/// Whether `html` is within [`MAX_NESTING_DEPTH`], [`MAX_ELEMENTS`] and
/// [`MAX_DEPTH_SUM`] as the tree builder would build it (estimated, erring
/// high).
pub(crate) fn within_bounds(html: &str) -> bool {
    let mut tokens = Tokenizer::new(html);
    let mut estimate = Estimate::default();
    while let Some(token) = tokens.next_token() {
        match token {
            Token::Start { name, self_closing } => {
                if RAW_TEXT.contains(&name.as_str()) && !estimate.any_foreign_open() {
                    tokens.enter_raw_text(&name);
                }
                estimate.start(&name, self_closing);
            }
            Token::End { name } => estimate.end(&name),
            Token::Text(_) => estimate.reopen_formatting(),
        }
        if estimate.is_over() {
            return false;
        }
    }
    true
}

/// Tags whose content is no text for the model.
const SKIPPED_CONTENT: [&str; 6] = ["script", "style", "template", "svg", "head", "noscript"];
/// Tags that end a line in the text.
const LINE_BREAKING: [&str; 33] = [
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "tr",
    "ul",
];

/// The text of `html` with its tags stripped, in one loop (no tree, no
/// recursion): what a page too deep or too large to parse gives. The
/// content of scripts, styles and the like is left out (by count of their
/// start and end tags), and the common character references are decoded.
pub(crate) fn plain_text(html: &str) -> String {
    let mut tokens = Tokenizer::new(html);
    let mut text = String::new();
    let mut skipped_depth = 0usize;
    while let Some(token) = tokens.next_token() {
        match token {
            Token::Start { name, self_closing } => {
                if RAW_TEXT.contains(&name.as_str()) {
                    tokens.enter_raw_text(&name);
                }
                if SKIPPED_CONTENT.contains(&name.as_str()) && !self_closing {
                    skipped_depth += 1;
                }
                // `</head>` may be left out: the body starts afresh.
                if name == "body" {
                    skipped_depth = 0;
                }
                if LINE_BREAKING.contains(&name.as_str()) {
                    text.push('\n');
                }
            }
            Token::End { name } => {
                if SKIPPED_CONTENT.contains(&name.as_str()) {
                    skipped_depth = skipped_depth.saturating_sub(1);
                }
                if LINE_BREAKING.contains(&name.as_str()) {
                    text.push('\n');
                }
            }
            Token::Text(content) => {
                if skipped_depth == 0 {
                    decode_references(content, &mut text);
                }
            }
        }
    }
    tidy_whitespace(&text)
}

/// Appends `content` with the common character references decoded (others
/// are left as they are).
fn decode_references(content: &str, out: &mut String) {
    let mut rest = content;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest.char_indices().take(12).find(|(_, ch)| *ch == ';').map(|(idx, _)| idx);
        let decoded = end.and_then(|end| reference(&rest[1..end]).map(|ch| (ch, end)));
        match decoded {
            Some((ch, end)) => {
                out.push(ch);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

/// The character a reference (without `&` and `;`) names, for the named ones
/// most text uses and any numeric one.
fn reference(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// Runs of spaces made one, lines trimmed, at most one empty line in a row.
fn tidy_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_lines = 0usize;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank_lines > 0 { "\n\n" } else { "\n" });
        }
        blank_lines = 0;
        out.push_str(&words.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_pages_are_within_bounds() {
        let page = format!(
            "<!DOCTYPE html><html><head><title>a <div> b</title><script>if (a < b) {{ x = '<div>'; }}</script></head>\
             <body><ul>{}</ul><table>{}</table><p>one<p>two<svg>{}</svg><!-- <div> --!> <b>x</b></body></html>",
            "<li><a href=\"/x\">item</a>".repeat(2_000),
            "<tr><td><font face=x>cell<td>cell".repeat(2_000),
            "<path d=\"M0\"/>".repeat(1_000),
        );
        assert!(within_bounds(&page));
    }

    #[test]
    fn deep_pages_are_not() {
        assert!(!within_bounds(&"<div>".repeat(MAX_NESTING_DEPTH + 1)));
        assert!(!within_bounds(&"<span><div></span>".repeat(MAX_NESTING_DEPTH)));
        // Quotes outside an attribute's value hide nothing.
        assert!(!within_bounds(&format!("<p \" >{}\">", "<div>".repeat(MAX_NESTING_DEPTH + 1))));
        assert!(!within_bounds(&format!("<p =\" >{}\">", "<div>".repeat(MAX_NESTING_DEPTH + 1))));
        assert!(within_bounds(&format!("<p a = \" >{}\">", "<div>".repeat(MAX_NESTING_DEPTH + 1))));
        // A comment ends at `--!>`.
        assert!(!within_bounds(&format!("<!-- --!>{}-->", "<div>".repeat(MAX_NESTING_DEPTH + 1))));
        // `/>` closes nothing in HTML, nor in SVG's HTML islands, nor once
        // SVG has been left.
        assert!(!within_bounds(&format!("<svg><p>{}", "<div/>".repeat(MAX_NESTING_DEPTH + 1))));
        assert!(!within_bounds(&format!("<svg><foreignObject>{}", "<div/>".repeat(MAX_NESTING_DEPTH + 1))));
        // Formatting elements closed implicitly are re-opened.
        let reopened: String = (0..MAX_NESTING_DEPTH).map(|idx| format!("<div><b id={idx}></div>")).collect();
        assert!(!within_bounds(&format!("{reopened}x")));
        assert!(!within_bounds(&"<br>".repeat(MAX_ELEMENTS + 1)));
        let wide = format!("{}{}", "<div>x".repeat(MAX_NESTING_DEPTH), "</div>".repeat(MAX_NESTING_DEPTH));
        assert!(within_bounds(&wide));
        assert!(!within_bounds(&wide.repeat(MAX_DEPTH_SUM / (MAX_NESTING_DEPTH * MAX_NESTING_DEPTH / 2) + 1)));
    }

    #[test]
    fn plain_text_strips_tags_without_recursing() {
        let html = format!(
            "<html><head><title>T</title><style>p {{}}</style></head><body>{}<p>Fish &amp; chips&#33;</p>\
             <script>var x = '</p>';</script>{}</body></html>",
            "<div>".repeat(200_000),
            "</div>".repeat(200_000)
        );
        assert_eq!(plain_text(&html), "Fish & chips!");
        assert_eq!(plain_text("<html><head><title>T</title><body><p>Text"), "Text");
    }
}

//! Server-side cleaning of `formatted_body` HTML (`org.matrix.custom.html`).
//!
//! The allowlist is the one the client-server spec suggests (Instant Messaging module,
//! "m.room.message msgtypes"), plus the deprecated `font` tag. ammonia does the actual
//! cleaning; this module adds what ammonia lacks:
//!
//! * **Nesting limit.** ammonia has none, so its (always well-nested) output is scanned and
//!   any element deeper than [`MAX_DEPTH`] loses its tags; its text is kept.
//! * **Byte-identical pass-through.** ammonia re-serialises everything (`<br/>` becomes
//!   `<br>`, attributes get re-quoted, entities re-encoded), which would rewrite perfectly
//!   good HTML that clients sent. So the input is returned unchanged whenever it tokenises
//!   to exactly the same HTML token stream as its cleaned form (see `tokenize`).
//! * **Fixed point.** Cleaning is repeated on its own output until the result is stable,
//!   because re-parsing a serialised tree can add elements (a `tbody` around a `tr` whose
//!   `tfoot` was stripped, say), which could push depth past the limit again.
//!
//! Choices worth knowing:
//! * An `img` whose `src` is not `mxc://` keeps its other attributes and stays (an image with
//!   no source renders as its `alt` text at most, which is harmless).
//! * `a` elements always carry exactly `rel="noopener"`; a link sent without it is therefore
//!   not returned byte for byte.
//! * `data-mx-color`/`data-mx-bg-color` values are kept as given: clients map them to CSS
//!   themselves, and the spec leaves validation to them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

/// Deepest element nesting kept, as the spec requires ("not nested more than 100 levels").
pub const MAX_DEPTH: usize = 100;

/// Nesting beyond which tags are stripped *before* parsing. Not a safety measure (the real
/// limit is applied to ammonia's output) but a cost one: the HTML tree builder scans the
/// stack of open elements for many start tags, so parsing deep nesting is quadratic
/// (100,000 nested `div`s take tens of seconds).
const PARSE_DEPTH_LIMIT: usize = 1_000;

/// Cleaning rounds before giving up on reaching a fixed point. Two suffice in practice;
/// the spare ones cover re-parse fix-ups such as implied `tbody` elements.
const MAX_ROUNDS: usize = 4;

const ALLOWED_TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
];

const ALLOWED_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("font", &["data-mx-bg-color", "data-mx-color", "color"]),
    (
        "span",
        &[
            "data-mx-bg-color",
            "data-mx-color",
            "data-mx-spoiler",
            "data-mx-maths",
        ],
    ),
    // `rel` is not listed: ammonia strips whatever the client sent and adds its own.
    ("a", &["target", "href"]),
    ("img", &["width", "height", "alt", "title", "src"]),
    ("ol", &["start"]),
    ("code", &["class"]),
    ("div", &["data-mx-maths"]),
];

const LINK_SCHEMES: &[&str] = &["https", "http", "ftp", "mailto", "magnet"];

/// Elements removed together with everything inside them. `mx-reply` is the legacy reply
/// fallback that clients must strip since v1.13.
const DROP_WITH_CONTENT: &[&str] = &["mx-reply", "script", "style"];

/// HTML void elements: they never have an end tag, so they never open a nesting level.
const VOID_ELEMENTS: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

static CLEANER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder
        .tags(ALLOWED_TAGS.iter().copied().collect())
        .clean_content_tags(DROP_WITH_CONTENT.iter().copied().collect())
        .tag_attributes(
            ALLOWED_ATTRIBUTES
                .iter()
                .map(|&(tag, attrs)| (tag, attrs.iter().copied().collect()))
                .collect::<HashMap<_, HashSet<_>>>(),
        )
        .generic_attributes(HashSet::new())
        // ammonia checks every `href`/`src` against one global list; the per-tag split
        // (links never `mxc:`, images only `mxc:`) happens in `filter_attribute`.
        .url_schemes(LINK_SCHEMES.iter().copied().chain(["mxc"]).collect())
        .url_relative(UrlRelative::Deny)
        .link_rel(Some("noopener"))
        .strip_comments(true)
        .attribute_filter(filter_attribute);
    builder
});

/// Last resort when no stable cleaned form is found: text only, which is always stable.
static TEXT_ONLY: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let mut builder = Builder::empty();
    builder.clean_content_tags(DROP_WITH_CONTENT.iter().copied().collect());
    builder
});

/// Cleans client-supplied HTML to the Matrix spec's allowlist.
pub fn sanitize_html(input: &str) -> String {
    let mut current = Cow::Borrowed(input);
    for _ in 0..MAX_ROUNDS {
        let cleaned = clean_once(&current);
        if same_tokens(&current, &cleaned) {
            // `current` parses exactly like its cleaned form, so it is as safe as that form
            // and keeps the client's own spelling of the HTML.
            return current.into_owned();
        }
        current = Cow::Owned(cleaned);
    }
    text_only(&flatten_excess(input))
}

/// One ammonia pass plus the nesting limit.
fn clean_once(html: &str) -> String {
    let html = flatten_excess(html);
    let cleaned = CLEANER.clean(&html).to_string();
    limit_depth(&cleaned).unwrap_or_else(|| text_only(&html))
}

fn text_only(html: &str) -> String {
    TEXT_ONLY.clean(html).to_string()
}

/// Strips start and end tags nested deeper than [`PARSE_DEPTH_LIMIT`] from raw input, keeping
/// their text, so the parser never sees pathological depth.
///
/// Depth is estimated from the tag syntax alone: quoted attribute values and comments are
/// skipped like HTML does, but implied end tags (an unclosed `<p>` before the next one) and
/// raw-text elements are not modelled, so the estimate is rough, mostly high. Since ammonia
/// still cleans the result, a wrong estimate can only cost formatting of absurdly deep input,
/// never safety. Input the estimate misses is bounded by the event size limit, which callers
/// should enforce before cleaning.
fn flatten_excess(html: &str) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut depth = 0usize;
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'<') {
        let lt = i + offset;
        let Some((end, tag)) = raw_markup(bytes, lt) else {
            break;
        };
        i = end;
        let drop = match tag {
            RawMarkup::Start(name)
                if !VOID_ELEMENTS.iter().any(|v| v.eq_ignore_ascii_case(name)) =>
            {
                depth += 1;
                depth > PARSE_DEPTH_LIMIT
            }
            RawMarkup::End => {
                let drop = depth > PARSE_DEPTH_LIMIT;
                depth = depth.saturating_sub(1);
                drop
            }
            _ => false,
        };
        if drop {
            let out = out.get_or_insert_with(|| String::with_capacity(html.len()));
            out.push_str(&html[copied..lt]);
            copied = end;
        }
    }
    match out {
        None => Cow::Borrowed(html),
        Some(mut out) => {
            out.push_str(&html[copied..]);
            Cow::Owned(out)
        }
    }
}

enum RawMarkup<'a> {
    Start(&'a str),
    End,
    Other,
}

/// Finds the end of the markup starting at `bytes[lt] == b'<'`, following the HTML
/// tokenizer's rules for where tags and comments end. `None` if it runs to the end of input.
fn raw_markup(bytes: &[u8], lt: usize) -> Option<(usize, RawMarkup<'_>)> {
    let find = |from: usize, needle: &[u8]| {
        bytes
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|n| from + n + needle.len())
    };
    let rest = &bytes[lt + 1..];
    if let Some(comment) = rest.strip_prefix(b"!--") {
        // `<!-->` and `<!--->` are complete (empty) comments; otherwise `-->` or `--!>` ends one.
        let end = if comment.starts_with(b">") {
            lt + 5
        } else if comment.starts_with(b"->") {
            lt + 6
        } else {
            match (find(lt + 4, b"-->"), find(lt + 4, b"--!>")) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b)?,
            }
        };
        return Some((end, RawMarkup::Other));
    }
    match rest.first()? {
        c if c.is_ascii_alphabetic() => {
            let name_len = rest
                .iter()
                .position(|&b| is_html_space(b) || b == b'/' || b == b'>')
                .unwrap_or(rest.len());
            let name = std::str::from_utf8(&rest[..name_len]).unwrap_or_default();
            Some((
                start_tag_end(bytes, lt + 1 + name_len)?,
                RawMarkup::Start(name),
            ))
        }
        b'/' if rest.get(1).is_some_and(u8::is_ascii_alphabetic) => {
            Some((start_tag_end(bytes, lt + 2)?, RawMarkup::End))
        }
        // Other `<!`, `<?` and `</` forms are bogus comments, ending at the next `>`.
        b'!' | b'?' | b'/' => Some((find(lt + 1, b">")?, RawMarkup::Other)),
        // A `<` that starts nothing is text.
        _ => Some((lt + 1, RawMarkup::Other)),
    }
}

/// From just after a tag name, skips attributes (with HTML's quoting rules) to after the `>`.
fn start_tag_end(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = skip_spaces(bytes, i);
        match *bytes.get(i)? {
            b'>' => return Some(i + 1),
            b'/' => i += 1,
            _ => {
                // Attribute name: its first character may be anything, even `=`.
                i += 1;
                while !matches!(bytes.get(i)?, b'>' | b'/' | b'=') && !is_html_space(bytes[i]) {
                    i += 1;
                }
                i = skip_spaces(bytes, i);
                if bytes.get(i) == Some(&b'=') {
                    i = skip_spaces(bytes, i + 1);
                    match *bytes.get(i)? {
                        quote @ (b'"' | b'\'') => {
                            i += 2 + bytes.get(i + 1..)?.iter().position(|&b| b == quote)?;
                        }
                        _ => {
                            while !(bytes.get(i)? == &b'>' || is_html_space(bytes[i])) {
                                i += 1;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Per-tag attribute value rules that ammonia's static allowlists cannot express.
fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    match (element, attribute) {
        ("a", "href") => {
            let scheme = value
                .split_once(':')?
                .0
                .trim_start_matches(|c: char| c <= ' ');
            LINK_SCHEMES
                .iter()
                .any(|allowed| scheme.eq_ignore_ascii_case(allowed))
                .then_some(Cow::Borrowed(value))
        }
        ("img", "src") => value.starts_with("mxc://").then_some(Cow::Borrowed(value)),
        ("code", "class") => {
            // Only syntax-highlighting hints are allowed; other classes could hook client CSS.
            let kept: Vec<&str> = value
                .split_ascii_whitespace()
                .filter(|class| class.starts_with("language-"))
                .collect();
            match kept.join(" ") {
                joined if joined.is_empty() => None,
                joined if joined == value => Some(Cow::Borrowed(value)),
                joined => Some(Cow::Owned(joined)),
            }
        }
        _ => Some(Cow::Borrowed(value)),
    }
}

/// Removes the tags (not the text) of elements nested deeper than [`MAX_DEPTH`].
///
/// `html` must be serialiser output: balanced tags, escaped text, quoted attributes. `None`
/// if it unexpectedly is not, so the caller can fall back to plain text.
fn limit_depth(html: &str) -> Option<String> {
    let tokens = tokenize(html)?;
    let mut out = String::with_capacity(html.len());
    let mut depth = 0usize;
    for token in &tokens {
        let keep = match &token.kind {
            TokenKind::Text(_) => true,
            TokenKind::Start { name, .. } if VOID_ELEMENTS.contains(&name.as_str()) => {
                depth < MAX_DEPTH
            }
            TokenKind::Start { .. } => {
                depth += 1;
                depth <= MAX_DEPTH
            }
            TokenKind::End(_) => {
                let keep = depth <= MAX_DEPTH;
                depth = depth.saturating_sub(1);
                keep
            }
        };
        if keep {
            out.push_str(&html[token.span.clone()]);
        }
    }
    Some(out)
}

/// Whether both strings give an HTML parser the same token stream, so the same DOM.
fn same_tokens(a: &str, b: &str) -> bool {
    match (tokenize(a), tokenize(b)) {
        (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.kind == y.kind),
        _ => false,
    }
}

#[derive(Debug)]
struct Token {
    kind: TokenKind,
    /// Where the token's source text lies, so it can be copied verbatim.
    span: Range<usize>,
}

#[derive(Debug, PartialEq, Eq)]
enum TokenKind {
    /// Decoded text.
    Text(String),
    /// Lower-cased name; attributes lower-cased, decoded and sorted (their order is irrelevant
    /// to the parser). A trailing `/` is dropped: HTML ignores it on the elements we keep.
    Start {
        name: String,
        attrs: Vec<(String, String)>,
    },
    End(String),
}

/// Tokenises a conservative subset of HTML exactly as the HTML5 tokenizer would.
///
/// Anything outside the subset makes it return `None`: comments, doctypes, `<!`/`<?`
/// markup, NUL, unterminated tags, odd characters in names or unquoted values, duplicate
/// attributes, and character references other than `&amp;`, `&lt;`, `&gt;`, `&quot;`,
/// `&apos;`, `&nbsp;` and `;`-terminated numeric ones. `None` only costs the byte-identical
/// fast path, never safety. Inside the subset the result is faithful, which is what makes
/// returning the caller's original bytes safe: equal token streams build equal trees. (Tags
/// that switch the tokenizer into raw text, like `script` or `textarea`, are outside the
/// allowlist, so a stream containing them never equals a cleaned one.)
fn tokenize(html: &str) -> Option<Vec<Token>> {
    let bytes = html.as_bytes();
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut text_start = 0;
    let mut i = 0;
    // The parser drops one newline right after `<pre>`; model it so `<pre>\nx` and `<pre>x`
    // compare equal, as they build the same tree.
    let mut after_pre = false;

    let flush =
        |tokens: &mut Vec<Token>, text: &mut String, range: Range<usize>, after_pre: &mut bool| {
            if *after_pre && text.starts_with('\n') {
                text.remove(0);
            }
            *after_pre = false;
            if !text.is_empty() {
                tokens.push(Token {
                    kind: TokenKind::Text(std::mem::take(text)),
                    span: range,
                });
            }
        };

    while i < bytes.len() {
        match bytes[i] {
            b'<' => match bytes.get(i + 1) {
                Some(c) if c.is_ascii_alphabetic() => {
                    flush(&mut tokens, &mut text, text_start..i, &mut after_pre);
                    let (kind, end) = start_tag(html, i)?;
                    after_pre = matches!(&kind, TokenKind::Start { name, .. } if name == "pre");
                    tokens.push(Token { kind, span: i..end });
                    i = end;
                    text_start = i;
                }
                Some(b'/') if bytes.get(i + 2).is_some_and(u8::is_ascii_alphabetic) => {
                    flush(&mut tokens, &mut text, text_start..i, &mut after_pre);
                    let (kind, end) = end_tag(html, i)?;
                    tokens.push(Token { kind, span: i..end });
                    i = end;
                    text_start = i;
                }
                // Markup declarations, processing instructions, bogus end tags, EOF.
                Some(b'!' | b'?' | b'/') | None => return None,
                // Any other `<` is plain text to HTML ("a < b").
                Some(_) => {
                    text.push('<');
                    i += 1;
                }
            },
            b'&' => {
                i += char_ref(&html[i..], &mut text)?;
            }
            b'\r' => {
                // The parser's input preprocessing turns CR LF and lone CR into LF.
                text.push('\n');
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
            }
            0 => return None,
            _ => {
                let run = bytes[i..]
                    .iter()
                    .position(|b| matches!(b, b'<' | b'&' | b'\r' | 0))
                    .map_or(bytes.len(), |n| i + n);
                text.push_str(&html[i..run]);
                i = run;
            }
        }
    }
    flush(&mut tokens, &mut text, text_start..i, &mut after_pre);
    Some(tokens)
}

fn is_html_space(b: u8) -> bool {
    // CR counts too: preprocessing has turned it into LF before the tokenizer sees it.
    matches!(b, b'\t' | b'\n' | b'\x0C' | b'\r' | b' ')
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).copied().is_some_and(is_html_space) {
        i += 1;
    }
    i
}

/// Reads `[A-Za-z0-9-]+` (tag names) or a wider set for attribute names, lower-cased.
fn name_at(html: &str, start: usize, attribute: bool) -> (String, usize) {
    let end = html.as_bytes()[start..]
        .iter()
        .position(|&b| {
            !(b.is_ascii_alphanumeric()
                || b == b'-'
                || (attribute && matches!(b, b'_' | b':' | b'.')))
        })
        .map_or(html.len(), |n| start + n);
    (html[start..end].to_ascii_lowercase(), end)
}

/// Parses `<name attr=value ...>` starting at the `<`; returns the token and the index after `>`.
fn start_tag(html: &str, lt: usize) -> Option<(TokenKind, usize)> {
    let bytes = html.as_bytes();
    let (name, mut i) = name_at(html, lt + 1, false);
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        // A name or value must be followed by a space, `/>` or `>`: anything glued on is an
        // HTML parse error with recovery rules this tokenizer does not model.
        let spaced = bytes.get(i).copied().is_some_and(is_html_space);
        i = skip_spaces(bytes, i);
        match bytes.get(i)? {
            b'>' => {
                i += 1;
                break;
            }
            b'/' if bytes.get(i + 1) == Some(&b'>') => {
                i += 2;
                break;
            }
            _ if !spaced => return None,
            _ => {}
        }
        let (attr, after_name) = name_at(html, i, true);
        if attr.is_empty() {
            return None;
        }
        i = skip_spaces(bytes, after_name);
        let value = if bytes.get(i) == Some(&b'=') {
            i = skip_spaces(bytes, i + 1);
            let (value, end) = attr_value(html, i)?;
            i = end;
            value
        } else {
            // No value; whatever follows the spaces starts the next attribute, which the loop
            // handles (it is "spaced" only if spaces were skipped, so rewind to them).
            i = after_name;
            String::new()
        };
        if attrs.iter().any(|(existing, _)| *existing == attr) {
            return None;
        }
        attrs.push((attr, value));
    }
    attrs.sort();
    Some((TokenKind::Start { name, attrs }, i))
}

/// Parses an attribute value at `i` (quoted or not), decoded; returns it and the index after it.
fn attr_value(html: &str, i: usize) -> Option<(String, usize)> {
    let bytes = html.as_bytes();
    let (raw, end) = match *bytes.get(i)? {
        quote @ (b'"' | b'\'') => {
            let close = i + 1 + bytes[i + 1..].iter().position(|&b| b == quote)?;
            (&html[i + 1..close], close + 1)
        }
        b'>' => return None,
        _ => {
            let end = bytes[i..]
                .iter()
                .position(|&b| is_html_space(b) || b == b'>')
                .map_or(bytes.len(), |n| i + n);
            let raw = &html[i..end];
            if raw
                .bytes()
                .any(|b| matches!(b, b'"' | b'\'' | b'<' | b'=' | b'`'))
            {
                return None;
            }
            (raw, end)
        }
    };
    Some((decode(raw)?, end))
}

/// Parses `</name>` (spaces allowed before `>`) starting at the `<`.
fn end_tag(html: &str, lt: usize) -> Option<(TokenKind, usize)> {
    let (name, i) = name_at(html, lt + 2, false);
    let i = skip_spaces(html.as_bytes(), i);
    (html.as_bytes().get(i) == Some(&b'>')).then(|| (TokenKind::End(name), i + 1))
}

/// Decodes character references and newlines in an attribute value.
fn decode(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find(['&', '\r', '\0']) {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        match rest.as_bytes()[0] {
            b'&' => {
                let len = char_ref(rest, &mut out)?;
                rest = &rest[len..];
            }
            b'\r' => {
                out.push('\n');
                rest = rest.strip_prefix("\r\n").unwrap_or(&rest[1..]);
            }
            _ => return None,
        }
    }
    out.push_str(rest);
    Some(out)
}

/// Decodes the character reference at the start of `s` (which starts with `&`) into `out`,
/// returning its length. A `&` not followed by a letter, digit or `#` is a literal ampersand
/// in HTML. Named references HTML would also accept (`&eacute;`, legacy forms without `;`…)
/// give `None`: their exact rules are not worth modelling here.
fn char_ref(s: &str, out: &mut String) -> Option<usize> {
    let bytes = s.as_bytes();
    match bytes.get(1) {
        Some(b'#') => numeric_ref(s, out),
        Some(c) if c.is_ascii_alphanumeric() => {
            let len = bytes[1..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            if bytes.get(1 + len) != Some(&b';') {
                return None;
            }
            out.push_str(match &s[1..1 + len] {
                "amp" => "&",
                "lt" => "<",
                "gt" => ">",
                "quot" => "\"",
                "apos" => "'",
                "nbsp" => "\u{a0}",
                _ => return None,
            });
            Some(len + 2)
        }
        _ => {
            out.push('&');
            Some(1)
        }
    }
}

/// `&#123;` or `&#x7B;`. Values HTML remaps or replaces (NUL, C1 controls, surrogates,
/// out of range) and other controls are refused rather than modelled.
fn numeric_ref(s: &str, out: &mut String) -> Option<usize> {
    let bytes = s.as_bytes();
    let (radix, start) = match bytes.get(2) {
        Some(b'x' | b'X') => (16, 3),
        _ => (10, 2),
    };
    let digits = bytes[start..]
        .iter()
        .take_while(|&&b| char::from(b).is_digit(radix))
        .count();
    if digits == 0 || digits > 8 || bytes.get(start + digits) != Some(&b';') {
        return None;
    }
    let value = u32::from_str_radix(&s[start..start + digits], radix).ok()?;
    let c = char::from_u32(value).filter(|c| !c.is_control() || matches!(c, '\t' | '\n'))?;
    out.push(c);
    Some(start + digits + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs already inside the allowlist, in the spelling clients send: returned byte for byte.
    const UNCHANGED: &[&str] = &[
        "<b>bold</b>",
        "plain text",
        "",
        "<a href=\"https://example.org\" rel=\"noopener\">x</a>",
        "<a href=\"https://example.org\" target=\"_blank\" rel=\"noopener\">x</a>",
        "<a href='https://example.org' rel=noopener>single quotes, bare value</a>",
        "<a rel=\"noopener\" href=\"mailto:a@example.org\">attribute order</a>",
        "<a href=\"magnet:?xt=urn:btih:abc\" rel=\"noopener\">m</a>",
        "<a href=\"https://x.example/?a=1&amp;b=2\" rel=\"noopener\">q</a>",
        "<B>upper-case tag</B>",
        "line<br>break",
        "line<br/>break",
        "line<br />break",
        "<hr>",
        "Tom &amp; Jerry &lt;3 &gt; &quot;q&quot; &apos; &nbsp; &#8364; &#x20AC;",
        "Tom & Jerry, 1 < 2 > 0",
        "a\r\nb",
        "<p>one</p>\n<p>two</p>",
        "<h1>h1</h1><h2>h2</h2><h3>h3</h3><h4>h4</h4><h5>h5</h5><h6>h6</h6>",
        "<blockquote><p>quote</p></blockquote>",
        "<ul><li>a</li><li>b</li></ul>",
        "<ol start=\"3\"><li>three</li></ol>",
        "<del>d</del> <s>s</s> <u>u</u> <i>i</i> <em>em</em> <strong>st</strong> x<sup>2</sup> y<sub>i</sub>",
        "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;hi&gt;\");\n}\n</code></pre>",
        "<pre>\nleading newline is eaten by the parser either way</pre>",
        "<code>inline</code>",
        "<table><thead><tr><th>h</th></tr></thead><tbody><tr><td>c</td></tr></tbody></table>",
        "<table><caption>cap</caption><tbody><tr><td>c</td></tr></tbody></table>",
        "<details><summary>more</summary>hidden <b>text</b></details>",
        "<span data-mx-spoiler>secret</span>",
        "<span data-mx-spoiler=\"plot\">secret</span>",
        "<span data-mx-color=\"#ff0000\" data-mx-bg-color=\"#00ff00\">colour</span>",
        "<font color=\"#ff0000\" data-mx-color=\"#ff0000\">deprecated font</font>",
        "<span data-mx-maths=\"x^2\"><code>x^2</code></span>",
        "<div data-mx-maths=\"\\sum x\"><code>\\sum x</code></div>",
        "<img src=\"mxc://example.org/abc\" alt=\"cat\" title=\"t\" width=\"32\" height=\"32\">",
        "<img src=\"mxc://example.org/abc\"/>",
        "<div><p>nested <em>inline <b>bold</b></em></p></div>",
        "unicode: café 🎉",
    ];

    /// (what, input, expected output)
    const CLEANED: &[(&str, &str, &str)] = &[
        ("script", "<script>alert(1)</script>hi", "hi"),
        (
            "script inside allowed tag",
            "<b>x<script>alert(1)</script></b>",
            "<b>x</b>",
        ),
        (
            "style element",
            "<style>body { display: none }</style>t",
            "t",
        ),
        ("onclick", "<b onclick=\"alert(1)\">x</b>", "<b>x</b>"),
        (
            "onerror",
            "<img src=\"mxc://a/b\" onerror=\"alert(1)\">",
            "<img src=\"mxc://a/b\">",
        ),
        (
            "onmouseover on link",
            "<a href=\"https://e.org\" onmouseover=\"x()\">l</a>",
            "<a href=\"https://e.org\" rel=\"noopener\">l</a>",
        ),
        (
            "javascript link",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "obfuscated javascript link",
            "<a href=\"JaVa&#x09;ScRiPt:alert(1)\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "entity-encoded javascript link",
            "<a href=\"&#106;avascript:alert(1)\" rel=\"noopener\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "data link",
            "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "relative link",
            "<a href=\"/relative\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "mxc link",
            "<a href=\"mxc://a/b\">x</a>",
            "<a rel=\"noopener\">x</a>",
        ),
        (
            "link without rel gets it",
            "<a href=\"https://example.org\">x</a>",
            "<a href=\"https://example.org\" rel=\"noopener\">x</a>",
        ),
        (
            "foreign rel replaced",
            "<a href=\"https://e.org\" rel=\"opener\">x</a>",
            "<a href=\"https://e.org\" rel=\"noopener\">x</a>",
        ),
        (
            "data image",
            "<img src=\"data:image/png;base64,AAAA\" alt=\"a\">",
            "<img alt=\"a\">",
        ),
        (
            "http image",
            "<img src=\"https://example.org/a.png\" alt=\"a\">",
            "<img alt=\"a\">",
        ),
        (
            "style attribute",
            "<p style=\"color:red\">x</p>",
            "<p>x</p>",
        ),
        (
            "class outside code",
            "<span class=\"evil\">x</span>",
            "<span>x</span>",
        ),
        (
            "iframe",
            "<iframe src=\"https://evil.example\"></iframe>after",
            "after",
        ),
        ("object", "<object data=\"x.swf\"></object>after", "after"),
        ("unknown tag keeps text", "<marquee>x</marquee>", "x"),
        (
            "svg",
            "<svg><script>alert(1)</script><circle r=\"1\"/></svg>t",
            "t",
        ),
        (
            "form",
            "<form action=\"https://e.org\"><input name=\"a\">x</form>",
            "x",
        ),
        ("unclosed tag", "<b>bold", "<b>bold</b>"),
        ("unclosed paragraphs", "<p>a<p>b", "<p>a</p><p>b</p>"),
        ("misnested", "<b><i>x</b>y</i>", "<b><i>x</i></b><i>y</i>"),
        ("comment", "a<!-- hidden -->b", "ab"),
        (
            "mx-reply",
            "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:e.org/$e\">In reply to</a> hi</blockquote></mx-reply>answer",
            "answer",
        ),
        (
            "code class language kept",
            "<code class=\"language-rust\">x</code>",
            "<code class=\"language-rust\">x</code>",
        ),
        (
            "code class others removed",
            "<code class=\"foo language-rust bar\">x</code>",
            "<code class=\"language-rust\">x</code>",
        ),
        (
            "code class non-language removed",
            "<code class=\"foo\">x</code>",
            "<code>x</code>",
        ),
        (
            "ol start kept, type removed",
            "<ol start=\"5\" type=\"a\"><li>x</li></ol>",
            "<ol start=\"5\"><li>x</li></ol>",
        ),
        (
            "table gets its implied tbody",
            "<table><tr><td>x</td></tr></table>",
            "<table><tbody><tr><td>x</td></tr></tbody></table>",
        ),
        ("named entity decoded", "caf&eacute;", "café"),
        (
            "span attribute allowlist",
            "<span data-mx-color=\"#fff\" title=\"t\" id=\"i\">x</span>",
            "<span data-mx-color=\"#fff\">x</span>",
        ),
        (
            "div attribute allowlist",
            "<div data-mx-spoiler align=\"left\">x</div>",
            "<div>x</div>",
        ),
        ("NUL", "a\0b", "ab"),
    ];

    /// Hostile or odd inputs whose exact output does not matter, only that it is clean.
    const HOSTILE: &[&str] = &[
        "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\">",
        "<svg><p><style><img src=x onerror=alert(1)></style></p></svg>",
        "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
        "<a href=\"https://e.org\"><a href=\"javascript:x\">nested</a></a>",
        "<textarea><b onclick=x>t</b></textarea>",
        "<title><b>t</b></title><xmp><i>x</i></xmp>",
        "<plaintext><b>all text now",
        "<!DOCTYPE html><html><head></head><body>b</body></html>",
        "<![CDATA[<b>x</b>]]>",
        "<? pi ?>text",
        "</br></p>stray ends",
        "<table><tfoot><tr><td>x</td></tr></tfoot></table>",
        "<table>text<td>cell",
        "<b x=\"1\" x=\"2\">dup</b>",
        "<b/>self closed",
        "<a href=\"https://e.org\"<b>glued</b>",
        "<img src=\"mxc://a/b\" src=\"https://evil\">",
        "<a href=\" javascript:alert(1)\">x</a>",
        "<a href=\"https:\\\\evil\">x</a>",
        "&#0; &#x110000; &#128; &#xD800; &#13;",
        "<p>unterminated <b attr=\"",
        "<div ",
        "<",
        "&",
        "<pre>\n\nfoo</pre>",
        "<mx-reply>unclosed reply",
        "<li>a<li>b",
        "<details open><summary onclick=\"x\">s</summary></details>",
        "<font style=\"font-size: 500px\" size=\"7\">big</font>",
    ];

    fn max_depth(html: &str) -> usize {
        let tokens = tokenize(html).expect("sanitiser output tokenises");
        let (mut depth, mut max) = (0usize, 0usize);
        for token in tokens {
            match token.kind {
                TokenKind::Start { name, .. } if VOID_ELEMENTS.contains(&name.as_str()) => {
                    max = max.max(depth + 1)
                }
                TokenKind::Start { .. } => {
                    depth += 1;
                    max = max.max(depth);
                }
                TokenKind::End(_) => depth -= 1,
                TokenKind::Text(_) => {}
            }
        }
        max
    }

    /// Everything the allowlist promises about an output, plus stability.
    fn assert_clean(input: &str, output: &str) {
        let tokens = tokenize(output)
            .unwrap_or_else(|| panic!("output of {input:?} does not tokenise: {output:?}"));
        for token in tokens {
            let TokenKind::Start { name, attrs } = token.kind else {
                continue;
            };
            assert!(
                ALLOWED_TAGS.contains(&name.as_str()),
                "{input:?} kept <{name}>: {output:?}"
            );
            let allowed = ALLOWED_ATTRIBUTES
                .iter()
                .find(|(tag, _)| *tag == name)
                .map_or(&[][..], |(_, attrs)| attrs);
            for (attr, value) in attrs {
                match (name.as_str(), attr.as_str()) {
                    ("a", "rel") => assert_eq!(value, "noopener"),
                    ("a", "href") => assert!(
                        LINK_SCHEMES
                            .iter()
                            .any(|s| value.starts_with(&format!("{s}:"))),
                        "{input:?} kept href {value:?}"
                    ),
                    ("img", "src") => assert!(value.starts_with("mxc://")),
                    ("code", "class") => {
                        assert!(value.split(' ').all(|c| c.starts_with("language-")))
                    }
                    _ => assert!(
                        allowed.contains(&attr.as_str()),
                        "{input:?} kept {name} {attr}"
                    ),
                }
            }
        }
        assert!(max_depth(output) <= MAX_DEPTH, "{input:?} nests too deep");
        assert_eq!(
            sanitize_html(output),
            output,
            "output of {input:?} is not stable"
        );
    }

    #[test]
    fn allowlisted_html_passes_byte_for_byte() {
        for input in UNCHANGED {
            let output = sanitize_html(input);
            assert_eq!(output, *input);
            assert_clean(input, &output);
        }
    }

    #[test]
    fn disallowed_content_is_removed() {
        for (what, input, expected) in CLEANED {
            let output = sanitize_html(input);
            assert_eq!(output, *expected, "{what}");
            assert_clean(input, &output);
        }
    }

    #[test]
    fn hostile_input_comes_out_clean() {
        for input in HOSTILE {
            let output = sanitize_html(input);
            // Attributes are checked by `assert_clean`; escaped text may mention anything.
            for bad in [
                "<script",
                "<style",
                "<svg",
                "<math",
                "<textarea",
                "<noscript",
            ] {
                assert!(
                    !output.contains(bad),
                    "{input:?} -> {output:?} contains {bad}"
                );
            }
            assert_clean(input, &output);
        }
    }

    fn nested(tag: &str, levels: usize) -> String {
        format!(
            "{}x{}",
            format!("<{tag}>").repeat(levels),
            format!("</{tag}>").repeat(levels)
        )
    }

    #[test]
    fn nesting_is_limited_to_100_levels() {
        let at_limit = nested("div", MAX_DEPTH);
        assert_eq!(sanitize_html(&at_limit), at_limit);

        for (tag, levels) in [
            ("div", 101),
            ("div", 150),
            ("span", 150),
            ("blockquote", 1_500),
        ] {
            let output = sanitize_html(&nested(tag, levels));
            assert_eq!(output, nested(tag, MAX_DEPTH), "{tag} x {levels}");
            assert_clean(tag, &output);
        }

        // A void element one level too deep goes too, but its siblings' text stays.
        let input = format!(
            "{}a<br>b{}",
            "<div>".repeat(MAX_DEPTH),
            "</div>".repeat(MAX_DEPTH)
        );
        let output = sanitize_html(&input);
        assert_eq!(
            output,
            format!(
                "{}ab{}",
                "<div>".repeat(MAX_DEPTH),
                "</div>".repeat(MAX_DEPTH)
            )
        );
    }

    #[test]
    fn huge_nesting_neither_panics_nor_crawls() {
        let start = std::time::Instant::now();
        for tag in ["div", "b", "span", "p", "a", "table", "ul"] {
            let output = sanitize_html(&nested(tag, 100_000));
            assert!(output.contains('x'), "{tag}: text lost");
            assert_clean(tag, &output);
        }
        let unclosed = "<div>".repeat(100_000);
        assert_clean("unclosed", &sanitize_html(&unclosed));
        let quoted = "<div title=\"</div>\">".repeat(100_000);
        assert_clean("quoted", &sanitize_html(&quoted));
        assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    }

    #[test]
    fn implied_elements_cannot_push_past_the_limit() {
        // The stripped `tfoot` makes a re-parse add a `tbody`: one more level than ammonia saw.
        let input = format!(
            "{}<table><tfoot><tr><td>x</td></tr></tfoot></table>{}",
            "<div>".repeat(MAX_DEPTH - 2),
            "</div>".repeat(MAX_DEPTH - 2)
        );
        let output = sanitize_html(&input);
        assert_clean(&input, &output);
    }

    #[test]
    fn tokenizer_refuses_what_it_does_not_model() {
        for input in [
            "<!-- c -->",
            "<!DOCTYPE html>",
            "<?x?>",
            "</ b>",
            "a\0b",
            "&eacute;",
            "&amp",
            "&#128;",
            "&#0;",
            "&#13;",
            "<b x=1 x=2>",
            "<b x=\"1\"y=\"2\">",
            "<b x=a\"b>",
            "<b",
            "<b x=\"unterminated>",
            "<b / >",
        ] {
            assert!(tokenize(input).is_none(), "{input:?}");
        }
    }

    #[test]
    fn tokenizer_normalises_what_does_not_matter() {
        let same = [
            ("<B CLASS=x>", "<b class=\"x\">"),
            ("<a b=1 c='2'>", "<a c=\"2\" b=\"1\">"),
            ("<br/>", "<br>"),
            ("&amp;&#38;&#x26;", "&&&"),
            ("a\r\nb\rc", "a\nb\nc"),
            ("<pre>\nx</pre>", "<pre>x</pre>"),
            ("1 < 2", "1 &lt; 2"),
            ("</b >", "</b>"),
        ];
        for (a, b) in same {
            assert!(same_tokens(a, b), "{a:?} vs {b:?}");
        }
        for (a, b) in [
            ("<b>", "<i>"),
            ("<a x=1>", "<a x=2>"),
            ("a", "b"),
            ("<pre>\n\nx", "<pre>x"),
        ] {
            assert!(!same_tokens(a, b), "{a:?} vs {b:?}");
        }
    }

    /// Random soup of tricky fragments: every output must be clean and stable, and whenever
    /// the input is passed through untouched, a cleaner that keeps almost everything must
    /// agree that there was nothing to remove.
    #[test]
    fn random_fragment_soup() {
        const PIECES: &[&str] = &[
            "<b>",
            "</b>",
            "<i>",
            "</i>",
            "<p>",
            "</p>",
            "<div>",
            "</div>",
            "<ul>",
            "<li>",
            "<pre>",
            "<a href=\"https://e.org\" rel=\"noopener\">",
            "<a href=javascript:x>",
            "</a>",
            "<table>",
            "<tr>",
            "<td>",
            "</td>",
            "<tfoot>",
            "<caption>",
            "<select>",
            "<option>",
            "<img src=\"mxc://a/b\">",
            "<img src=x onerror=y>",
            "<code class=\"language-x y\">",
            "</code>",
            "<span data-mx-spoiler>",
            "</span>",
            "<font color=red>",
            "<h1>",
            "<br/>",
            "<blockquote>",
            "<mx-reply>",
            "</mx-reply>",
            "<script>",
            "</script>",
            "<style>",
            "</style>",
            "<noscript>",
            "</noscript>",
            "<textarea>",
            "<xmp>",
            "<svg>",
            "<math>",
            "<mtext>",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "&amp;",
            "&#10;",
            "&",
            "<",
            ">",
            "\"",
            "'",
            "=",
            "/",
            "\n",
            "\r",
            " ",
            "x",
        ];
        let mut permissive = Builder::empty();
        permissive
            .tags(
                PIECES
                    .iter()
                    .filter_map(|p| p.strip_prefix('<')?.split(['>', ' ', '/']).next())
                    .collect(),
            )
            .generic_attribute_prefixes(HashSet::from([""]))
            .link_rel(None)
            .strip_comments(false)
            .clean_content_tags(HashSet::new())
            .url_schemes(HashSet::from(["https", "mxc", "javascript", "x"]))
            .url_relative(UrlRelative::PassThrough);

        let mut seed: u64 = 0x5eed;
        let mut random = |below: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % below
        };
        for _ in 0..5_000 {
            let len = random(12) + 1;
            let input: String = (0..len).map(|_| PIECES[random(PIECES.len())]).collect();
            let output = sanitize_html(&input);
            assert_clean(&input, &output);
            if output == input {
                let kept_all = permissive.clean(&input).to_string();
                assert_eq!(
                    kept_all,
                    CLEANER.clean(&input).to_string(),
                    "{input:?} passed through"
                );
            }
        }
    }
}

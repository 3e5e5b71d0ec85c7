//! Shape checks for `m.room.message`, `m.room.name` and `m.room.topic` content sent by local
//! clients, and HTML cleaning of their rich-text parts.
//!
//! The checks follow the spec's event schemas: required keys must be present and every key a
//! schema defines must have its type. Keys a schema does not define are left alone, and so are
//! messages with a `msgtype` the spec does not define (beyond `body` and `msgtype` themselves),
//! so custom and future message types keep working. Nested metadata (`info`, encrypted `file`)
//! is only checked to be an object: clients in the wild vary there and servers do not read it.
//! `formatted_body` without `format` is tolerated; the HTML is only trusted (and cleaned) when
//! `format` says it is HTML.

use std::fmt;

use serde_json::{Map, Value};

use super::sanitize::sanitize_html;

/// Why a message content was refused; the message names the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage(pub String);

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidMessage {}

const HTML_FORMAT: &str = "org.matrix.custom.html";

/// What a schema says a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    String,
    Object,
    StringArray,
    /// A string with the `mxc://` prefix the schemas' `pattern` demands.
    Mxc,
    /// A string with the `geo:` prefix the schema's `pattern` demands.
    Geo,
}

impl Kind {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::String => value.is_string(),
            Kind::Object => value.is_object(),
            Kind::StringArray => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
            Kind::Mxc => value.as_str().is_some_and(|s| s.starts_with("mxc://")),
            Kind::Geo => value.as_str().is_some_and(|s| s.starts_with("geo:")),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Object => "an object",
            Kind::StringArray => "an array of strings",
            Kind::Mxc => "an mxc:// URI",
            Kind::Geo => "a geo: URI",
        }
    }
}

/// One key of a msgtype schema (besides `body` and `msgtype`, which all share).
struct Field {
    key: &'static str,
    kind: Kind,
    required: bool,
}

const fn optional(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: false,
    }
}

const fn required(key: &'static str, kind: Kind) -> Field {
    Field {
        key,
        kind,
        required: true,
    }
}

const TEXT_FIELDS: &[Field] = &[
    optional("format", Kind::String),
    optional("formatted_body", Kind::String),
];

/// m.image, m.file, m.audio, m.video: captions (v1.10) plus the attachment itself.
const MEDIA_FIELDS: &[Field] = &[
    optional("format", Kind::String),
    optional("formatted_body", Kind::String),
    optional("filename", Kind::String),
    optional("info", Kind::Object),
    optional("url", Kind::Mxc),
    optional("file", Kind::Object),
];

const LOCATION_FIELDS: &[Field] = &[
    required("geo_uri", Kind::Geo),
    optional("info", Kind::Object),
];

const VERIFICATION_REQUEST_FIELDS: &[Field] = &[
    optional("format", Kind::String),
    optional("formatted_body", Kind::String),
    required("from_device", Kind::String),
    required("methods", Kind::StringArray),
    required("to", Kind::String),
];

const SERVER_NOTICE_FIELDS: &[Field] = &[
    required("server_notice_type", Kind::String),
    optional("admin_contact", Kind::String),
    optional("limit_type", Kind::String),
];

/// The schema of a spec msgtype: its fields, and whether it carries an attachment that must
/// be given as `url` (unencrypted) or `file` (encrypted).
fn msgtype_schema(msgtype: &str) -> Option<(&'static [Field], bool)> {
    Some(match msgtype {
        "m.text" | "m.emote" | "m.notice" => (TEXT_FIELDS, false),
        "m.image" | "m.file" | "m.audio" | "m.video" => (MEDIA_FIELDS, true),
        "m.location" => (LOCATION_FIELDS, false),
        "m.key.verification.request" => (VERIFICATION_REQUEST_FIELDS, false),
        "m.server_notice" => (SERVER_NOTICE_FIELDS, false),
        _ => return None,
    })
}

fn invalid(event_type: &str, problem: impl fmt::Display) -> InvalidMessage {
    InvalidMessage(format!("{event_type} content: {problem}"))
}

/// Checks one key; absence is fine unless `required`.
fn check_field(
    event_type: &str,
    content: &Map<String, Value>,
    key: &str,
    kind: Kind,
    required: bool,
) -> Result<(), InvalidMessage> {
    match content.get(key) {
        None if !required => Ok(()),
        Some(value) if kind.accepts(value) => Ok(()),
        _ => Err(invalid(
            event_type,
            format_args!("'{key}' must be {}", kind.describe()),
        )),
    }
}

/// Validates an `m.room.message` content object per the spec's msgtype schemas.
pub fn validate_message_content(content: &Map<String, Value>) -> Result<(), InvalidMessage> {
    const EVENT: &str = "m.room.message";
    check_field(EVENT, content, "body", Kind::String, true)?;
    check_field(EVENT, content, "msgtype", Kind::String, true)?;
    check_field(EVENT, content, "format", Kind::String, false)?;
    if content.get("format").and_then(Value::as_str) == Some(HTML_FORMAT)
        && !content.get("formatted_body").is_some_and(Value::is_string)
    {
        return Err(invalid(
            EVENT,
            format_args!("'formatted_body' must be a string when 'format' is {HTML_FORMAT}"),
        ));
    }

    let msgtype = content
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some((fields, has_attachment)) = msgtype_schema(msgtype) else {
        return Ok(());
    };
    for field in fields {
        check_field(EVENT, content, field.key, field.kind, field.required)?;
    }
    if has_attachment && !content.contains_key("url") && !content.contains_key("file") {
        return Err(invalid(
            EVENT,
            format_args!(
                "{msgtype} needs 'url' (an mxc:// URI) or 'file' (an encrypted file object)"
            ),
        ));
    }
    Ok(())
}

/// Validates `m.room.name` (string `name`) and `m.room.topic` (string `topic`; `m.topic` if present must be an object with a `m.text` array of objects each having a string `body`, optional string `mimetype`).
///
/// Other event types are accepted as they are. `m.text` itself may be absent from `m.topic`:
/// the schema does not require it.
pub fn validate_state_content(
    event_type: &str,
    content: &Map<String, Value>,
) -> Result<(), InvalidMessage> {
    match event_type {
        "m.room.name" => check_field(event_type, content, "name", Kind::String, true),
        "m.room.topic" => {
            check_field(event_type, content, "topic", Kind::String, true)?;
            let Some(block) = content.get("m.topic") else {
                return Ok(());
            };
            let block = block
                .as_object()
                .ok_or_else(|| invalid(event_type, "'m.topic' must be an object"))?;
            let Some(texts) = block.get("m.text") else {
                return Ok(());
            };
            let texts = texts.as_array().ok_or_else(|| {
                invalid(event_type, "'m.topic'.'m.text' must be an array of objects")
            })?;
            for (index, text) in texts.iter().enumerate() {
                let text = text.as_object().ok_or_else(|| {
                    invalid(
                        event_type,
                        format_args!("'m.topic'.'m.text'[{index}] must be an object"),
                    )
                })?;
                for (key, required) in [("body", true), ("mimetype", false)] {
                    check_field(event_type, text, key, Kind::String, required).map_err(|_| {
                        invalid(
                            event_type,
                            format_args!("'m.topic'.'m.text'[{index}].'{key}' must be a string"),
                        )
                    })?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Applies sanitize_html to `formatted_body` when `format` == "org.matrix.custom.html", and to any `m.topic`/`m.text` entry whose mimetype is "text/html"; returns true if it changed anything.
///
/// For `m.room.message` the replacement content of an edit (`m.new_content`) is cleaned the
/// same way: clients render it in place of the original, so leaving it alone would let an edit
/// smuggle in what the original could not.
pub fn sanitize_content(event_type: &str, content: &mut Map<String, Value>) -> bool {
    match event_type {
        "m.room.message" => {
            let mut changed = sanitize_formatted_body(content);
            if let Some(Value::Object(new_content)) = content.get_mut("m.new_content") {
                changed |= sanitize_formatted_body(new_content);
            }
            changed
        }
        "m.room.topic" => {
            let Some(Value::Array(texts)) = content
                .get_mut("m.topic")
                .and_then(|block| block.get_mut("m.text"))
            else {
                return false;
            };
            let mut changed = false;
            for text in texts.iter_mut().filter_map(Value::as_object_mut) {
                if text.get("mimetype").and_then(Value::as_str) == Some("text/html") {
                    changed |= sanitize_string(text.get_mut("body"));
                }
            }
            changed
        }
        _ => false,
    }
}

fn sanitize_formatted_body(content: &mut Map<String, Value>) -> bool {
    if content.get("format").and_then(Value::as_str) != Some(HTML_FORMAT) {
        return false;
    }
    sanitize_string(content.get_mut("formatted_body"))
}

/// Cleans the HTML in `value` if it is a string; true if that changed it.
fn sanitize_string(value: Option<&mut Value>) -> bool {
    let Some(Value::String(html)) = value else {
        return false;
    };
    let clean = sanitize_html(html);
    if clean == *html {
        return false;
    }
    *html = clean;
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// The `content` of each example in the spec's event-schemas/examples.
    fn spec_examples() -> Vec<(&'static str, Value)> {
        vec![
            (
                "m.text",
                json!({
                    "body": "This is an example text message",
                    "msgtype": "m.text",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "<b>This is an example text message</b>"
                }),
            ),
            (
                "m.emote",
                json!({
                    "body": "thinks this is an example emote",
                    "msgtype": "m.emote",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "thinks <b>this</b> is an example emote"
                }),
            ),
            (
                "m.notice",
                json!({
                    "body": "This is an example notice",
                    "msgtype": "m.notice",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "This is an <strong>example</strong> notice"
                }),
            ),
            (
                "m.image",
                json!({
                    "body": "filename.jpg",
                    "info": {"h": 398, "w": 394, "mimetype": "image/jpeg", "size": 31037, "is_animated": false},
                    "url": "mxc://example.org/JWEIFJgwEIhweiWJE",
                    "msgtype": "m.image"
                }),
            ),
            (
                "m.file",
                json!({
                    "body": "something-important.doc",
                    "filename": "something-important.doc",
                    "info": {"mimetype": "application/msword", "size": 46144},
                    "msgtype": "m.file",
                    "url": "mxc://example.org/FHyPlCeYUSFFxlgbQYZmoEoe"
                }),
            ),
            (
                "m.audio",
                json!({
                    "body": "Bee Gees - Stayin' Alive",
                    "url": "mxc://example.org/ffed755USFFxlgbQYZGtryd",
                    "info": {"duration": 2140786, "size": 1563685, "mimetype": "audio/mpeg"},
                    "msgtype": "m.audio"
                }),
            ),
            (
                "m.video",
                json!({
                    "body": "Gangnam Style",
                    "url": "mxc://example.org/a526eYUSFFxlgbQYZmo442",
                    "info": {
                        "thumbnail_url": "mxc://example.org/FHyPlCeYUSFFxlgbQYZmoEoe",
                        "thumbnail_info": {"mimetype": "image/jpeg", "size": 46144, "w": 300, "h": 300},
                        "w": 480, "h": 320, "duration": 2140786, "size": 1563685, "mimetype": "video/mp4"
                    },
                    "msgtype": "m.video"
                }),
            ),
            (
                "m.location",
                json!({
                    "body": "Big Ben, London, UK",
                    "geo_uri": "geo:51.5008,0.1247",
                    "info": {
                        "thumbnail_url": "mxc://example.org/FHyPlCeYUSFFxlgbQYZmoEoe",
                        "thumbnail_info": {"mimetype": "image/jpeg", "size": 46144, "w": 300, "h": 300}
                    },
                    "msgtype": "m.location"
                }),
            ),
            (
                "m.key.verification.request",
                json!({
                    "body": "Alice is requesting to verify your device, but your client does not support verification, so you may need to use a different verification method.",
                    "from_device": "AliceDevice2",
                    "methods": ["m.sas.v1"],
                    "to": "@bob:example.org",
                    "msgtype": "m.key.verification.request"
                }),
            ),
            (
                "m.server_notice",
                json!({
                    "body": "Human-readable message to explain the notice",
                    "msgtype": "m.server_notice",
                    "server_notice_type": "m.server_notice.usage_limit_reached",
                    "admin_contact": "mailto:server.admin@example.org",
                    "limit_type": "monthly_active_user"
                }),
            ),
        ]
    }

    #[test]
    fn spec_examples_are_accepted() {
        for (msgtype, content) in spec_examples() {
            assert_eq!(
                validate_message_content(&object(content)),
                Ok(()),
                "{msgtype}"
            );
        }
    }

    #[test]
    fn other_valid_contents_are_accepted() {
        let cases = [
            (
                "encrypted attachment",
                json!({"msgtype": "m.image", "body": "a.png", "file": {"url": "mxc://e.org/x", "v": "v2"}}),
            ),
            (
                "url and file",
                json!({"msgtype": "m.file", "body": "f", "url": "mxc://e.org/x", "file": {}}),
            ),
            (
                "media caption",
                json!({"msgtype": "m.video", "body": "caption", "filename": "v.mp4", "url": "mxc://e.org/v",
                "format": "org.matrix.custom.html", "formatted_body": "<b>caption</b>"}),
            ),
            (
                "unknown msgtype",
                json!({"msgtype": "org.example.custom", "body": "x", "url": 5}),
            ),
            (
                "unknown format",
                json!({"msgtype": "m.text", "body": "x", "format": "org.example.markdown", "formatted_body": "**x**"}),
            ),
            (
                "formatted_body without format",
                json!({"msgtype": "m.text", "body": "x", "formatted_body": "<b>x</b>"}),
            ),
            (
                "extra keys",
                json!({"msgtype": "m.text", "body": "x", "m.relates_to": {"rel_type": "m.thread"}, "m.mentions": {}}),
            ),
            ("empty body", json!({"msgtype": "m.notice", "body": ""})),
            (
                "verification without body format",
                json!({"msgtype": "m.key.verification.request", "body": "b",
                "from_device": "D", "methods": [], "to": "@b:e.org"}),
            ),
            (
                "server notice without extras",
                json!({"msgtype": "m.server_notice", "body": "b", "server_notice_type": "t"}),
            ),
        ];
        for (what, content) in cases {
            assert_eq!(validate_message_content(&object(content)), Ok(()), "{what}");
        }
    }

    #[test]
    fn malformed_contents_are_refused_naming_the_key() {
        // (what, content, key the error must name)
        let cases = [
            ("missing body", json!({"msgtype": "m.text"}), "'body'"),
            (
                "non-string body",
                json!({"msgtype": "m.text", "body": 1}),
                "'body'",
            ),
            (
                "unknown msgtype, null body",
                json!({"msgtype": "x.y", "body": null}),
                "'body'",
            ),
            ("missing msgtype", json!({"body": "x"}), "'msgtype'"),
            (
                "non-string msgtype",
                json!({"body": "x", "msgtype": ["m.text"]}),
                "'msgtype'",
            ),
            (
                "non-string format",
                json!({"msgtype": "m.text", "body": "x", "format": 1}),
                "'format'",
            ),
            (
                "html without formatted_body",
                json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html"}),
                "'formatted_body'",
            ),
            (
                "html with non-string formatted_body",
                json!({"msgtype": "x.y", "body": "x", "format": "org.matrix.custom.html", "formatted_body": {}}),
                "'formatted_body'",
            ),
            (
                "non-string formatted_body",
                json!({"msgtype": "m.emote", "body": "x", "formatted_body": 3}),
                "'formatted_body'",
            ),
            (
                "image url not mxc",
                json!({"msgtype": "m.image", "body": "x", "url": "https://e.org/a.png"}),
                "'url'",
            ),
            (
                "image url not a string",
                json!({"msgtype": "m.image", "body": "x", "url": 7}),
                "'url'",
            ),
            (
                "image without url or file",
                json!({"msgtype": "m.image", "body": "x"}),
                "'url'",
            ),
            (
                "file without url or file",
                json!({"msgtype": "m.file", "body": "x", "filename": "f"}),
                "'file'",
            ),
            (
                "audio url not mxc",
                json!({"msgtype": "m.audio", "body": "x", "url": "file:///etc/passwd"}),
                "'url'",
            ),
            (
                "video without url or file",
                json!({"msgtype": "m.video", "body": "x", "info": {}}),
                "m.video",
            ),
            (
                "encrypted file not an object",
                json!({"msgtype": "m.file", "body": "x", "file": "mxc://e.org/x"}),
                "'file'",
            ),
            (
                "info not an object",
                json!({"msgtype": "m.image", "body": "x", "url": "mxc://e.org/x", "info": []}),
                "'info'",
            ),
            (
                "filename not a string",
                json!({"msgtype": "m.file", "body": "x", "url": "mxc://e.org/x", "filename": 1}),
                "'filename'",
            ),
            (
                "media caption format not a string",
                json!({"msgtype": "m.audio", "body": "x", "url": "mxc://e.org/x", "format": true}),
                "'format'",
            ),
            (
                "location without geo_uri",
                json!({"msgtype": "m.location", "body": "x"}),
                "'geo_uri'",
            ),
            (
                "location geo_uri not geo:",
                json!({"msgtype": "m.location", "body": "x", "geo_uri": "https://maps"}),
                "'geo_uri'",
            ),
            (
                "location geo_uri not a string",
                json!({"msgtype": "m.location", "body": "x", "geo_uri": [51.5, 0.1]}),
                "'geo_uri'",
            ),
            (
                "location info not an object",
                json!({"msgtype": "m.location", "body": "x", "geo_uri": "geo:0,0", "info": "i"}),
                "'info'",
            ),
            (
                "verification without from_device",
                json!({"msgtype": "m.key.verification.request", "body": "x", "methods": [], "to": "@b:e.org"}),
                "'from_device'",
            ),
            (
                "verification methods not an array",
                json!({"msgtype": "m.key.verification.request", "body": "x", "from_device": "D", "methods": "m.sas.v1", "to": "@b:e.org"}),
                "'methods'",
            ),
            (
                "verification methods not strings",
                json!({"msgtype": "m.key.verification.request", "body": "x", "from_device": "D", "methods": [1], "to": "@b:e.org"}),
                "'methods'",
            ),
            (
                "verification without to",
                json!({"msgtype": "m.key.verification.request", "body": "x", "from_device": "D", "methods": []}),
                "'to'",
            ),
            (
                "server notice without type",
                json!({"msgtype": "m.server_notice", "body": "x"}),
                "'server_notice_type'",
            ),
            (
                "server notice admin_contact not a string",
                json!({"msgtype": "m.server_notice", "body": "x", "server_notice_type": "t", "admin_contact": 1}),
                "'admin_contact'",
            ),
            (
                "server notice limit_type not a string",
                json!({"msgtype": "m.server_notice", "body": "x", "server_notice_type": "t", "limit_type": {}}),
                "'limit_type'",
            ),
        ];
        for (what, content, key) in cases {
            let error = validate_message_content(&object(content)).expect_err(what);
            assert!(
                error.0.starts_with("m.room.message content: "),
                "{what}: {error}"
            );
            assert!(error.0.contains(key), "{what}: {error} does not name {key}");
        }
    }

    #[test]
    fn error_messages_read_well() {
        let error = validate_message_content(&object(json!({"msgtype": "m.text"}))).unwrap_err();
        assert_eq!(
            error.to_string(),
            "m.room.message content: 'body' must be a string"
        );
        let error = validate_message_content(&object(
            json!({"msgtype": "m.image", "body": "x", "url": "http://a"}),
        ))
        .unwrap_err();
        assert_eq!(
            error.0,
            "m.room.message content: 'url' must be an mxc:// URI"
        );
        let error = validate_message_content(&object(json!({"msgtype": "m.image", "body": "x"})))
            .unwrap_err();
        assert_eq!(
            error.0,
            "m.room.message content: m.image needs 'url' (an mxc:// URI) or 'file' (an encrypted file object)"
        );
    }

    #[test]
    fn state_contents_are_checked() {
        let accepted = [
            ("m.room.name", json!({"name": "The room name"})),
            ("m.room.name", json!({"name": ""})),
            (
                "m.room.topic",
                json!({"topic": "An interesting room topic"}),
            ),
            // The spec's example.
            (
                "m.room.topic",
                json!({
                    "m.topic": {"m.text": [
                        {"mimetype": "text/html", "body": "An <em>interesting</em> room topic"},
                        {"body": "An interesting room topic"}
                    ]},
                    "topic": "An interesting room topic"
                }),
            ),
            ("m.room.topic", json!({"topic": "t", "m.topic": {}})),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": []}}),
            ),
            ("m.room.avatar", json!({"url": 5})),
        ];
        for (event_type, content) in accepted {
            assert_eq!(
                validate_state_content(event_type, &object(content.clone())),
                Ok(()),
                "{content}"
            );
        }

        let refused = [
            (
                "m.room.name",
                json!({}),
                "m.room.name content: 'name' must be a string",
            ),
            (
                "m.room.name",
                json!({"name": null}),
                "m.room.name content: 'name' must be a string",
            ),
            (
                "m.room.name",
                json!({"name": 42}),
                "m.room.name content: 'name' must be a string",
            ),
            (
                "m.room.topic",
                json!({}),
                "m.room.topic content: 'topic' must be a string",
            ),
            (
                "m.room.topic",
                json!({"topic": ["t"]}),
                "m.room.topic content: 'topic' must be a string",
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": "t"}),
                "m.room.topic content: 'm.topic' must be an object",
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": {"body": "t"}}}),
                "m.room.topic content: 'm.topic'.'m.text' must be an array of objects",
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": ["t"]}}),
                "m.room.topic content: 'm.topic'.'m.text'[0] must be an object",
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": [{"body": "t"}, {"mimetype": "text/plain"}]}}),
                "m.room.topic content: 'm.topic'.'m.text'[1].'body' must be a string",
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": [{"body": "t", "mimetype": 1}]}}),
                "m.room.topic content: 'm.topic'.'m.text'[0].'mimetype' must be a string",
            ),
        ];
        for (event_type, content, expected) in refused {
            let error = validate_state_content(event_type, &object(content)).unwrap_err();
            assert_eq!(error.0, expected);
        }
    }

    #[test]
    fn html_parts_are_sanitised() {
        // (event type, content before, content after, changed)
        let cases = [
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": "<b onclick=\"x()\">x</b><script>y</script>"}),
                json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": "<b>x</b>"}),
                true,
            ),
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": "<b>x</b><br/>"}),
                json!({"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html", "formatted_body": "<b>x</b><br/>"}),
                false,
            ),
            // Not declared as HTML: not ours to rewrite.
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "<script>", "formatted_body": "<script>"}),
                json!({"msgtype": "m.text", "body": "<script>", "formatted_body": "<script>"}),
                false,
            ),
            (
                "m.room.message",
                json!({"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": "x",
                    "format": "org.matrix.custom.html", "formatted_body": "<img src=\"https://track.example/p.gif\">x"}}),
                json!({"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": "x",
                    "format": "org.matrix.custom.html", "formatted_body": "<img>x"}}),
                true,
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": [
                    {"mimetype": "text/html", "body": "<em>t</em><iframe src=\"https://e.org\"></iframe>"},
                    {"body": "<iframe>plain text is not HTML</iframe>"}
                ]}}),
                json!({"topic": "t", "m.topic": {"m.text": [
                    {"mimetype": "text/html", "body": "<em>t</em>"},
                    {"body": "<iframe>plain text is not HTML</iframe>"}
                ]}}),
                true,
            ),
            (
                "m.room.topic",
                json!({"topic": "t", "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<em>t</em>"}]}}),
                json!({"topic": "t", "m.topic": {"m.text": [{"mimetype": "text/html", "body": "<em>t</em>"}]}}),
                false,
            ),
            (
                "m.room.topic",
                json!({"topic": "<b onclick=x>"}),
                json!({"topic": "<b onclick=x>"}),
                false,
            ),
            (
                "m.room.name",
                json!({"name": "<script>"}),
                json!({"name": "<script>"}),
                false,
            ),
            (
                "org.example.event",
                json!({"format": "org.matrix.custom.html", "formatted_body": "<script>"}),
                json!({"format": "org.matrix.custom.html", "formatted_body": "<script>"}),
                false,
            ),
        ];
        for (event_type, before, after, changed) in cases {
            let mut content = object(before.clone());
            assert_eq!(
                sanitize_content(event_type, &mut content),
                changed,
                "{before}"
            );
            assert_eq!(Value::Object(content), after, "{before}");
        }
    }
}

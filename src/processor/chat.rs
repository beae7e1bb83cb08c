//! Chat templates rendered the way transformers renders them: found where transformers looks,
//! run by minijinja with Jinja2's `trim_blocks` / `lstrip_blocks`, Python string and dict
//! methods, and transformers' own `tojson`, `raise_exception` and `strftime_now`; values are
//! printed as Python's `str()` would print them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use serde_json::{json, Value as Json};

/// One part of a message: an image placeholder or a piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Image,
    Text(String),
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: Vec<Content>,
}

impl Message {
    pub fn new(role: impl Into<String>, content: Vec<Content>) -> Self {
        Self {
            role: role.into(),
            content,
        }
    }

    /// A text-only turn.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(role, vec![Content::Text(text.into())])
    }

    /// A user turn holding `num_images` images first, then `text` (the layout of the
    /// calibration prompts and of `interlace forward`).
    pub fn user_with_images(num_images: usize, text: impl Into<String>) -> Self {
        let mut content = vec![Content::Image; num_images];
        content.push(Content::Text(text.into()));
        Self::new("user", content)
    }

    pub fn num_images(&self) -> usize {
        self.content
            .iter()
            .filter(|c| matches!(c, Content::Image))
            .count()
    }

    /// The message as transformers hands it to the template:
    /// `{"role": .., "content": [{"type": "image"}, {"type": "text", "text": ..}]}`.
    pub fn to_json(&self) -> Json {
        let content: Vec<Json> = self
            .content
            .iter()
            .map(|c| match c {
                Content::Image => json!({"type": "image"}),
                Content::Text(t) => json!({"type": "text", "text": t}),
            })
            .collect();
        json!({"role": self.role, "content": content})
    }

    /// Reads a message in Hugging Face chat format: `content` is a string or a list of
    /// `{"type": "text", "text": ..}` and image entries (`{"type": "image", ..}`, or any entry
    /// with an `image` / `image_url` key, as Qwen's template treats them).
    pub fn from_json(value: &Json) -> Result<Self> {
        let role = value
            .get("role")
            .and_then(Json::as_str)
            .with_context(|| format!("message has no string \"role\": {value}"))?;
        let content = match value.get("content") {
            Some(Json::String(s)) => vec![Content::Text(s.clone())],
            Some(Json::Array(items)) => items
                .iter()
                .map(|item| {
                    let ty = item.get("type").and_then(Json::as_str);
                    if ty == Some("image")
                        || item.get("image").is_some()
                        || item.get("image_url").is_some()
                    {
                        Ok(Content::Image)
                    } else if let Some(t) = item.get("text").and_then(Json::as_str) {
                        Ok(Content::Text(t.to_string()))
                    } else {
                        bail!("unsupported content entry in a {role} message: {item}")
                    }
                })
                .collect::<Result<_>>()?,
            Some(Json::Null) | None => Vec::new(),
            Some(other) => bail!("message \"content\" must be a string or a list, got {other}"),
        };
        Ok(Self::new(role, content))
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    source: String,
    /// Where the template came from (a file, with the key inside it), for error messages.
    origin: String,
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat_template";

impl ChatTemplate {
    /// Finds the template of a model directory where transformers' processor looks first and
    /// its tokenizer next: `processor_config.json` key `chat_template`, the legacy
    /// `chat_template.json` (`{"chat_template": ...}`), `chat_template.jinja`, then
    /// `tokenizer_config.json` key `chat_template` (a string, or a list of `{name, template}` of
    /// which `default` is used).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (source, origin) = find_template_source(dir)?;
        let mut template = Self::new(source).with_context(|| origin.clone())?;
        template.origin = origin;
        Ok(template)
    }

    /// Compiles a template string.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            out.write_str(&py_str(value))
                .map_err(|_| Error::new(ErrorKind::WriteFailure, "cannot write template output"))
        });
        env.add_filter("tojson", tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| anyhow::anyhow!("chat template does not compile: {e:#}"))?;
        Ok(Self {
            source,
            origin: "chat template".into(),
            env,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` with `add_generation_prompt`; `special_tokens` (e.g. `eos_token`) and
    /// `extra` (template switches such as `add_vision_id`) become template variables, as the
    /// keyword arguments of transformers' `apply_chat_template` do. `tools` and `documents` are
    /// defined and none.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        special_tokens: &BTreeMap<String, String>,
        extra: &BTreeMap<String, Json>,
    ) -> Result<String> {
        let messages: Vec<Json> = messages.iter().map(Message::to_json).collect();
        self.render_json(
            &Json::Array(messages),
            add_generation_prompt,
            special_tokens,
            extra,
        )
    }

    /// Like [`ChatTemplate::render`] with messages given as Hugging Face chat JSON.
    pub fn render_json(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        special_tokens: &BTreeMap<String, String>,
        extra: &BTreeMap<String, Json>,
    ) -> Result<String> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in special_tokens {
            ctx.insert(k.clone(), Value::from(v.as_str()));
        }
        for (k, v) in extra {
            ctx.insert(k.clone(), Value::from_serialize(v));
        }
        ctx.insert(
            "messages".into(),
            Value::from_serialize(normalize_messages(messages)),
        );
        ctx.entry("tools".into()).or_insert(Value::from(()));
        ctx.entry("documents".into()).or_insert(Value::from(()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", self.origin))?;
        tmpl.render(ctx).map_err(|e| {
            anyhow::anyhow!(
                "{}: chat template failed to render: {}",
                self.origin,
                error_chain(&e)
            )
        })
    }
}

/// What transformers does to messages before rendering: keys whose value is null are dropped
/// (`_normalize_chat_messages`), and a reasoning text given as `reasoning_content`, `thinking`
/// or `reasoning` is made available under the first two names (`_alias_reasoning_fields`).
fn normalize_messages(messages: &Json) -> Json {
    let Some(list) = messages.as_array() else {
        return messages.clone();
    };
    let out = list
        .iter()
        .map(|m| {
            let Some(obj) = m.as_object() else {
                return m.clone();
            };
            let mut obj: serde_json::Map<String, Json> = obj
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let reasoning = ["reasoning_content", "thinking", "reasoning"]
                .iter()
                .find_map(|k| obj.get(*k).cloned());
            if let Some(r) = reasoning {
                obj.entry("thinking").or_insert_with(|| r.clone());
                obj.insert("reasoning_content".into(), r);
            }
            Json::Object(obj)
        })
        .collect();
    Json::Array(out)
}

fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

fn find_template_source(dir: &Path) -> Result<(String, String)> {
    let processor_config = dir.join("processor_config.json");
    if processor_config.is_file() {
        let json = read_json(&processor_config)?;
        if let Some(t) = json.get("chat_template").filter(|v| !v.is_null()) {
            let s = template_from_value(t)
                .with_context(|| format!("{}: field chat_template", processor_config.display()))?;
            return Ok((s, processor_config.display().to_string()));
        }
    }
    let legacy = dir.join("chat_template.json");
    if legacy.is_file() {
        let json = read_json(&legacy)?;
        let t = json
            .get("chat_template")
            .with_context(|| format!("{}: missing field chat_template", legacy.display()))?;
        let s = template_from_value(t)
            .with_context(|| format!("{}: field chat_template", legacy.display()))?;
        return Ok((s, legacy.display().to_string()));
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let s = std::fs::read_to_string(&jinja)
            .with_context(|| format!("{}: cannot read", jinja.display()))?;
        return Ok((s, jinja.display().to_string()));
    }
    let tok_config = dir.join("tokenizer_config.json");
    if tok_config.is_file() {
        let json = read_json(&tok_config)?;
        if let Some(t) = json.get("chat_template").filter(|v| !v.is_null()) {
            let s = template_from_value(t)
                .with_context(|| format!("{}: field chat_template", tok_config.display()))?;
            return Ok((s, tok_config.display().to_string()));
        }
    }
    bail!(
        "{}: no chat template (looked for chat_template.json, chat_template.jinja and \"chat_template\" in processor_config.json / tokenizer_config.json)",
        dir.display()
    )
}

/// A template given as a string, a `{name: template}` map or a list of `{name, template}`;
/// the named forms resolve to `default`.
fn template_from_value(v: &Json) -> Result<String> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Array(items) => {
            for item in items {
                if item.get("name").and_then(Json::as_str) == Some("default") {
                    return item
                        .get("template")
                        .and_then(Json::as_str)
                        .map(str::to_string)
                        .context("the \"default\" entry has no string \"template\"");
                }
            }
            bail!("a list of templates must contain one named \"default\"")
        }
        Json::Object(map) => map
            .get("default")
            .and_then(Json::as_str)
            .map(str::to_string)
            .context("a map of templates must contain a string \"default\""),
        other => bail!("expected a string, got {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Template functions

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// i.e. Python's `json.dumps` with those arguments (no HTML escaping, unlike Jinja's own).
fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let ensure_ascii = match kwargs
        .get::<Option<Value>>("ensure_ascii")?
        .or(ensure_ascii)
    {
        Some(v) => v.is_true(),
        None => false,
    };
    let indent = match kwargs.get::<Option<Value>>("indent")?.or(indent) {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            if let Some(s) = v.as_str() {
                Some(s.to_string())
            } else if let Some(n) = v.as_i64() {
                Some(" ".repeat(n.max(0) as usize))
            } else {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an integer or a string",
                ));
            }
        }
    };
    let separators = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let items: Vec<Value> = v.try_iter()?.collect();
            match (
                items.first().and_then(|x| x.as_str()),
                items.get(1).and_then(|x| x.as_str()),
            ) {
                (Some(a), Some(b)) if items.len() == 2 => Some((a.to_string(), b.to_string())),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair of strings",
                    ))
                }
            }
        }
        _ => None,
    };
    let sort_keys = kwargs
        .get::<Option<Value>>("sort_keys")?
        .is_some_and(|v| v.is_true());
    kwargs.assert_all_used()?;
    let (item_sep, key_sep) = separators.unwrap_or_else(|| {
        if indent.is_some() {
            (",".to_string(), ": ".to_string())
        } else {
            (", ".to_string(), ": ".to_string())
        }
    });
    let opts = JsonOpts {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    let mut out = String::new();
    py_json(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn py_json(v: &Value, o: &JsonOpts, depth: usize, out: &mut String) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&py_number(v, true)),
        ValueKind::String => json_string(v.as_str().unwrap_or_default(), o.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            json_container(out, o, depth, '[', ']', &items, |item, out| {
                py_json(item, o, depth + 1, out)
            })?;
        }
        ValueKind::Map | ValueKind::Plain => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if o.sort_keys {
                keys.sort();
            }
            let entries: Vec<(Value, Value)> = keys
                .into_iter()
                .map(|k| {
                    let val = v.get_item(&k)?;
                    Ok((k, val))
                })
                .collect::<Result<_, Error>>()?;
            json_container(out, o, depth, '{', '}', &entries, |(k, val), out| {
                let key = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or_default().to_string(),
                    ValueKind::Number => py_number(k, true),
                    ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).to_string(),
                    ValueKind::None => "null".to_string(),
                    _ => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!("tojson: keys must be str, int, float, bool or None, not {k}"),
                        ))
                    }
                };
                json_string(&key, o.ensure_ascii, out);
                out.push_str(&o.key_sep);
                py_json(val, o, depth + 1, out)
            })?;
        }
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "tojson: Object of type Undefined is not JSON serializable",
            ))
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: Object of type {other} is not JSON serializable"),
            ))
        }
    }
    Ok(())
}

fn json_container<T>(
    out: &mut String,
    o: &JsonOpts,
    depth: usize,
    open: char,
    close: char,
    items: &[T],
    mut each: impl FnMut(&T, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(ind) = &o.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(ind);
            }
        }
    };
    newline(out, depth + 1);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&o.item_sep);
            newline(out, depth + 1);
        }
        each(item, out)?;
    }
    newline(out, depth);
    out.push(close);
    Ok(())
}

/// Python's `json` string escaping.
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `str()` of a number as Python prints it; `json` spells the non-finite floats differently.
fn py_number(v: &Value, for_json: bool) -> String {
    if v.is_integer() {
        return v.to_string();
    }
    match f64::try_from(v.clone()) {
        Ok(x) => py_float(x, for_json),
        Err(_) => v.to_string(),
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, in positional notation when the
/// decimal exponent is in [-4, 16), else as `d.ddde+XX`.
pub(crate) fn py_float(x: f64, for_json: bool) -> String {
    if x.is_nan() {
        return if for_json { "NaN" } else { "nan" }.to_string();
    }
    if x.is_infinite() {
        let s = if for_json { "Infinity" } else { "inf" };
        return if x < 0.0 {
            format!("-{s}")
        } else {
            s.to_string()
        };
    }
    let sci = format!("{x:e}"); // e.g. "-1.2345e-7", "1e16", "0e0"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                format!("{}{}.0", digits, "0".repeat((int_len - n) as usize))
            } else {
                format!(
                    "{}.{}",
                    &digits[..int_len as usize],
                    &digits[int_len as usize..]
                )
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{frac}e{esign}{:02}", exp.abs())
    }
}

/// Python's `str()` of a template value (what Jinja2 prints for `{{ value }}`).
fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        _ => py_repr(v),
    }
}

/// Python's `repr()` of a template value.
fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => py_number(v, false),
        ValueKind::String => py_str_repr(v.as_str().unwrap_or_default()),
        ValueKind::Seq => match v.try_iter() {
            Ok(it) => format!(
                "[{}]",
                it.map(|x| py_repr(&x)).collect::<Vec<_>>().join(", ")
            ),
            Err(_) => v.to_string(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => {
                let parts: Vec<String> = keys
                    .map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        format!("{}: {}", py_repr(&k), py_repr(&val))
                    })
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Err(_) => v.to_string(),
        },
        _ => v.to_string(),
    }
}

fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// transformers' `strftime_now(format)`, in UTC (Python uses the local time zone, which is UTC
/// on the machines this runs on). Supports the common `strftime` directives.
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Ok(Value::from(strftime_utc(&format, secs)))
}

fn strftime_utc(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let rem = unix_secs.rem_euclid(86_400);
    let (hour, minute, second) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let day = doy_mar - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday.
    let is_leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(month - 1) as usize] + day + i64::from(is_leap && month > 2);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Json) -> String {
        let t = ChatTemplate::new(src).unwrap();
        let extra: BTreeMap<String, Json> = ctx
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        t.render_json(&json!([]), false, &BTreeMap::new(), &extra)
            .unwrap()
    }

    #[test]
    fn python_printing() {
        assert_eq!(
            render(
                "{{ x }} {{ y }} {{ z }} {{ f }}",
                json!({"x": true, "y": null, "z": [1, "a'b", "c"], "f": 1.0})
            ),
            "True None [1, \"a'b\", 'c'] 1.0"
        );
        assert_eq!(render("{{ missing }}|", json!({})), "|");
    }

    #[test]
    fn tojson_like_python() {
        let ctx = json!({"x": {"b": [1, 2.5, "é\n\"<>&"], "a": null}});
        assert_eq!(
            render("{{ x | tojson }}", ctx.clone()),
            r#"{"a": null, "b": [1, 2.5, "é\n\"<>&"]}"#
        );
        assert_eq!(
            render("{{ x | tojson(indent=2) }}", ctx.clone()),
            "{\n  \"a\": null,\n  \"b\": [\n    1,\n    2.5,\n    \"é\\n\\\"<>&\"\n  ]\n}"
        );
        assert_eq!(
            render("{{ x | tojson(ensure_ascii=true) }}", ctx),
            r#"{"a": null, "b": [1, 2.5, "\u00e9\n\"<>&"]}"#
        );
        assert_eq!(render("{{ [] | tojson(indent=2) }}", json!({})), "[]");
    }

    #[test]
    fn python_float_repr() {
        for (x, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (-2.5e20, "-2.5e+20"),
            (1e15, "1000000000000000.0"),
        ] {
            assert_eq!(py_float(x, false), s);
        }
    }

    #[test]
    fn trim_and_lstrip_blocks_and_methods() {
        let src = "{% for m in messages %}\n  {% if m.role.startswith('u') %}\n[{{ m.role.upper() }}]\n  {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src).unwrap();
        let out = t
            .render(
                &[Message::text("user", "hi")],
                false,
                &BTreeMap::new(),
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(out, "[USER]\n");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('bad roles') }}").unwrap();
        let err = t
            .render(&[], false, &BTreeMap::new(), &BTreeMap::new())
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad roles"), "{err:#}");
    }

    #[test]
    fn strftime() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        assert_eq!(
            strftime_utc("%Y-%m-%d %H:%M:%S %a %b %B %j %d %b %Y", 1_709_211_909),
            "2024-02-29 13:05:09 Thu Feb February 060 29 Feb 2024"
        );
    }
}

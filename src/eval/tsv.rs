//! Reading VLMEvalKit's TSV files without holding their images in memory.
//!
//! VLMEvalKit writes and reads benchmarks with pandas (`to_csv(sep='\t')`,
//! `read_csv(sep='\t')`): tab-separated fields, the first line the header, a field that holds
//! a tab, a quote or a line break is wrapped in double quotes with inner quotes doubled, and
//! blank lines are skipped. Benchmark files carry every image as base64 in a cell (several
//! GB for high-resolution benchmarks), so cells longer than [`INLINE_LIMIT`] bytes that are
//! not quoted stay in the file and are read back on demand by their byte range.
//!
//! Also here: the other text formats of those files, base64 ([`decode_base64`]) and Python
//! list literals such as `['a', 'b']` ([`parse_list_literal`]), which VLMEvalKit uses for
//! multi-image cells and for several reference answers.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Unquoted cells longer than this many bytes are left in the file.
pub const INLINE_LIMIT: usize = 16 * 1024;

/// One cell: its text, or where its bytes are in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Text(String),
    InFile { offset: u64, len: usize },
}

impl Cell {
    /// Length of the cell's content in bytes.
    pub fn len(&self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::InFile { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One data record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Line of the file where the record starts (1-based; the header is line 1).
    pub line: usize,
    /// One cell per header column (missing trailing cells are empty).
    pub cells: Vec<Cell>,
    /// What is wrong with the record as a whole (too many fields, invalid UTF-8), if anything.
    pub problem: Option<String>,
}

/// A TSV file: header and records.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub header: Vec<String>,
    pub records: Vec<Record>,
}

impl Table {
    /// Reads `path`. Errors (one line naming the file) are for the file as a whole: it cannot
    /// be read, or it has no header; a bad record is kept with its `problem` set.
    /// A spreadsheet (`.xlsx`, ...) is read with [`crate::eval::xlsx::read_spreadsheet`].
    pub fn read(path: &Path) -> Result<Self> {
        if crate::eval::xlsx::is_spreadsheet(path) {
            return crate::eval::xlsx::read_spreadsheet(path);
        }
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        Self::read_from(path, BufReader::with_capacity(1 << 20, file))
    }

    /// Like [`Table::read`] from any reader; `path` names it in messages and is where
    /// [`Table::cell_bytes`] reads cells left in the file.
    pub fn read_from(path: &Path, mut reader: impl BufRead) -> Result<Self> {
        let mut parser = Parser::default();
        let mut raw: Vec<RawRecord> = Vec::new();
        loop {
            let buf = reader
                .fill_buf()
                .with_context(|| format!("{}: cannot read", path.display()))?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            parser.feed(buf, &mut raw);
            reader.consume(n);
        }
        parser.finish(&mut raw);
        let mut records = raw.into_iter();
        let header = loop {
            match records.next() {
                None => bail!("{}: empty file, expected a header line", path.display()),
                Some(r) if r.is_blank() => continue,
                Some(r) => break r,
            }
        };
        let binary = header.fields.iter().any(|f| match f {
            RawField::Text(b) => {
                std::str::from_utf8(b).map_or(true, |s| s.chars().any(|c| c.is_control()))
            }
            RawField::InFile { .. } => false,
        });
        if binary {
            bail!(
                "{}: not a TSV text file: its first line holds binary data (a benchmark in VLMEvalKit's layout starts with a line of tab-separated column names)",
                path.display()
            );
        }
        let header: Vec<String> = header
            .fields
            .into_iter()
            .map(|f| match f {
                RawField::Text(b) => String::from_utf8_lossy(&b).trim().to_string(),
                RawField::InFile { .. } => String::new(),
            })
            .collect();
        if header.iter().any(String::is_empty) {
            bail!(
                "{}: the header line has an empty or overlong column name",
                path.display()
            );
        }
        let width = header.len();
        let records = records
            .filter(|r| !r.is_blank())
            .map(|r| r.into_record(width))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            header,
            records,
        })
    }

    /// Position of the column named `name` (exact match), if any.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The bytes of a cell, read from the file when they were left there.
    pub fn cell_bytes<'a>(&self, cell: &'a Cell) -> Result<Cow<'a, [u8]>> {
        match cell {
            Cell::Text(s) => Ok(Cow::Borrowed(s.as_bytes())),
            Cell::InFile { offset, len } => {
                let mut file = File::open(&self.path)
                    .with_context(|| format!("{}: cannot open", self.path.display()))?;
                let mut bytes = vec![0u8; *len];
                file.seek(SeekFrom::Start(*offset))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .with_context(|| {
                        format!(
                            "{}: cannot read {len} bytes at offset {offset} (file changed?)",
                            self.path.display()
                        )
                    })?;
                Ok(Cow::Owned(bytes))
            }
        }
    }

    /// The text of a cell (read from the file when it was left there).
    pub fn cell_text<'a>(&self, cell: &'a Cell) -> Result<Cow<'a, str>> {
        match cell {
            Cell::Text(s) => Ok(Cow::Borrowed(s.as_str())),
            Cell::InFile { .. } => {
                let bytes = self.cell_bytes(cell)?.into_owned();
                String::from_utf8(bytes)
                    .map(Cow::Owned)
                    .with_context(|| format!("{}: a cell is not valid UTF-8", self.path.display()))
            }
        }
    }
}

#[derive(Debug)]
enum RawField {
    Text(Vec<u8>),
    InFile { offset: u64, len: usize },
}

#[derive(Debug)]
struct RawRecord {
    line: usize,
    fields: Vec<RawField>,
}

impl RawRecord {
    /// pandas skips lines with nothing on them.
    fn is_blank(&self) -> bool {
        self.fields.len() == 1 && matches!(&self.fields[0], RawField::Text(b) if b.is_empty())
    }

    fn into_record(self, width: usize) -> Record {
        let mut problem = None;
        if self.fields.len() > width {
            problem = Some(format!(
                "{} fields, but the header has {width} columns",
                self.fields.len()
            ));
        }
        let mut cells: Vec<Cell> = Vec::with_capacity(width);
        for f in self.fields.into_iter().take(width) {
            cells.push(match f {
                RawField::Text(b) => match String::from_utf8(b) {
                    Ok(s) => Cell::Text(s),
                    Err(e) => {
                        problem.get_or_insert_with(|| "a cell is not valid UTF-8".to_string());
                        Cell::Text(String::from_utf8_lossy(e.as_bytes()).into_owned())
                    }
                },
                RawField::InFile { offset, len } => Cell::InFile { offset, len },
            });
        }
        cells.resize(width, Cell::Text(String::new()));
        Record {
            line: self.line,
            cells,
            problem,
        }
    }
}

/// The tokenizer of pandas' C parser for `sep='\t'`, quotechar `"`, doubled quotes, fed in
/// chunks.
#[derive(Debug, Default)]
struct Parser {
    /// Absolute offset of the next byte.
    pos: u64,
    /// Line number (1-based) of the next byte.
    line: usize,
    fields: Vec<RawField>,
    record_line: usize,
    field: Vec<u8>,
    field_start: u64,
    /// Bytes of the current field when it is left in the file.
    spilled: Option<usize>,
    /// The last byte of the current unquoted field was '\r' (dropped at the line end).
    pending_cr: bool,
    at_field_start: bool,
    quoted: bool,
    in_quotes: bool,
    started: bool,
}

impl Parser {
    fn begin(&mut self) {
        if !self.started {
            self.started = true;
            self.line = 1;
            self.record_line = 1;
            self.at_field_start = true;
        }
    }

    fn push(&mut self, b: u8) {
        if let Some(n) = self.spilled.as_mut() {
            *n += 1;
            return;
        }
        self.field.push(b);
        if !self.quoted && self.field.len() > INLINE_LIMIT {
            self.spilled = Some(self.field.len());
            self.field = Vec::new();
        }
    }

    fn end_field(&mut self) {
        let f = match self.spilled.take() {
            Some(len) => RawField::InFile {
                offset: self.field_start,
                len,
            },
            None => RawField::Text(std::mem::take(&mut self.field)),
        };
        self.fields.push(f);
        self.quoted = false;
        self.in_quotes = false;
        self.at_field_start = true;
        self.pending_cr = false;
    }

    fn end_record(&mut self, out: &mut Vec<RawRecord>) {
        self.end_field();
        out.push(RawRecord {
            line: self.record_line,
            fields: std::mem::take(&mut self.fields),
        });
    }

    fn feed(&mut self, buf: &[u8], out: &mut Vec<RawRecord>) {
        self.begin();
        for &b in buf {
            let pos = self.pos;
            self.pos += 1;
            if self.at_field_start {
                self.at_field_start = false;
                self.field_start = pos;
                if b == b'"' {
                    self.quoted = true;
                    self.in_quotes = true;
                    continue;
                }
            }
            if self.in_quotes {
                if b == b'"' {
                    self.in_quotes = false;
                } else {
                    if b == b'\n' {
                        self.line += 1;
                    }
                    self.push(b);
                }
                continue;
            }
            if self.pending_cr && b != b'\n' {
                // A lone '\r' inside a field is data.
                self.pending_cr = false;
                self.push(b'\r');
            }
            match b {
                b'\t' => self.end_field(),
                b'\n' => {
                    self.end_record(out);
                    self.line += 1;
                    self.record_line = self.line;
                }
                b'\r' => self.pending_cr = true,
                b'"' if self.quoted => {
                    // A doubled quote inside a quoted field.
                    self.in_quotes = true;
                    self.push(b'"');
                }
                _ => self.push(b),
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<RawRecord>) {
        self.begin();
        let open = !self.fields.is_empty() || !self.at_field_start || self.quoted;
        if open {
            self.end_record(out);
        }
    }
}

fn base64_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes base64 as Python's `base64.b64decode` accepts it from VLMEvalKit's files: the
/// standard alphabet (the URL-safe `-` and `_` too), whitespace ignored, padding optional.
/// Anything else is an error naming the first bad character.
pub fn decode_base64(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut seen_pad = false;
    for (i, &c) in data.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            seen_pad = true;
            continue;
        }
        if seen_pad {
            return Err(format!("data after '=' padding at byte {i}"));
        }
        let Some(v) = base64_value(c) else {
            return Err(format!(
                "invalid base64 character {:?} at byte {i}",
                char::from(c)
            ));
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits == 6 {
        return Err("truncated base64 (one character too many)".to_string());
    }
    if out.is_empty() {
        return Err("empty base64".to_string());
    }
    Ok(out)
}

/// Encodes `data` as standard base64 with `=` padding (what Python's `base64.b64encode`
/// writes into VLMEvalKit's image cells).
pub fn encode_base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One TSV field as pandas' `to_csv(sep='\t')` writes it: wrapped in double quotes, inner
/// quotes doubled, when it holds a tab, a quote or a line break; as it is otherwise.
pub fn tsv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\t', '"', '\n', '\r']) {
        std::borrow::Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// One TSV line (fields quoted as needed by [`tsv_field`]) with its `\n`.
pub fn tsv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| tsv_field(f.as_ref()).into_owned())
        .collect::<Vec<_>>()
        .join("\t");
    line.push('\n');
    line
}

/// Parses a Python (or JSON) list literal of strings or numbers, e.g. `['a', "b", 3]`, into
/// the `str()` of each element, as `[str(x) for x in eval(s)]` would give them. Returns
/// `None` when `s` is not such a literal (nested lists, expressions, unbalanced quotes).
pub fn parse_list_literal(s: &str) -> Option<Vec<String>> {
    let chars: Vec<char> = s.trim().chars().collect();
    if chars.first() != Some(&'[') || chars.last() != Some(&']') {
        return None;
    }
    let mut i = 1;
    let end = chars.len() - 1;
    let mut items = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < end && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == end {
            break;
        }
        let c = chars[i];
        let item = if c == '\'' || c == '"' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            loop {
                if i >= end {
                    return None;
                }
                let c = chars[i];
                i += 1;
                if c == quote {
                    break;
                }
                if c == '\\' {
                    if i >= end {
                        return None;
                    }
                    let e = chars[i];
                    i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        '0' => s.push('\0'),
                        '\\' | '\'' | '"' => s.push(e),
                        'x' | 'u' => {
                            let n = if e == 'x' { 2 } else { 4 };
                            if i + n > end {
                                return None;
                            }
                            let hex: String = chars[i..i + n].iter().collect();
                            let v = u32::from_str_radix(&hex, 16).ok()?;
                            s.push(char::from_u32(v)?);
                            i += n;
                        }
                        other => {
                            s.push('\\');
                            s.push(other);
                        }
                    }
                } else {
                    s.push(c);
                }
            }
            s
        } else {
            let start = i;
            while i < end && chars[i] != ',' && !chars[i].is_whitespace() {
                i += 1;
            }
            let token: String = chars[start..i].iter().collect();
            match token.as_str() {
                "True" | "False" | "None" => token,
                t if t.parse::<f64>().is_ok() && !t.is_empty() => token,
                _ => return None,
            }
        };
        items.push(item);
        skip_ws(&mut i);
        if i == end {
            break;
        }
        if chars[i] != ',' {
            return None;
        }
        i += 1;
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        Table::read_from(Path::new("t.tsv"), std::io::Cursor::new(text.as_bytes())).unwrap()
    }

    fn texts(t: &Table, r: usize) -> Vec<String> {
        t.records[r]
            .cells
            .iter()
            .map(|c| t.cell_text(c).map(|s| s.into_owned()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn quoting_as_pandas_writes_it() {
        let t = table(
            "index\tquestion\tanswer\n1\t\"say \"\"hi\"\"\ttab\"\tA\r\n\n2\t\"two\nlines\"\tB\n3\tshort\n",
        );
        assert_eq!(t.header, ["index", "question", "answer"]);
        assert_eq!(t.records.len(), 3);
        assert_eq!(texts(&t, 0), ["1", "say \"hi\"\ttab", "A"]);
        assert_eq!(t.records[1].line, 4);
        assert_eq!(texts(&t, 1), ["2", "two\nlines", "B"]);
        assert_eq!(t.records[2].line, 6);
        assert_eq!(texts(&t, 2), ["3", "short", ""]);
        assert!(t.records.iter().all(|r| r.problem.is_none()));
    }

    #[test]
    fn long_cells_stay_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tsv");
        let big = "Q".repeat(INLINE_LIMIT * 3 + 7);
        std::fs::write(&path, format!("a\tb\n{big}\tx\ny\t{big}\r\n")).unwrap();
        let t = Table::read(&path).unwrap();
        assert!(matches!(t.records[0].cells[0], Cell::InFile { .. }));
        assert_eq!(t.cell_text(&t.records[0].cells[0]).unwrap(), big);
        assert_eq!(t.cell_text(&t.records[1].cells[1]).unwrap(), big);
        assert_eq!(t.cell_text(&t.records[1].cells[0]).unwrap(), "y");
    }

    #[test]
    fn bad_records_are_marked() {
        let t = table("a\tb\n1\t2\t3\n\u{0}\t\"x\n");
        assert!(t.records[0].problem.as_ref().unwrap().contains("3 fields"));
        // An unterminated quote runs to the end of the file.
        assert_eq!(texts(&t, 1)[1], "x\n");
        assert!(Table::read_from(Path::new("e.tsv"), std::io::Cursor::new(b"\n\n")).is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(decode_base64(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVs\nbG8").unwrap(), b"hello");
        assert!(decode_base64(b"aGV*bG8=").unwrap_err().contains("'*'"));
        assert!(decode_base64(b"aGVsb").is_err());
        assert!(decode_base64(b"").is_err());
    }

    #[test]
    fn list_literals() {
        assert_eq!(
            parse_list_literal("['a', \"b\\\"c\", 'it\\'s', 3, 4.5]").unwrap(),
            ["a", "b\"c", "it's", "3", "4.5"]
        );
        assert_eq!(parse_list_literal(" [] ").unwrap(), Vec::<String>::new());
        assert_eq!(parse_list_literal("['x',]").unwrap(), ["x"]);
        assert_eq!(parse_list_literal("plain"), None);
        assert_eq!(parse_list_literal("[a]"), None);
        assert_eq!(parse_list_literal("['a' 'b']"), None);
        assert_eq!(parse_list_literal("['unterminated]"), None);
    }
}

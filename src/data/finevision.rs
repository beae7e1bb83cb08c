//! FineVision Parquet data (Hugging Face `HuggingFaceM4/FineVision` layout): columns
//! `images` (list of `{bytes, path}`, HF datasets' `Sequence(Image())`) and `texts` (list of
//! `{user, assistant}`); any other column (`source`, ratings, ...) is ignored and not read.
//! Rows carry no `<image>` markers: the images belong at the start of the first user turn.
//!
//! Memory stays bounded however large a file is: opening a file reads only its footer (row
//! counts per row group, schema); reading rows decodes only the row groups that hold a
//! wanted row, streaming one row at a time, and only the `images` and `texts` columns.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use parquet::schema::types::{Type, TypePtr};

use super::{ImageSource, Sample, Turn};

/// The first (and last) four bytes of every Parquet file.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// Rows decoded per column batch: bounds how many encoded images are held at once.
const BATCH_ROWS: usize = 64;

/// Whether `path` is a file that starts with the Parquet magic bytes.
pub fn is_parquet(path: &Path) -> Result<bool> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match f.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow!("{}: cannot read: {e}", path.display())),
        }
    }
    Ok(got == 4 && &head == MAGIC)
}

/// One Parquet file: its row groups' sizes, from the footer.
#[derive(Debug, Clone)]
struct ParquetFile {
    path: PathBuf,
    /// Rows in each row group, in file order.
    groups: Vec<usize>,
    rows: usize,
}

/// Parquet errors can be long (a value's bytes); keep messages to one short line.
fn short(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    let s = s.lines().next().unwrap_or("").trim();
    let s = s.strip_prefix("Parquet error: ").unwrap_or(s);
    if s.starts_with("Error reading BYTE_ARRAY as String") {
        return "a string column holds invalid UTF-8".to_string();
    }
    // Corrupt files can put anything into messages: no control characters on a terminal.
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

thread_local! {
    /// Set while [`guard`] runs: the panic hook stays quiet, the panic becomes an error.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it into an error naming `path`. We validate what we
/// can before reading (schema, codecs, column chunk ranges: [`ParquetFile::open`]), but
/// the parquet crate still panics on some corrupt data pages (seen: a slice index out of
/// range in its bit unpacking, on a one-byte change), and user data must never crash the
/// program. This is the last resort: the process-wide panic hook is wrapped once so that
/// panics inside a guard print nothing (the message goes into the error instead); every
/// other panic still reaches the previous hook.
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    match result {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(anyhow!(
                "{}: corrupt Parquet file (reader failed: {})",
                path.display(),
                short(what)
            ))
        }
    }
}

/// A Parquet file whose readers fail at the end of the file instead of returning no bytes.
/// The parquet crate skips unknown thrift fields with `io::copy`, which stops quietly at the
/// end of the data, so a corrupt page header declaring a list of millions of elements made
/// it loop millions of times over an exhausted file (28 s for a 100 KB file, found by
/// fuzzing); an error ends it at once. Well-formed files never read past their end.
struct StrictFile(File);

/// A reader of [`StrictFile`]: `Ok(0)` (end of file) becomes an `UnexpectedEof` error.
struct StrictRead<R>(R);

impl<R: Read> Read for StrictRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.0.read(buf)? {
            0 => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            )),
            n => Ok(n),
        }
    }
}

impl parquet::file::reader::Length for StrictFile {
    fn len(&self) -> u64 {
        self.0.len()
    }
}

impl parquet::file::reader::ChunkReader for StrictFile {
    type T = StrictRead<std::io::BufReader<File>>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(StrictRead(self.0.get_read(start)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        self.0.get_bytes(start, length)
    }
}

fn open_reader(path: &Path, groups: Option<Vec<bool>>) -> Result<SerializedFileReader<StrictFile>> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let file = StrictFile(file);
    let reader = match groups {
        None => SerializedFileReader::new(file),
        Some(keep) => {
            let options = ReadOptionsBuilder::new()
                .with_predicate(Box::new(move |_, i| keep.get(i).copied().unwrap_or(false)))
                .build();
            SerializedFileReader::new_with_options(file, options)
        }
    };
    reader.map_err(|e| {
        anyhow!(
            "{}: not a readable Parquet file ({})",
            path.display(),
            short(e)
        )
    })
}

/// A column chunk we will read: a codec this build decodes, and a byte range inside the
/// file (the parquet crate asserts on negative ones).
fn check_chunk(
    path: &Path,
    col: &parquet::file::metadata::ColumnChunkMetaData,
    file_size: u64,
) -> Result<()> {
    use parquet::basic::Compression;
    let codec = col.compression();
    if !matches!(
        codec,
        Compression::UNCOMPRESSED | Compression::SNAPPY | Compression::ZSTD(_)
    ) {
        bail!(
            "{}: column {} is compressed with {codec:?}, which this build does not read \
             (supported: uncompressed, snappy, zstd)",
            path.display(),
            col.column_path()
        );
    }
    let start = col
        .dictionary_page_offset()
        .unwrap_or(col.data_page_offset());
    let len = col.compressed_size();
    let inside = start >= 0
        && len >= 0
        && (start as u64)
            .checked_add(len as u64)
            .is_some_and(|end| end <= file_size);
    if !inside {
        bail!(
            "{}: corrupt Parquet file (column {} claims bytes {start}..+{len} of a \
             {file_size}-byte file)",
            path.display(),
            col.column_path()
        );
    }
    Ok(())
}

/// Is `t` a list (3-level `LIST` → repeated group → element, or the legacy 2-level form)
/// of groups holding the byte-array fields `fields`? Returns the element group's fields.
fn list_of_struct(t: &Type, fields: &[&str]) -> bool {
    if !t.is_group() {
        return false;
    }
    let [repeated] = t.get_fields() else {
        return false;
    };
    if !repeated.is_group()
        || repeated.get_basic_info().repetition() != parquet::basic::Repetition::REPEATED
    {
        return false;
    }
    let element: &Type = match repeated.get_fields() {
        [only] if only.is_group() => only,
        _ => repeated,
    };
    fields.iter().all(|name| {
        element.get_fields().iter().any(|f| {
            f.name() == *name
                && f.is_primitive()
                && f.get_physical_type() == parquet::basic::Type::BYTE_ARRAY
        })
    })
}

/// The `images` and `texts` columns of a file's schema, checked.
fn projection(path: &Path, root: &Type) -> Result<Type> {
    let find = |name: &str| -> Option<TypePtr> {
        root.get_fields().iter().find(|f| f.name() == name).cloned()
    };
    let (Some(images), Some(texts)) = (find("images"), find("texts")) else {
        let have: Vec<String> = root
            .get_fields()
            .iter()
            .map(|f| format!("{:?}", f.name()))
            .collect();
        bail!(
            "{}: not FineVision data: needs columns \"images\" and \"texts\", has {}",
            path.display(),
            have.join(", ")
        );
    };
    if !list_of_struct(&images, &["bytes"]) {
        bail!(
            "{}: column \"images\" is not a list of {{bytes, path}}",
            path.display()
        );
    }
    if !list_of_struct(&texts, &["user", "assistant"]) {
        bail!(
            "{}: column \"texts\" is not a list of {{user, assistant}}",
            path.display()
        );
    }
    Type::group_type_builder(root.name())
        .with_fields(vec![images, texts])
        .build()
        .map_err(|e| anyhow!("{}: {}", path.display(), short(e)))
}

impl ParquetFile {
    /// Reads the footer only: schema and row counts.
    fn open(path: &Path) -> Result<Self> {
        guard(path, || {
            let reader = open_reader(path, None)?;
            let meta = reader.metadata();
            projection(path, meta.file_metadata().schema())?;
            let size = std::fs::metadata(path)
                .with_context(|| format!("{}: cannot open", path.display()))?
                .len();
            for group in meta.row_groups() {
                for col in group.columns() {
                    let part = col.column_path().parts().first().map(String::as_str);
                    if matches!(part, Some("images" | "texts")) {
                        check_chunk(path, col, size)?;
                    }
                }
            }
            let groups = meta
                .row_groups()
                .iter()
                .map(|g| usize::try_from(g.num_rows()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    anyhow!(
                        "{}: corrupt Parquet file (negative row count)",
                        path.display()
                    )
                })?;
            Ok(ParquetFile {
                path: path.to_path_buf(),
                rows: groups.iter().sum(),
                groups,
            })
        })
    }

    /// Streams the rows `rows` (sorted, strictly increasing, each < self.rows).
    fn read(&self, rows: Vec<usize>) -> FileRows {
        FileRows {
            file: self.clone(),
            rows: rows.into_iter(),
            state: None,
            failed: false,
        }
    }
}

/// Which row groups (of `groups` rows each) hold at least one of the sorted rows `wanted`:
/// the only ones decoded.
fn groups_to_read(groups: &[usize], wanted: &[usize]) -> Vec<bool> {
    let mut keep = vec![false; groups.len()];
    let mut start = 0;
    let mut w = wanted.iter().peekable();
    for (g, &n) in groups.iter().enumerate() {
        while w.peek().is_some_and(|&&r| r < start) {
            w.next();
        }
        keep[g] = w.peek().is_some_and(|&&r| r < start + n);
        start += n;
    }
    keep
}

/// Streaming reader of some rows of one file.
struct FileRows {
    file: ParquetFile,
    rows: std::vec::IntoIter<usize>,
    /// Opened on the first `next`: the row iterator over the kept row groups, and the
    /// (start row, row count) of each kept row group still ahead.
    state: Option<(RowIter<'static>, std::collections::VecDeque<(usize, usize)>)>,
    failed: bool,
}

impl FileRows {
    fn start(
        &self,
        wanted: &[usize],
    ) -> Result<(RowIter<'static>, std::collections::VecDeque<(usize, usize)>)> {
        let path = &self.file.path;
        let keep = groups_to_read(&self.file.groups, wanted);
        let mut kept = std::collections::VecDeque::new();
        let mut start = 0;
        for (&n, &k) in self.file.groups.iter().zip(&keep) {
            if k {
                kept.push_back((start, n));
            }
            start += n;
        }
        let reader = open_reader(path, Some(keep))?;
        let proj = projection(path, reader.metadata().file_metadata().schema())?;
        let iter = RowIter::from_file_into(Box::new(reader))
            .project(Some(proj))
            .map_err(|e| anyhow!("{}: {}", path.display(), short(e)))?
            .with_batch_size(BATCH_ROWS);
        Ok((iter, kept))
    }

    /// The next wanted row, skipping the others of its row group.
    fn next_row(&mut self, target: usize) -> Result<Result<Sample>> {
        let path = self.file.path.clone();
        if self.state.is_none() {
            let mut wanted = vec![target];
            wanted.extend(self.rows.as_slice());
            self.state = Some(self.start(&wanted)?);
        }
        let (iter, kept) = self.state.as_mut().expect("set above");
        loop {
            let Some(&(start, n)) = kept.front() else {
                bail!(
                    "{}: corrupt Parquet file (row {target} not found)",
                    path.display()
                );
            };
            let row = match iter.next() {
                Some(Ok(row)) => row,
                Some(Err(e)) => bail!("{}: corrupt Parquet file ({})", path.display(), short(e)),
                None => bail!(
                    "{}: corrupt Parquet file (ends before row {target})",
                    path.display()
                ),
            };
            kept.pop_front();
            if n > 1 {
                kept.push_front((start + 1, n - 1));
            }
            if start == target {
                return Ok(to_sample(row, &path, target));
            }
            if start > target {
                bail!("{}: rows must be read in increasing order", path.display());
            }
        }
    }
}

impl Iterator for FileRows {
    type Item = Result<Result<Sample>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let target = self.rows.next()?;
        let path = self.file.path.clone();
        let r = guard(&path, || self.next_row(target));
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// One row as a [`Sample`]; problems of this row alone are its error.
fn to_sample(row: Row, path: &Path, index: usize) -> Result<Sample> {
    let origin = format!("{}#{index}", path.display());
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut images = Vec::new();
    let mut turns = Vec::new();
    for (name, field) in row.into_columns() {
        match name.as_str() {
            "images" => {
                for (k, item) in list(&field, &origin, "images")?.iter().enumerate() {
                    let Field::Group(img) = item else {
                        bail!("{origin}: images[{k}] is not a {{bytes, path}} record");
                    };
                    let bytes = match column(img, "bytes") {
                        Some(Field::Bytes(b)) => b.data().to_vec(),
                        Some(Field::Null) | None => bail!("{origin}: images[{k}] has no bytes"),
                        Some(_) => bail!("{origin}: images[{k}].bytes is not binary"),
                    };
                    let stored = match column(img, "path") {
                        Some(Field::Str(s)) => s.clone(),
                        _ => String::new(),
                    };
                    let name = if stored.is_empty() {
                        format!("{file_name}#{index}/img{k}")
                    } else {
                        stored
                    };
                    images.push(ImageSource::Bytes { bytes, name });
                }
            }
            "texts" => {
                for (k, item) in list(&field, &origin, "texts")?.iter().enumerate() {
                    let Field::Group(pair) = item else {
                        bail!("{origin}: texts[{k}] is not a {{user, assistant}} record");
                    };
                    for role in ["user", "assistant"] {
                        let text = match column(pair, role) {
                            Some(Field::Str(s)) => s.clone(),
                            Some(Field::Bytes(b)) => String::from_utf8(b.data().to_vec())
                                .map_err(|_| anyhow!("{origin}: texts[{k}].{role} is not UTF-8"))?,
                            Some(Field::Null) | None => {
                                bail!("{origin}: texts[{k}].{role} is missing")
                            }
                            Some(_) => bail!("{origin}: texts[{k}].{role} is not a string"),
                        };
                        turns.push(Turn {
                            role: role.to_string(),
                            text,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Sample {
        images,
        turns,
        origin,
    })
}

/// The elements of a list field; a null list is empty.
fn list<'a>(field: &'a Field, origin: &str, what: &str) -> Result<&'a [Field]> {
    match field {
        Field::ListInternal(l) => Ok(l.elements()),
        Field::Null => Ok(&[]),
        _ => bail!("{origin}: {what} is not a list"),
    }
}

fn column<'a>(row: &'a Row, name: &str) -> Option<&'a Field> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, f)| f)
}

/// A FineVision source: Parquet files read as one sequence of rows, in the given order.
#[derive(Debug, Clone)]
pub struct ParquetSource {
    files: Vec<ParquetFile>,
    rows: usize,
}

impl ParquetSource {
    /// Opens the files (footers only); an unreadable file or one without the FineVision
    /// columns is an error naming it.
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let files = files
            .iter()
            .map(|p| ParquetFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        let rows = files.iter().map(|f| f.rows).sum();
        Ok(ParquetSource { files, rows })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The files, in row order, with their row counts.
    pub fn files(&self) -> impl Iterator<Item = (&Path, usize)> {
        self.files.iter().map(|f| (f.path.as_path(), f.rows))
    }

    /// Streams the rows `rows` (sorted, strictly increasing, in range: checked by the
    /// caller). An outer error is a file-level problem and ends that file's rows; rows of
    /// later files still follow (callers that stop at the first such error, stop).
    pub fn read(&self, rows: &[usize]) -> impl Iterator<Item = Result<Result<Sample>>> + '_ {
        let mut per_file: Vec<Vec<usize>> = vec![Vec::new(); self.files.len()];
        let mut start = 0;
        let mut f = 0;
        for &r in rows {
            while r >= start + self.files[f].rows {
                start += self.files[f].rows;
                f += 1;
            }
            per_file[f].push(r - start);
        }
        self.files
            .iter()
            .zip(per_file)
            .filter(|(_, rows)| !rows.is_empty())
            .flat_map(|(file, rows)| file.read(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_row_groups_holding_a_wanted_row_are_read() {
        let groups = [3, 3, 1, 0, 4];
        assert_eq!(
            groups_to_read(&groups, &[0]),
            [true, false, false, false, false]
        );
        assert_eq!(
            groups_to_read(&groups, &[2, 3]),
            [true, true, false, false, false]
        );
        assert_eq!(
            groups_to_read(&groups, &[6, 10]),
            [false, false, true, false, true]
        );
        assert_eq!(
            groups_to_read(&groups, &[7, 8, 9]),
            [false, false, false, false, true]
        );
        assert_eq!(groups_to_read(&groups, &[]), [false; 5]);
    }

    #[test]
    fn a_panic_in_the_reader_becomes_an_error_naming_the_file() {
        let path = Path::new("data/x.parquet");
        let r: Result<()> = guard(path, || panic!("index out of range"));
        let msg = crate::error_line(&r.unwrap_err());
        assert_eq!(
            msg,
            "data/x.parquet: corrupt Parquet file (reader failed: index out of range)"
        );
        // Guards nest and leave the flag as they found it.
        let r = guard(path, || guard(path, || -> Result<u8> { panic!("inner") }));
        assert!(r.is_err());
        assert!(!GUARDED.with(|g| g.get()));
        assert_eq!(guard(path, || Ok(5)).unwrap(), 5);
    }
}

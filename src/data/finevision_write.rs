//! Writing FineVision Parquet files, with the schema Hugging Face `datasets` writes for
//! FineVision (through pyarrow): `images: list<struct<bytes: binary, path: string>>`,
//! `texts: list<struct<user: string, assistant: string>>`, `source: string`, every field
//! nullable, lists in the standard 3-level `LIST` encoding (`list` / `element`).
//!
//! Uses the parquet crate's low-level column writers (no arrow): each leaf column gets its
//! values with definition and repetition levels computed here. Snappy compression, no
//! statistics (image bytes would land in them), no dictionary for the image bytes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

/// The FineVision schema as pyarrow writes it.
pub const FINEVISION_SCHEMA: &str = "
message schema {
  optional group images (LIST) {
    repeated group list {
      optional group element {
        optional binary bytes;
        optional binary path (STRING);
      }
    }
  }
  optional group texts (LIST) {
    repeated group list {
      optional group element {
        optional binary user (STRING);
        optional binary assistant (STRING);
      }
    }
  }
  optional binary source (STRING);
}
";

/// One FineVision row: encoded images (stored with a null `path`, as `datasets` stores
/// images given as bytes), conversation turns (user, assistant) and the source name.
#[derive(Debug, Clone, PartialEq)]
pub struct FineVisionRow {
    pub images: Vec<Vec<u8>>,
    pub texts: Vec<(String, String)>,
    pub source: String,
}

/// Values and levels of one leaf column of a row group.
#[derive(Default)]
struct Leaf {
    values: Vec<ByteArray>,
    def: Vec<i16>,
    rep: Vec<i16>,
}

impl Leaf {
    /// Appends one row's list of optional values (levels for `optional list / repeated
    /// list / optional element / optional leaf`: 4 = value, 3 = null leaf, 1 = empty list).
    fn push_list(&mut self, items: impl ExactSizeIterator<Item = Option<ByteArray>>) {
        if items.len() == 0 {
            self.def.push(1);
            self.rep.push(0);
            return;
        }
        for (k, item) in items.enumerate() {
            self.rep.push(i16::from(k > 0));
            match item {
                Some(v) => {
                    self.def.push(4);
                    self.values.push(v);
                }
                None => self.def.push(3),
            }
        }
    }
}

/// Writes `rows` to `path` (created or truncated) in row groups of `group_rows` rows.
pub fn write_finevision(path: &Path, rows: &[FineVisionRow], group_rows: usize) -> Result<()> {
    let err =
        |e: parquet::errors::ParquetError| anyhow!("{}: cannot write Parquet: {e}", path.display());
    let schema = Arc::new(parse_message_type(FINEVISION_SCHEMA).map_err(err)?);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_dictionary_enabled(
            ColumnPath::from(vec![
                "images".to_string(),
                "list".to_string(),
                "element".to_string(),
                "bytes".to_string(),
            ]),
            false,
        )
        .build();
    let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    let mut writer = SerializedFileWriter::new(file, schema, Arc::new(props)).map_err(err)?;
    for chunk in rows.chunks(group_rows.max(1)) {
        // Leaves in schema order: images.bytes, images.path, texts.user, texts.assistant, source.
        let mut leaves: Vec<Leaf> = (0..5).map(|_| Leaf::default()).collect();
        for row in chunk {
            leaves[0].push_list(row.images.iter().map(|b| Some(ByteArray::from(b.clone()))));
            leaves[1].push_list(row.images.iter().map(|_| None));
            leaves[2].push_list(
                row.texts
                    .iter()
                    .map(|(u, _)| Some(ByteArray::from(u.as_str()))),
            );
            leaves[3].push_list(
                row.texts
                    .iter()
                    .map(|(_, a)| Some(ByteArray::from(a.as_str()))),
            );
            leaves[4].values.push(ByteArray::from(row.source.as_str()));
            leaves[4].def.push(1);
        }
        let mut group = writer.next_row_group().map_err(err)?;
        let mut k = 0;
        while let Some(mut col) = group.next_column().map_err(err)? {
            let leaf = &leaves[k];
            let rep = (k < 4).then_some(leaf.rep.as_slice());
            col.typed::<ByteArrayType>()
                .write_batch(&leaf.values, Some(&leaf.def), rep)
                .map_err(err)?;
            col.close().map_err(err)?;
            k += 1;
        }
        group.close().map_err(err)?;
    }
    writer.close().map_err(err)?;
    Ok(())
}

/// `dir/part-00000.parquet`, the file name HF datasets' layout uses for one shard.
pub fn part_path(dir: &Path, part: usize) -> PathBuf {
    dir.join(format!("part-{part:05}.parquet"))
}

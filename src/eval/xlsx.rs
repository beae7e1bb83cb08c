//! Reading spreadsheets (`.xlsx`, as VLMEvalKit writes its predictions) into a [`Table`].
//!
//! VLMEvalKit saves predictions with pandas' `to_excel` (xlsxwriter) and reads them back
//! with `pd.read_excel` (openpyxl), then every evaluator takes `str()` of a cell. Here each
//! cell becomes the text `str()` gives for the value openpyxl and pandas produce for it:
//! - text as written (including surrounding spaces and line breaks), except that control
//!   characters other than tab and line feed stay in the escaped form `_x000D_` in which
//!   xlsxwriter stores them, as openpyxl does not decode it (calamine does; we re-encode);
//! - a number: a whole number as an integer ("3", also for 3.0, as pandas converts
//!   integral floats), any other as Python's `repr` ("0.5", "1e-05");
//! - a boolean "True" / "False"; an error cell its code ("#N/A", which pandas reads as NaN);
//! - a date as pandas prints a timestamp ("2024-01-02 00:00:00");
//! - an empty cell "" (NaN, like an empty TSV field).
//!
//! Not reproduced: a writer other than xlsxwriter that stores a printable character as
//! `_xHHHH_` (openpyxl keeps the escape, we read the character); and pandas' *column* types. A column whose cells are all numbers but one
//! empty becomes float64 in pandas, and `str()` then writes "3.0" where the cell said 3; we
//! keep each cell's own text, as we do for TSV files.
//!
//! The first sheet is read (pandas' default); its first row is the header; rows with no
//! value at all are skipped, as pandas skips blank lines.

use std::path::Path;

use anyhow::{bail, Result};
use calamine::{Data, Reader};

use crate::eval::tsv::{Cell, Record, Table};

/// Whether `path` names a spreadsheet by its extension (.xlsx, .xlsm, .xlsb, .xls, .ods).
pub fn is_spreadsheet(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["xlsx", "xlsm", "xlsb", "xls", "ods"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// Reads the first sheet of a spreadsheet as a table: header from the first row, one
/// record per non-empty row after it (`line` is the sheet's 1-based row number).
pub fn read_spreadsheet(path: &Path) -> Result<Table> {
    // calamine is defensive, but a panic on a malformed archive must not take the program
    // down: it becomes the file's error.
    let range = crate::catch_panic(|| -> Result<calamine::Range<Data>> {
        let mut book = calamine::open_workbook_auto(path)
            .map_err(|e| anyhow::anyhow!("{}: not a readable spreadsheet: {e}", path.display()))?;
        match book.worksheet_range_at(0) {
            None => bail!("{}: the workbook has no sheet", path.display()),
            Some(r) => r.map_err(|e| {
                anyhow::anyhow!("{}: cannot read its first sheet: {e}", path.display())
            }),
        }
    })
    .map_err(|panic| {
        anyhow::anyhow!("{}: not a readable spreadsheet ({panic})", path.display())
    })??;
    // Only the Office Open XML formats escape control characters as `_xHHHH_`.
    let escapes = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx") || e.eq_ignore_ascii_case("xlsm"));
    let Some((row0, col0)) = range.start() else {
        bail!(
            "{}: the first sheet is empty, expected a header row",
            path.display()
        );
    };
    let (height, width) = range.get_size();
    // Absolute sheet coordinates: a sheet whose data starts below row 1 or right of column
    // A has empty cells there, as pandas reads it.
    let cell = |r: usize, c: usize| -> Option<&Data> {
        let (r, c) = (r.checked_sub(row0 as usize)?, c.checked_sub(col0 as usize)?);
        range.get((r, c))
    };
    let rows = row0 as usize + height;
    let cols = col0 as usize + width;
    let blank = |r: usize| (0..cols).all(|c| cell(r, c).is_none_or(|d| matches!(d, Data::Empty)));
    let Some(header_row) = (0..rows).find(|&r| !blank(r)) else {
        bail!(
            "{}: the first sheet is empty, expected a header row",
            path.display()
        );
    };
    let mut header: Vec<String> = (0..cols)
        .map(|c| {
            cell(header_row, c)
                .map(|d| cell_text(d, escapes))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    // Columns right of the last named one carry nothing pandas would keep a name for.
    while header.last().is_some_and(String::is_empty) {
        header.pop();
    }
    if header.iter().any(String::is_empty) {
        bail!(
            "{}: the header row (row {}) has an empty column name",
            path.display(),
            header_row + 1
        );
    }
    let mut records = Vec::new();
    for r in header_row + 1..rows {
        if blank(r) {
            continue;
        }
        let extra =
            (header.len()..cols).any(|c| cell(r, c).is_some_and(|d| !matches!(d, Data::Empty)));
        records.push(Record {
            line: r + 1,
            cells: (0..header.len())
                .map(|c| {
                    Cell::Text(
                        cell(r, c)
                            .map(|d| cell_text(d, escapes))
                            .unwrap_or_default(),
                    )
                })
                .collect(),
            problem: extra.then(|| {
                format!(
                    "row {} has values right of the last named column ({} columns)",
                    r + 1,
                    header.len()
                )
            }),
        });
    }
    Ok(Table {
        path: path.to_path_buf(),
        header,
        records,
    })
}

/// A cell as `str()` writes the value pandas reads for it (module documentation);
/// `escapes`: text cells of an .xlsx file, whose control characters openpyxl leaves escaped.
pub fn cell_text(data: &Data, escapes: bool) -> String {
    match data {
        Data::Empty => String::new(),
        Data::String(s) if escapes => openpyxl_text(s),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => python_number(*f),
        Data::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Data::Error(e) => e.to_string(),
        Data::DateTime(d) => {
            if d.is_datetime() {
                timestamp_text(d.as_f64())
            } else {
                // A duration: its value in days, as a number.
                python_number(d.as_f64())
            }
        }
    }
}

/// The text openpyxl reads for a string calamine decoded: xlsxwriter stores a control
/// character other than tab and line feed as `_xHHHH_`, which openpyxl keeps as it is.
fn openpyxl_text(s: &str) -> String {
    // xlsxwriter's set: U+0000–U+001F but tab and line feed.
    let escaped = |c: char| c < ' ' && c != '\t' && c != '\n';
    if !s.chars().any(escaped) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if escaped(c) {
            out.push_str(&format!("_x{:04X}_", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// `str()` of the value pandas makes of a numeric cell: integral values become Python ints
/// (printed in full), others stay floats (Python's shortest round-trip `repr`).
pub fn python_number(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 {
        if f.abs() < 9.0e18 {
            (f as i64).to_string()
        } else {
            // The exact integer the float holds, as int(f) prints it.
            format!("{f:.0}")
        }
    } else {
        python_float_repr(f)
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in [-4, 16), else as `d.ddde±XX`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "-1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{text}")
    } else {
        let mantissa = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exp_sign}{:02}", exp.abs())
    }
}

/// `str()` of a pandas Timestamp for an Excel date serial (days since 1899-12-30, the
/// 1900 date system): "YYYY-MM-DD HH:MM:SS", with microseconds when there are any.
fn timestamp_text(serial: f64) -> String {
    let micros_total = (serial * 86_400_000_000.0).round() as i64;
    let days = micros_total.div_euclid(86_400_000_000);
    let micros = micros_total.rem_euclid(86_400_000_000);
    // Days from 1970-01-01: 1899-12-30 is 25 569 days before it.
    let (y, m, d) = civil_from_days(days - 25_569);
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let mut text = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        text.push_str(&format!(".{frac:06}"));
    }
    text
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings are Python 3's `repr(float)` / `str(int(f))` (the language's
    /// definition: shortest round-trip digits, exponent form outside [1e-4, 1e16)).
    #[test]
    fn numbers_print_as_python_prints_them() {
        let cases: &[(f64, &str)] = &[
            (0.5, "0.5"),
            (3.0, "3"),
            (-2.0, "-2"),
            (-0.0, "0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (1e16, "10000000000000000"),
            (1e22, "10000000000000000000000"),
            (1.5e16, "15000000000000000"),
            (2.5e-300, "2.5e-300"),
            (1.0 / 3.0, "0.3333333333333333"),
            (-1234.5, "-1234.5"),
        ];
        for (f, want) in cases {
            assert_eq!(python_number(*f), *want, "{f}");
        }
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1e15), "1000000000000000.0");
        assert_eq!(python_float_repr(2.0), "2.0");
        assert_eq!(python_float_repr(f64::NAN), "nan");
    }

    /// 1900 date system, days counted from 1899-12-30 (which absorbs Excel's fictitious
    /// 1900-02-29 for every date from March 1900): 45 293 is 2024-01-02, 61 is 1900-03-01
    /// (calendar arithmetic), a fraction .5 is noon.
    #[test]
    fn dates_print_as_pandas_timestamps() {
        assert_eq!(timestamp_text(45_293.0), "2024-01-02 00:00:00");
        assert_eq!(timestamp_text(45_293.5), "2024-01-02 12:00:00");
        assert_eq!(timestamp_text(61.0), "1900-03-01 00:00:00");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }
}

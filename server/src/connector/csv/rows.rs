//! The CSV reading itself, on any buffered input: the header, the rows as
//! objects or bad records with the line an editor shows. Pure (std, csv,
//! serde_json and `hashed_ids`) so the fuzz crate can include it without the
//! server.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::rc::Rc;

use csv::{ByteRecord, ReaderBuilder};
use serde_json::{Map, Value};

use crate::hashed_ids::{HashedIds, hash_id};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
}

/// One row after the header.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Object {
        uid: String,
        attributes: Map<String, Value>,
        line: u64,
    },
    /// A row that cannot become an object; `uid` when it is readable anyway.
    Bad {
        line: u64,
        uid: Option<String>,
        reason: String,
    },
}

/// Why the file cannot be read at all (the caller adds which file).
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{0}")]
    Io(String),
    #[error("line 1: {0}")]
    Header(String),
    #[error("the file is empty: a header row is required")]
    Empty,
    #[error("line 1: the header is not valid UTF-8")]
    HeaderNotUtf8,
    #[error("line 1: no \"{column}\" column in the header {header:?}")]
    NoUidColumn { column: String, header: Vec<String> },
}

pub type CsvReader<R> = csv::Reader<LineCounter<R>>;

/// A reader past any BOM; the returned [`Lines`] turns the reader's byte
/// offsets into the line numbers an editor shows (the csv crate's own count
/// skips blank lines and is one short after CRLF).
pub fn reader<R: BufRead>(mut input: R, format: Format) -> std::io::Result<(CsvReader<R>, Lines)> {
    if input.fill_buf()?.starts_with(UTF8_BOM) {
        input.consume(UTF8_BOM.len());
    }
    let newlines = Rc::new(RefCell::new(VecDeque::new()));
    let input = LineCounter {
        inner: input,
        offset: 0,
        line_has_content: false,
        carriage_return: None,
        newlines: Rc::clone(&newlines),
    };
    let reader = ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(format.delimiter)
        .quote(format.quote)
        .escape(format.escape)
        .double_quote(format.escape.is_none())
        .from_reader(input);
    Ok((
        reader,
        Lines {
            newlines,
            passed: 0,
        },
    ))
}

/// A newline's offset, and whether the line it ends was blank.
type Newline = (u64, bool);

/// Passes bytes through, noting every line end: LF, CRLF, and a lone CR,
/// which ends a csv record as well (and a line in most editors).
pub struct LineCounter<R> {
    inner: R,
    offset: u64,
    line_has_content: bool,
    /// A CR not yet known to be lone (the next byte may be its LF).
    carriage_return: Option<u64>,
    newlines: Rc<RefCell<VecDeque<Newline>>>,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut newlines = self.newlines.borrow_mut();
        for (i, byte) in buf[..n].iter().enumerate() {
            let at = self.offset + i as u64;
            if let Some(cr) = self.carriage_return.take()
                && *byte != b'\n'
            {
                newlines.push_back((cr, !self.line_has_content));
                self.line_has_content = false;
            }
            match byte {
                b'\n' => {
                    newlines.push_back((at, !self.line_has_content));
                    self.line_has_content = false;
                }
                b'\r' => self.carriage_return = Some(at),
                _ => self.line_has_content = true,
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Line numbers from byte offsets. Only newlines still ahead of the reader's
/// position are kept, so memory is bounded by its read-ahead buffer.
pub struct Lines {
    newlines: Rc<RefCell<VecDeque<Newline>>>,
    passed: u64,
}

impl Lines {
    /// The line of the record the reader placed at `byte` (offsets only
    /// grow). A newline at `byte` ends the previous line (the LF of a CRLF),
    /// and a record never starts on a blank line the reader skipped.
    fn at(&mut self, byte: u64) -> u64 {
        let mut newlines = self.newlines.borrow_mut();
        while newlines
            .front()
            .is_some_and(|(p, blank)| *p <= byte || *blank)
        {
            newlines.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

/// The rows of one file after its header.
pub struct Rows<R> {
    reader: CsvReader<R>,
    lines: Lines,
    header: Vec<String>,
    uid_index: usize,
    record: ByteRecord,
    /// Lines where each uid was first seen, by hash: 16 bytes a row however
    /// long the uids are.
    seen: HashedIds<u64>,
}

impl<R: BufRead> Rows<R> {
    /// Reads the header, which must name `uid_column`.
    pub fn open(input: R, format: Format, uid_column: &str) -> Result<Self, RowsError> {
        let (mut reader, lines) =
            reader(input, format).map_err(|e| RowsError::Io(e.to_string()))?;
        let mut record = ByteRecord::new();
        if !reader
            .read_byte_record(&mut record)
            .map_err(|e| RowsError::Header(e.to_string()))?
        {
            return Err(RowsError::Empty);
        }
        let header: Vec<String> = record
            .iter()
            .map(|f| std::str::from_utf8(f).map(|s| s.trim().to_string()))
            .collect::<Result<_, _>>()
            .map_err(|_| RowsError::HeaderNotUtf8)?;
        let uid_index =
            header
                .iter()
                .position(|h| h == uid_column)
                .ok_or_else(|| RowsError::NoUidColumn {
                    column: uid_column.to_string(),
                    header: header.clone(),
                })?;
        Ok(Rows {
            reader,
            lines,
            header,
            uid_index,
            record,
            seen: HashedIds::new(),
        })
    }

    /// The column names (the fuzz target checks rows against them).
    #[allow(dead_code)]
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The next row; `Ok(None)` at the end, `Err` when the input fails.
    pub fn next_row(&mut self) -> Result<Option<Row>, RowsError> {
        let row = match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return Ok(None),
            Ok(true) => {
                let line = self
                    .record
                    .position()
                    .map_or(0, |p| self.lines.at(p.byte()));
                match row(&self.header, self.uid_index, &self.record, line) {
                    Row::Object {
                        uid,
                        attributes,
                        line,
                    } => {
                        let first = self.seen.get_or_insert(hash_id(&uid), line);
                        if first == line {
                            Row::Object {
                                uid,
                                attributes,
                                line,
                            }
                        } else {
                            Row::Bad {
                                line,
                                reason: format!("duplicate uid \"{uid}\" (first on line {first})"),
                                uid: Some(uid),
                            }
                        }
                    }
                    bad => bad,
                }
            }
            Err(e) if e.is_io_error() => return Err(RowsError::Io(e.to_string())),
            Err(e) => Row::Bad {
                line: e.position().map_or(0, |p| self.lines.at(p.byte())),
                uid: None,
                reason: e.to_string(),
            },
        };
        Ok(Some(row))
    }
}

fn row(header: &[String], uid_index: usize, record: &ByteRecord, line: u64) -> Row {
    // A bad row still names its uid when it can: a reconciliation then knows
    // the source exists and must not treat its target as orphaned.
    let readable_uid = record
        .get(uid_index)
        .and_then(|f| std::str::from_utf8(f).ok())
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let bad = |reason: String| Row::Bad {
        line,
        uid: readable_uid.clone(),
        reason,
    };
    if record.len() != header.len() {
        return bad(format!(
            "expected {} fields, got {}",
            header.len(),
            record.len()
        ));
    }
    let mut attributes = Map::with_capacity(header.len());
    for (index, (name, field)) in header.iter().zip(record.iter()).enumerate() {
        let Ok(text) = std::str::from_utf8(field) else {
            return bad(format!("field {} ({name}) is not valid UTF-8", index + 1));
        };
        attributes.insert(name.clone(), Value::String(text.to_string()));
    }
    let uid = attributes
        .get(&header[uid_index])
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_string();
    if uid.is_empty() {
        return bad(format!("empty uid (column {})", header[uid_index]));
    }
    Row::Object {
        uid,
        attributes,
        line,
    }
}

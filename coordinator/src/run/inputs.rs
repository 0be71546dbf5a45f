//! `run`'s inputs, streamed: the lines (or NUL-separated records, `-0`) of `--input FILE` or
//! stdin, read one at a time and never held whole; or the arguments after `:::`, several
//! sources giving every combination (the first source varies slowest, as in GNU parallel).
//! `--colsep` splits a record into columns and `-n N` gives N records to one job; either way
//! a job's arguments are what `{1}`, `{2}`... name. Jobs are numbered from 1 over the whole
//! input (`{#}`), so a `--shard` slice or a `--resume` run keeps the numbers of the full run.

use std::collections::HashSet;
use std::io::{self, BufRead};

/// One job's number and arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobArgs {
    pub seq: u64,
    pub args: Vec<Vec<u8>>,
}

/// Where records come from.
pub enum Source {
    /// `:::` sources, each a list of values.
    Args(Vec<Vec<Vec<u8>>>),
    /// A stream of records ending in `sep`.
    Reader(Box<dyn BufRead + Send>),
}

/// How records become jobs.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// Record separator: `\n`, or NUL with `-0`.
    pub sep: u8,
    pub colsep: Option<Vec<u8>>,
    /// Records per job (`-n`), at least 1.
    pub per_job: usize,
    /// Only jobs with index (from 0) in this range (`--shard`).
    pub jobs: Option<(u64, u64)>,
    /// Job numbers not to run (`--resume`).
    pub skip: HashSet<u64>,
}

/// The jobs of a source, in order.
pub struct Inputs {
    source: Source,
    shape: Shape,
    /// `:::` combinations: the next index of each source.
    odometer: Vec<usize>,
    exhausted: bool,
    next_job: u64,
}

impl Inputs {
    pub fn new(source: Source, mut shape: Shape) -> Inputs {
        shape.per_job = shape.per_job.max(1);
        let (odometer, exhausted) = match &source {
            Source::Args(sources) => (vec![0; sources.len()], sources.iter().any(Vec::is_empty)),
            Source::Reader(_) => (Vec::new(), false),
        };
        Inputs { source, shape, odometer, exhausted, next_job: 0 }
    }

    /// The next record's columns, or `None` at the end.
    fn record(&mut self) -> io::Result<Option<Vec<Vec<u8>>>> {
        if self.exhausted {
            return Ok(None);
        }
        match &mut self.source {
            Source::Args(sources) => {
                let record = sources.iter().zip(&self.odometer).map(|(s, &i)| s[i].clone());
                let record: Vec<Vec<u8>> = record.collect();
                // The last source turns fastest.
                let mut k = sources.len();
                loop {
                    if k == 0 {
                        self.exhausted = true;
                        break;
                    }
                    k -= 1;
                    self.odometer[k] += 1;
                    if self.odometer[k] < sources[k].len() {
                        break;
                    }
                    self.odometer[k] = 0;
                }
                Ok(Some(record))
            }
            Source::Reader(reader) => {
                let mut line = Vec::new();
                if reader.read_until(self.shape.sep, &mut line)? == 0 {
                    self.exhausted = true;
                    return Ok(None);
                }
                if line.last() == Some(&self.shape.sep) {
                    line.pop();
                }
                Ok(Some(match &self.shape.colsep {
                    Some(sep) => split(&line, sep),
                    None => vec![line],
                }))
            }
        }
    }
}

/// Splits `line` at every `sep`.
pub fn split(line: &[u8], sep: &[u8]) -> Vec<Vec<u8>> {
    if sep.is_empty() {
        return vec![line.to_vec()];
    }
    let mut cols = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= line.len() {
        if &line[i..i + sep.len()] == sep {
            cols.push(line[start..i].to_vec());
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    cols.push(line[start..].to_vec());
    cols
}

impl Iterator for Inputs {
    type Item = io::Result<JobArgs>;

    fn next(&mut self) -> Option<io::Result<JobArgs>> {
        loop {
            let index = self.next_job;
            if self.shape.jobs.is_some_and(|(_, end)| index >= end) {
                return None;
            }
            let mut args = Vec::new();
            let mut records = 0;
            while records < self.shape.per_job {
                match self.record() {
                    Ok(Some(cols)) => args.extend(cols),
                    Ok(None) => break,
                    Err(err) => return Some(Err(err)),
                }
                records += 1;
            }
            if records == 0 {
                return None;
            }
            self.next_job += 1;
            let seq = index + 1;
            let wanted = self.shape.jobs.is_none_or(|(first, _)| index >= first);
            if wanted && !self.shape.skip.contains(&seq) {
                return Some(Ok(JobArgs { seq, args }));
            }
        }
    }
}

/// Counts the records of a file (for `--shard`): separators, plus a last record without one.
pub fn count_records(reader: &mut dyn BufRead, sep: u8) -> io::Result<u64> {
    let mut count = 0u64;
    let mut last = None;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        count += buf.iter().filter(|&&b| b == sep).count() as u64;
        last = buf.last().copied();
        let n = buf.len();
        reader.consume(n);
    }
    Ok(count + u64::from(last.is_some_and(|b| b != sep)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn jobs(source: Source, shape: Shape) -> Vec<(u64, Vec<String>)> {
        Inputs::new(source, shape)
            .map(|j| {
                let j = j.expect("reads");
                (j.seq, j.args.iter().map(|a| String::from_utf8_lossy(a).into()).collect())
            })
            .collect()
    }

    fn reader(text: &str) -> Source {
        Source::Reader(Box::new(io::Cursor::new(text.as_bytes().to_vec())))
    }

    fn lines() -> Shape {
        Shape { sep: b'\n', per_job: 1, ..Shape::default() }
    }

    #[test]
    fn every_combination_of_the_sources_first_slowest() {
        let got = jobs(Source::Args(vec![vec![b("a"), b("b")], vec![b("1"), b("2")]]), lines());
        let args: Vec<Vec<String>> = got.into_iter().map(|j| j.1).collect();
        assert_eq!(args, [["a", "1"], ["a", "2"], ["b", "1"], ["b", "2"]]);
        assert!(jobs(Source::Args(vec![vec![b("a")], vec![]]), lines()).is_empty());
    }

    #[test]
    fn lines_columns_and_groups() {
        let got = jobs(reader("a,b\n\nc\nd"), Shape { colsep: Some(b(",")), ..lines() });
        assert_eq!(got.len(), 4, "an empty line is an input; a last line needs no newline");
        assert_eq!(got[0].1, ["a", "b"]);
        assert_eq!(got[1].1, [""]);
        let got = jobs(reader("1\n2\n3\n"), Shape { per_job: 2, ..lines() });
        assert_eq!(got, vec![(1, vec!["1".into(), "2".into()]), (2, vec!["3".into()])]);
        let got = jobs(reader("x y\0z\n\0"), Shape { sep: 0, ..lines() });
        assert_eq!(got.iter().map(|j| j.1[0].clone()).collect::<Vec<_>>(), ["x y", "z\n"]);
    }

    #[test]
    fn shards_and_resumes_keep_the_job_numbers_of_the_whole_run() {
        let shape = Shape { jobs: Some((1, 3)), ..lines() };
        let got = jobs(reader("a\nb\nc\nd\n"), shape);
        assert_eq!(got.iter().map(|j| j.0).collect::<Vec<_>>(), [2, 3]);
        let shape = Shape { skip: [1, 3].into_iter().collect(), ..lines() };
        let got = jobs(reader("a\nb\nc\nd\n"), shape);
        assert_eq!(got.iter().map(|j| j.0).collect::<Vec<_>>(), [2, 4]);
    }

    #[test]
    fn records_are_counted_like_they_are_read() {
        for (text, n) in [("", 0), ("a", 1), ("a\n", 1), ("a\n\nb", 3), ("\n", 1)] {
            let mut r = io::Cursor::new(text.as_bytes());
            assert_eq!(count_records(&mut r, b'\n').unwrap(), n, "{text:?}");
        }
        assert_eq!(split(b"a::b:", b"::"), vec![b("a"), b("b:")]);
    }
}

//! `run`'s command template: GNU parallel's replacement strings, expanded into one job's argv
//! (no shell: words stay words), or with `--shell` into one `sh -c` script with every value
//! quoted.
//!
//! | string | becomes |
//! |---|---|
//! | `{}` | the input (every argument of the job, each its own word when `{}` is a whole word) |
//! | `{.}` | the input without its extension (`a/b.tar.gz` -> `a/b.tar`) |
//! | `{/}` | its basename; `{//}` its dirname (as Perl's `dirname`); `{/.}` basename without extension |
//! | `{#}` | the job number, from 1 |
//! | `{%}` | the worker slot running it, 1 to `--workers` (filled in by the worker) |
//! | `{N}`, `{N.}`, `{N/}`, `{N//}`, `{N/.}` | the N-th argument: source, column or `-n` input |
//!
//! A template without any of them gets the job's arguments appended, each a word. Anything
//! else in braces is left as it is.

/// How a value is transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    Whole,
    NoExt,
    Base,
    Dir,
    BaseNoExt,
}

/// A piece of a template word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Lit(Vec<u8>),
    /// `{}` (`None`: every argument) or `{N}` (`Some(N)`, from 1), with a modifier.
    Arg(Option<usize>, Modifier),
    Seq,
    Slot,
}

/// A parsed command template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    words: Vec<Vec<Segment>>,
    has_replacements: bool,
    shell: bool,
}

/// One job's command: its argv and where the worker writes its slot number.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Expanded {
    pub argv: Vec<Vec<u8>>,
    /// `(word, byte offset)`, in increasing order.
    pub slot_marks: Vec<(u32, u32)>,
}

fn modifier(text: &[u8]) -> Option<Modifier> {
    Some(match text {
        b"" => Modifier::Whole,
        b"." => Modifier::NoExt,
        b"/" => Modifier::Base,
        b"//" => Modifier::Dir,
        b"/." => Modifier::BaseNoExt,
        _ => return None,
    })
}

/// The replacement string `inner` (between the braces), if it is one.
fn replacement(inner: &[u8]) -> Option<Segment> {
    match inner {
        b"#" => return Some(Segment::Seq),
        b"%" => return Some(Segment::Slot),
        _ => {}
    }
    let digits = inner.iter().take_while(|b| b.is_ascii_digit()).count();
    let m = modifier(&inner[digits..])?;
    if digits == 0 {
        return Some(Segment::Arg(None, m));
    }
    let n: usize = std::str::from_utf8(&inner[..digits]).ok()?.parse().ok()?;
    (n >= 1).then_some(Segment::Arg(Some(n), m))
}

fn parse_word(word: &[u8]) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < word.len() {
        if word[i] == b'{' {
            if let Some(len) = word[i + 1..].iter().position(|&b| b == b'}') {
                if let Some(seg) = replacement(&word[i + 1..i + 1 + len]) {
                    if !lit.is_empty() {
                        segments.push(Segment::Lit(std::mem::take(&mut lit)));
                    }
                    segments.push(seg);
                    i += len + 2;
                    continue;
                }
            }
        }
        lit.push(word[i]);
        i += 1;
    }
    if !lit.is_empty() || segments.is_empty() {
        segments.push(Segment::Lit(lit));
    }
    segments
}

/// `{.}`: drops the last `.` and what follows it, unless a `/` follows it.
pub fn no_ext(v: &[u8]) -> &[u8] {
    match v.iter().rposition(|&b| b == b'.') {
        Some(dot) if !v[dot..].contains(&b'/') => &v[..dot],
        _ => v,
    }
}

/// `{/}`: everything after the last `/`.
pub fn base(v: &[u8]) -> &[u8] {
    v.iter().rposition(|&b| b == b'/').map_or(v, |s| &v[s + 1..])
}

/// `{//}`: Perl's `File::Basename::dirname`, as GNU parallel uses it.
pub fn dir(v: &[u8]) -> Vec<u8> {
    fn trim(mut s: &[u8]) -> &[u8] {
        while s.len() > 1 && s.ends_with(b"/") {
            s = &s[..s.len() - 1];
        }
        s
    }
    let v = trim(v);
    match v.iter().rposition(|&b| b == b'/') {
        None => b".".to_vec(),
        Some(0) => b"/".to_vec(),
        Some(slash) => trim(&v[..slash]).to_vec(),
    }
}

fn apply(m: Modifier, v: &[u8]) -> Vec<u8> {
    match m {
        Modifier::Whole => v.to_vec(),
        Modifier::NoExt => no_ext(v).to_vec(),
        Modifier::Base => base(v).to_vec(),
        Modifier::Dir => dir(v),
        Modifier::BaseNoExt => no_ext(base(v)).to_vec(),
    }
}

/// Quotes `v` for `sh` as GNU parallel does: bare when it is safe, else in single quotes.
pub fn shell_quote(v: &[u8]) -> Vec<u8> {
    let safe = |b: &u8| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(b);
    if !v.is_empty() && v.iter().all(safe) {
        return v.to_vec();
    }
    let mut out = vec![b'\''];
    for &b in v {
        if b == b'\'' {
            out.extend_from_slice(b"'\"'\"'");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

impl Template {
    /// Parses the command's words; `shell`: the words are `sh` script text. Refuses `{0}`
    /// (and `{0.}`...): arguments count from 1, and GNU parallel's reading of it is not
    /// documented.
    pub fn parse(words: &[Vec<u8>], shell: bool) -> Result<Template, String> {
        for word in words {
            let mut rest = &word[..];
            while let Some(open) = rest.iter().position(|&b| b == b'{') {
                rest = &rest[open + 1..];
                let Some(close) = rest.iter().position(|&b| b == b'}') else { break };
                let inner = &rest[..close];
                let digits = inner.iter().take_while(|b| b.is_ascii_digit()).count();
                let zero = digits > 0 && inner[..digits].iter().all(|&b| b == b'0');
                if zero && modifier(&inner[digits..]).is_some() {
                    let text = String::from_utf8_lossy(inner);
                    return Err(format!(
                        "{{{text}}} is not a replacement string: arguments count from 1 \
                         ({{1}} is the first, {{}} the whole input)"
                    ));
                }
            }
        }
        let words: Vec<Vec<Segment>> = words.iter().map(|w| parse_word(w)).collect();
        let has_replacements = words.iter().flatten().any(|s| !matches!(s, Segment::Lit(_)));
        Ok(Template { words, has_replacements, shell })
    }

    /// The highest N of the template's `{N}` strings (0 if none).
    pub fn highest_arg(&self) -> usize {
        let numbered = self.words.iter().flatten().filter_map(|seg| match seg {
            Segment::Arg(Some(n), _) => Some(*n),
            _ => None,
        });
        numbered.max().unwrap_or(0)
    }

    /// The command for job `seq` with arguments `args`.
    pub fn expand(&self, args: &[Vec<u8>], seq: u64) -> Expanded {
        if self.shell {
            return self.expand_shell(args, seq);
        }
        let mut out = Expanded::default();
        for word in &self.words {
            if let [Segment::Arg(None, m)] = word[..] {
                out.argv.extend(args.iter().map(|a| apply(m, a)));
                continue;
            }
            if let [Segment::Arg(Some(n), _)] = word[..] {
                if n > args.len() {
                    continue; // GNU parallel drops a missing argument that is a whole word.
                }
            }
            let mut w = Vec::new();
            for seg in word {
                match seg {
                    Segment::Slot => out.slot_marks.push((out.argv.len() as u32, w.len() as u32)),
                    _ => self.push_value(&mut w, seg, args, seq, false),
                }
            }
            out.argv.push(w);
        }
        if !self.has_replacements {
            out.argv.extend(args.iter().cloned());
        }
        out
    }

    fn push_value(&self, w: &mut Vec<u8>, seg: &Segment, args: &[Vec<u8>], seq: u64, quote: bool) {
        let q = |v: Vec<u8>| if quote { shell_quote(&v) } else { v };
        match seg {
            Segment::Lit(text) => w.extend_from_slice(text),
            Segment::Seq => w.extend_from_slice(seq.to_string().as_bytes()),
            Segment::Slot => {}
            Segment::Arg(None, m) => {
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        w.push(b' ');
                    }
                    w.extend(q(apply(*m, a)));
                }
            }
            Segment::Arg(Some(n), m) => {
                let v = args.get(n - 1).map_or_else(Vec::new, |a| apply(*m, a));
                w.extend(q(v));
            }
        }
    }

    fn expand_shell(&self, args: &[Vec<u8>], seq: u64) -> Expanded {
        let mut script = Vec::new();
        let mut marks = Vec::new();
        for (i, word) in self.words.iter().enumerate() {
            if i > 0 {
                script.push(b' ');
            }
            for seg in word {
                match seg {
                    Segment::Slot => marks.push((2, script.len() as u32)),
                    _ => self.push_value(&mut script, seg, args, seq, true),
                }
            }
        }
        if !self.has_replacements {
            for a in args {
                script.push(b' ');
                script.extend(shell_quote(a));
            }
        }
        Expanded { argv: vec![b"sh".to_vec(), b"-c".to_vec(), script], slot_marks: marks }
    }

    /// The template as given (its words joined by spaces), for shard headers.
    pub fn text(&self) -> String {
        let words: Vec<String> = self
            .words
            .iter()
            .map(|w| {
                w.iter()
                    .map(|seg| match seg {
                        Segment::Lit(t) => String::from_utf8_lossy(t).into_owned(),
                        Segment::Seq => "{#}".into(),
                        Segment::Slot => "{%}".into(),
                        Segment::Arg(n, m) => {
                            let n = n.map_or(String::new(), |n| n.to_string());
                            let m = match m {
                                Modifier::Whole => "",
                                Modifier::NoExt => ".",
                                Modifier::Base => "/",
                                Modifier::Dir => "//",
                                Modifier::BaseNoExt => "/.",
                            };
                            format!("{{{n}{m}}}")
                        }
                    })
                    .collect()
            })
            .collect();
        let mut text = words.join(" ");
        if self.shell {
            text.insert_str(0, "sh -c ");
        }
        text
    }

    /// The command as a shell would read it (for `--dry-run` and the joblog): the `sh -c`
    /// script itself under `--shell`, else every word quoted as needed.
    pub fn display(&self, cmd: &Expanded, slot: u64) -> Vec<u8> {
        let job = powerpool_shared::jobs::JobCommand {
            argv: cmd.argv.iter().map(|w| serde_bytes::ByteBuf::from(w.clone())).collect(),
            slot_marks: cmd.slot_marks.clone(),
        };
        let argv = job.argv_for_slot(slot);
        if self.shell {
            return argv.into_iter().nth(2).unwrap_or_default();
        }
        let quoted: Vec<Vec<u8>> = argv.iter().map(|w| shell_quote(w)).collect();
        quoted.join(&b' ')
    }
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;

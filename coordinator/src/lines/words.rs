//! `--exec COMMAND` split into words as `sh` would split it, without running a shell: spaces
//! and tabs separate words; `'...'` keeps everything literally; `"..."` keeps everything but
//! `\"` and `\\`; a backslash outside quotes escapes the next character. No expansion of any
//! kind (`$VAR`, `*`, `~`): for that, `--shell`. Also the report of a lines run.

use super::LinesPlan;
use crate::errors::Error;
use crate::pool::Stats;

/// Splits `text` into words; an error for an unclosed quote or no words at all.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a ' quote is not closed".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a \" quote is not closed".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a \" quote is not closed".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

/// `--report` of a lines run, as JSON text.
pub fn report(
    plan: &LinesPlan,
    stats: &Stats,
    started: std::time::Instant,
    result: &Result<(), Error>,
) -> String {
    let secs = started.elapsed().as_secs_f64();
    let (outcome, exit_code, error) = crate::report::outcome(result);
    let (task, exec) = match &plan.work {
        super::Work::Task(t) => (Some(t.clone()), None),
        super::Work::Exec(spec) => {
            let words: Vec<String> =
                spec.argv.iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect();
            (None, Some(words))
        }
    };
    let failed: Vec<serde_json::Value> = stats
        .failed_items
        .iter()
        .map(|f| serde_json::json!({"line": f.offset + 1, "reason": f.reason}))
        .collect();
    let value = serde_json::json!({
        "command": "map",
        "task": task,
        "exec": exec,
        "input": plan.input.as_ref().map(|p| p.display().to_string()),
        "workers": plan.pool.workers,
        "elapsed_s": secs,
        "restarts": stats.restarts,
        "retries": stats.retried,
        "timeouts": stats.timeouts,
        "recycled": stats.recycled,
        "failed_count": stats.failed_count,
        "failed_items": failed,
        "outcome": outcome,
        "exit_code": exit_code,
        "error": error,
    });
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_sh_without_expansion() {
        let w = split_words(r#"python3 -u 'my worker.py' "a \"b\" \$x" c\ d $HOME"#).unwrap();
        assert_eq!(w, ["python3", "-u", "my worker.py", r#"a "b" $x"#, "c d", "$HOME"]);
        assert_eq!(split_words("  x  ''  ").unwrap(), ["x", ""]);
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a \"b").is_err());
        assert!(split_words("   ").is_err());
    }
}

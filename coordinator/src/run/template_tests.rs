//! The replacement strings against what GNU parallel 20221122 printed for the same inputs
//! (`parallel -k printf '[%s]' {} {.} {/} {//} {/.}`), with no process started.

use super::*;

fn words(ws: &[&str]) -> Vec<Vec<u8>> {
    ws.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn argv(t: &Template, args: &[&str], seq: u64) -> Vec<String> {
    t.expand(&words(args), seq).argv.iter().map(|w| String::from_utf8_lossy(w).into()).collect()
}

#[test]
fn path_modifiers_match_gnu_parallel() {
    // input, {.}, {/}, {//}, {/.}
    let table = [
        ("a/b.c/d", "a/b.c/d", "d", "a/b.c", "d"),
        ("foo.tar.gz", "foo.tar", "foo.tar.gz", ".", "foo.tar"),
        (".bashrc", "", ".bashrc", ".", ""),
        ("/a", "/a", "a", "/", "a"),
        ("a/", "a/", "", ".", ""),
        ("a", "a", "a", ".", "a"),
        ("/", "/", "", "/", ""),
        ("", "", "", ".", ""),
        ("x y", "x y", "x y", ".", "x y"),
        ("dir/.hidden", "dir/", ".hidden", "dir", ""),
        ("a.b/c.d.e", "a.b/c.d", "c.d.e", "a.b", "c.d"),
        (".", "", ".", ".", ""),
        ("..", ".", "..", ".", "."),
        ("a//b", "a//b", "b", "a", "b"),
        ("a.", "a", "a.", ".", "a"),
        ("/a/b/", "/a/b/", "", "/a", ""),
        ("x/.y.z", "x/.y", ".y.z", "x", ".y"),
    ];
    let t = Template::parse(&words(&["printf", "{}", "{.}", "{/}", "{//}", "{/.}", "{#}"]), false)
        .unwrap();
    for (seq, (input, noext, base, dir, basenoext)) in table.into_iter().enumerate() {
        let got = argv(&t, &[input], seq as u64 + 1);
        let seq = (seq + 1).to_string();
        assert_eq!(got, vec!["printf", input, noext, base, dir, basenoext, &seq], "{input:?}");
    }
}

#[test]
fn whole_word_arguments_stay_words_and_embedded_ones_join() {
    let t = Template::parse(&words(&["echo", "{}", "x{}y", "{2}", "{1.}"]), false).unwrap();
    assert_eq!(argv(&t, &["a.c", "b c"], 1), ["echo", "a.c", "b c", "xa.c b cy", "b c", "a"]);
    // A missing argument that is a whole word is dropped; inside a word it is empty.
    let t = Template::parse(&words(&["printf", "{2}", "<{2}>"]), false).unwrap();
    assert_eq!(argv(&t, &["x"], 1), ["printf", "<>"]);
}

#[test]
fn without_replacement_strings_the_arguments_are_appended() {
    let t = Template::parse(&words(&["echo", "-n"]), false).unwrap();
    assert_eq!(argv(&t, &["-e", "two words"], 1), ["echo", "-n", "-e", "two words"]);
    let t = Template::parse(&words(&["echo", "{x}", "{", "}{"]), false).unwrap();
    assert_eq!(argv(&t, &["a"], 1), ["echo", "{x}", "{", "}{", "a"], "not replacement strings");
}

#[test]
fn the_slot_is_marked_for_the_worker_to_fill() {
    let t = Template::parse(&words(&["echo", "s{%}-{%}", "{}"]), false).unwrap();
    let e = t.expand(&words(&["{%}"]), 1);
    assert_eq!(e.slot_marks, vec![(1, 1), (1, 2)]);
    assert_eq!(t.display(&e, 3), b"echo s3-3 '{%}'".to_vec(), "an input's braces stay as given");
}

#[test]
fn shell_mode_quotes_every_value_as_gnu_parallel_does() {
    let t = Template::parse(&words(&["echo {} | tr a b;", "echo", "{#}"]), true).unwrap();
    let e = t.expand(&words(&["it's", "$x"]), 7);
    assert_eq!(e.argv[..2], [b"sh".to_vec(), b"-c".to_vec()]);
    assert_eq!(String::from_utf8_lossy(&e.argv[2]), r#"echo 'it'"'"'s' '$x' | tr a b; echo 7"#);
    let t = Template::parse(&words(&["echo"]), true).unwrap();
    assert_eq!(t.expand(&words(&["a b", "c"]), 1).argv[2], b"echo 'a b' c".to_vec());
    assert_eq!(shell_quote(b""), b"''".to_vec());
    assert_eq!(shell_quote(b"a-b/c.d"), b"a-b/c.d".to_vec());
}

#[test]
fn display_quotes_words_that_need_it() {
    let t = Template::parse(&words(&["echo", "{}"]), false).unwrap();
    let e = t.expand(&words(&["b c"]), 2);
    assert_eq!(t.display(&e, 1), b"echo 'b c'".to_vec());
}

#[test]
fn zero_is_refused_and_the_highest_argument_is_known() {
    for bad in ["{0}", "x{0.}y", "{00/}"] {
        let err = Template::parse(&words(&["echo", bad]), false).unwrap_err();
        assert!(err.contains("count from 1"), "{bad}: {err}");
    }
    let t = Template::parse(&words(&["echo", "{0x}", "{", "{3}", "a{12/.}b"]), false).unwrap();
    assert_eq!(argv(&t, &["v"], 1)[1], "{0x}", "not a replacement string: left as it is");
    assert_eq!(t.highest_arg(), 12);
    assert_eq!(Template::parse(&words(&["echo", "{}"]), true).unwrap().highest_arg(), 0);
}

//! `powerpool man`: man pages from the same clap definitions as the command line, one per
//! subcommand (`powerpool-map(1)`, ...), as the top-level page's SEE ALSO promises.

use crate::cli::Cli;
use crate::errors::Error;
use std::path::Path;

/// The top-level command as clap builds it, subcommands named `powerpool-map` and so on, without
/// clap's `help` subcommand (which has no page).
fn command() -> clap::Command {
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The subcommands that have a page.
fn pages(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

fn man_page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(concat!("powerpool ", env!("CARGO_PKG_VERSION")))
}

/// One page in roff: the top-level one, or `page`'s.
pub fn render(page: Option<&str>) -> Result<Vec<u8>, Error> {
    let cmd = command();
    let chosen = match page {
        None => cmd.clone(),
        Some(name) => pages(&cmd).find(|s| s.get_name() == name).cloned().ok_or_else(|| {
            let names: Vec<&str> = pages(&cmd).map(clap::Command::get_name).collect();
            Error::Usage(format!(
                "no man page for '{name}' (pages: {}; or none for the top-level page)",
                names.join(", ")
            ))
        })?,
    };
    let mut out = Vec::new();
    man_page(chosen).render(&mut out).map_err(Error::Output)?;
    Ok(out)
}

/// Writes every page (`powerpool.1`, `powerpool-map.1`, ...) into `dir`; returns their names.
pub fn write_all(dir: &Path) -> Result<Vec<String>, Error> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!("--dir '{}' is not a directory", dir.display())));
    }
    let cmd = command();
    let mut written = Vec::new();
    for page in std::iter::once(&cmd).chain(pages(&cmd)) {
        let man = man_page(page.clone());
        let path = dir.join(man.get_filename());
        let cannot = |e: std::io::Error| {
            Error::Output(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let mut roff = Vec::new();
        man.render(&mut roff).map_err(cannot)?;
        let (pending, mut file) = crate::outfile::PendingFile::create(&path).map_err(cannot)?;
        std::io::Write::write_all(&mut file, &roff).map_err(cannot)?;
        pending.commit().map_err(cannot)?;
        written.push(man.get_filename());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_a_page_named_after_it() {
        let top = String::from_utf8(render(None).expect("renders")).expect("text");
        assert!(top.contains("powerpool\\-map(1)"), "the top page refers to the others");
        for name in ["map", "fetch", "merge", "tasks", "completions", "man"] {
            let page = String::from_utf8(render(Some(name)).expect("renders")).expect("text");
            assert!(page.contains(&format!(".TH powerpool-{name} 1")), "{name}: {page}");
        }
        assert!(render(Some("worker")).is_err(), "hidden commands have no page");
        assert!(render(Some("help")).is_err());
    }
}

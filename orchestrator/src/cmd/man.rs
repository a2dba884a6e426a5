//! `fidshard man [--out DIR]` (hidden from `--help`): the manual pages (clap_mangen), generated
//! from the same command definition as `--help`. Without `--out`, fidshard(1) on stdout; with
//! it, DIR/fidshard.1 and one page per verb (DIR/fidshard-run.1, ...). `make dist` writes them
//! into dist/share/man/man1/ and `make install` installs them.
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct ManArgs {
    /// Write fidshard.1 and fidshard-VERB.1 for every verb into this folder (created when
    /// missing) instead of printing fidshard.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The pages of the command line `cli` (main's definition).
pub(crate) fn run(args: ManArgs, cli: clap::Command) -> Result<()> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let Some(dir) = args.out else {
        crate::sys::out::print(&String::from_utf8(render(&cli)?)?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pages = std::iter::once(&cli).chain(cli.get_subcommands().filter(|s| !s.is_hide_set()));
    for page in pages {
        let name = page.get_display_name().unwrap_or(page.get_name());
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(page)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        crate::sys::out::outln!("{}", path.display());
    }
    Ok(())
}

/// One page in roff: `.TH FIDSHARD-RUN 1 ...`.
fn render(cmd: &clap::Command) -> Result<Vec<u8>> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name());
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .manual("fidshard manual");
    let mut roff = Vec::new();
    man.render(&mut roff)?;
    Ok(roff)
}

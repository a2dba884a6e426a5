//! `fidshard completions bash|zsh|fish`: the shell's completion script on stdout (clap_complete),
//! generated from the same command definition as `--help`, so it names every verb and option.
//! `make install` installs all three; by hand:
//! `fidshard completions bash > ~/.local/share/bash-completion/completions/fidshard`.
use anyhow::Result;

/// The shells with a completion script.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes the script for `args.shell` of the command line `cli` (main's definition) to stdout.
pub(crate) fn run(args: CompletionsArgs, mut cli: clap::Command) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli, "fidshard", &mut script);
    crate::sys::out::print(&String::from_utf8(script)?);
    Ok(())
}

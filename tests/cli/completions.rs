//! `fidshard completions bash|zsh|fish`, the manual pages (`fidshard man`), and `--help` against
//! the verbs the docs list.
use crate::support::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The verbs `fidshard --help` lists (its "Commands:" section, without `help`).
fn help_verbs() -> BTreeSet<String> {
    let o = fidshard(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let commands = text
        .split("Commands:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no Commands: in --help: {text}"));
    commands
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_string)
        .collect()
}

fn doc(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bash completion script loads, names its function, and completes `fidshard ru` to `run`
/// and `fidshard plan --dev` to `--devices`.
#[test]
fn bash_completion_loads_and_completes_verbs_and_options() {
    let bin = env!("CARGO_BIN_EXE_fidshard");
    let script = format!(
        r#"set -e
source <("{bin}" completions bash)
complete -p fidshard
COMP_WORDS=(fidshard ru); COMP_CWORD=1; COMP_LINE="fidshard ru"; COMP_POINT=${{#COMP_LINE}}
_fidshard fidshard ru fidshard
echo "verbs: ${{COMPREPLY[*]}}"
COMP_WORDS=(fidshard plan --dev); COMP_CWORD=2; COMP_LINE="fidshard plan --dev"; COMP_POINT=${{#COMP_LINE}}
_fidshard fidshard --dev plan
echo "options: ${{COMPREPLY[*]}}"
"#
    );
    let o = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    // `complete -p fidshard`: `complete [-o ...] -F _fidshard fidshard`.
    let complete = out.lines().next().unwrap_or_default();
    assert!(
        complete.starts_with("complete ")
            && complete.contains("-F _fidshard")
            && complete.ends_with(" fidshard"),
        "{out}"
    );
    let verbs = out.lines().find(|l| l.starts_with("verbs: ")).unwrap();
    assert_eq!(verbs, "verbs: run", "{out}");
    let options = out.lines().find(|l| l.starts_with("options: ")).unwrap();
    assert!(
        options.split_whitespace().any(|w| w == "--devices"),
        "{out}"
    );
}

/// The zsh and fish scripts name every verb; an unknown shell is a usage error (exit 2).
#[test]
fn zsh_and_fish_scripts_name_every_verb() {
    let verbs = help_verbs();
    for shell in ["zsh", "fish"] {
        let o = fidshard(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(!text.trim().is_empty(), "{shell}: empty script");
        for v in &verbs {
            assert!(text.contains(v.as_str()), "{shell} script lacks `{v}`");
        }
    }
    let zsh = String::from_utf8_lossy(&fidshard(&["completions", "zsh"]).stdout).into_owned();
    assert!(zsh.starts_with("#compdef fidshard"), "{zsh}");
    let o = fidshard(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `fidshard man` prints fidshard(1); `--out DIR` writes it and one page per verb, each of which
/// renders (with `man -l` where man is installed).
#[test]
fn man_pages_render_and_name_every_verb() {
    let verbs = help_verbs();
    let o = fidshard(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(page.contains(".TH FIDSHARD 1"), "{page}");
    for v in &verbs {
        assert!(
            page.contains(&format!("fidshard\\-{v}(1)")) || page.contains(v.as_str()),
            "fidshard.1 lacks `{v}`"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let o = fidshard(&["man", "--out", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want: BTreeSet<String> = verbs.iter().map(|v| format!("fidshard-{v}.1")).collect();
    want.insert("fidshard.1".into());
    let got: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want);
    let run = std::fs::read_to_string(dir.join("fidshard-run.1")).unwrap();
    assert!(
        run.contains(".TH FIDSHARD-RUN 1") && run.contains("\\-\\-partition"),
        "{run}"
    );
    let man = Command::new("man").arg("--version").output();
    if man.is_ok_and(|o| o.status.success()) {
        let o = Command::new("man")
            .args(["-l", "-P", "cat"])
            .arg(dir.join("fidshard-run.1"))
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "man -l: {}", stderr(&o));
        assert!(
            text.contains("fidshard-run") && text.contains("--restart"),
            "{text}"
        );
    } else {
        eprintln!("man is not installed: checked the roff text only");
    }
}

/// Every verb of `--help` is in the command tables of README.md and docs/operations.md, and
/// every verb they list is one of `--help`.
#[test]
fn help_lists_the_verbs_the_docs_document() {
    let help = help_verbs();
    for v in ["run", "plan", "status", "completions", "eval"] {
        assert!(help.contains(v), "--help lacks {v}: {help:?}");
    }
    assert!(!help.contains("man"), "`man` is hidden from --help");
    // docs/operations.md, "## Commands": one row per verb, `fidshard VERB ...`.
    let ops = doc("docs/operations.md");
    let table = ops
        .split("## Commands\n")
        .nth(1)
        .and_then(|t| t.split("\n\n").next())
        .expect("docs/operations.md has a ## Commands table");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `fidshard "))
        .filter_map(|l| l.split([' ', '`']).next())
        .map(str::to_string)
        .collect();
    assert_eq!(
        documented, help,
        "docs/operations.md's command table vs --help"
    );
    // README.md: the row of `fidshard` in the table of the two binaries.
    let readme = doc("README.md");
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `fidshard` |"))
        .expect("README.md has the row of `fidshard`");
    let cell = row.split('|').nth(2).unwrap();
    let listed: BTreeSet<String> = cell
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert_eq!(listed, help, "README.md's row of `fidshard` vs --help");
}

//! Applies the unified diffs in `fixups/` to a copy of rust-src's `library/`.
//! Pure Rust so that neither `patch` nor `git` has to be installed where
//! kernels are built. Hunks must match their context exactly; a hunk may
//! move (upstream lines added above it) but never fuzz, so a stale fixup
//! fails loudly instead of landing in the wrong place.

use std::path::Path;

struct Hunk {
    old_start: usize,
    old: Vec<String>,
    new: Vec<String>,
}

struct FilePatch {
    path: String,
    hunks: Vec<Hunk>,
}

fn parse(diff: &str) -> Result<Vec<FilePatch>, String> {
    let mut files: Vec<FilePatch> = Vec::new();
    let mut lines = diff.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(target) = line.strip_prefix("+++ ") {
            let target = target.split('\t').next().unwrap_or(target);
            // `git diff` writes `b/<path>`: strip one leading component.
            let path = target.split_once('/').map(|(_, p)| p).unwrap_or(target);
            files.push(FilePatch { path: path.to_owned(), hunks: Vec::new() });
        } else if let Some(range) = line.strip_prefix("@@ -") {
            let file = files.last_mut().ok_or("hunk before any +++ line")?;
            let old_range = range.split(' ').next().unwrap_or("");
            let (start, count) = match old_range.split_once(',') {
                Some((s, c)) => (s, c.parse::<usize>().map_err(|_| "bad hunk count")?),
                None => (old_range, 1),
            };
            let old_start: usize = start.parse().map_err(|_| format!("bad hunk header: {line}"))?;
            let mut hunk = Hunk { old_start, old: Vec::new(), new: Vec::new() };
            let mut old_left = count;
            while let Some(&body) = lines.peek() {
                let (tag, text) = body.split_at(body.len().min(1));
                match tag {
                    " " | "" => {
                        if old_left == 0 {
                            break;
                        }
                        old_left -= 1;
                        hunk.old.push(text.to_owned());
                        hunk.new.push(text.to_owned());
                    }
                    "-" if old_left > 0 && !body.starts_with("--- ") => {
                        old_left -= 1;
                        hunk.old.push(text.to_owned());
                    }
                    "+" if !body.starts_with("+++ ") => hunk.new.push(text.to_owned()),
                    "\\" => {}
                    _ => break,
                }
                lines.next();
            }
            file.hunks.push(hunk);
        }
    }
    if files.is_empty() {
        return Err("no file headers (+++ lines) found".into());
    }
    Ok(files)
}

fn apply_hunks(text: &str, hunks: &[Hunk]) -> Result<String, String> {
    let trailing_newline = text.ends_with('\n');
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    // Lines added or removed by earlier hunks shift the later ones.
    let mut shift: isize = 0;
    for hunk in hunks {
        let expected = (hunk.old_start.saturating_sub(1) as isize + shift).max(0) as usize;
        let matches_at = |at: usize| lines.get(at..at + hunk.old.len()).is_some_and(|window| window == hunk.old);
        let found = (0..=lines.len())
            .flat_map(|d| [expected.checked_sub(d), expected.checked_add(d)])
            .flatten()
            .find(|&at| matches_at(at))
            .ok_or_else(|| {
                format!("hunk at line {} does not match (first context line: {:?})", hunk.old_start, hunk.old.first())
            })?;
        lines.splice(found..found + hunk.old.len(), hunk.new.iter().cloned());
        shift += hunk.new.len() as isize - hunk.old.len() as isize;
    }
    let mut out = lines.join("\n");
    if trailing_newline {
        out.push('\n');
    }
    Ok(out)
}

/// Applies `diff` below `root`. Returns the number of files changed.
pub fn apply(root: &Path, diff: &str) -> Result<usize, String> {
    let files = parse(diff)?;
    for file in &files {
        let path = root.join(&file.path);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let patched = apply_hunks(&text, &file.hunks).map_err(|e| format!("{}: {e}", file.path))?;
        std::fs::write(&path, patched).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIFF: &str = "\
--- a/x.rs
+++ b/x.rs
@@ -2,3 +2,4 @@ fn main
 b
 c
+c2
 d
@@ -6,2 +7,2 @@
 f
-g
+G
";

    #[test]
    fn applies_moved_hunks_and_keeps_the_final_newline() {
        let files = parse(DIFF).expect("parses");
        let text = "new0\na\nb\nc\nd\ne\nf\ng\n";
        let out = apply_hunks(text, &files[0].hunks).expect("applies");
        assert_eq!(out, "new0\na\nb\nc\nc2\nd\ne\nf\nG\n");
    }

    #[test]
    fn refuses_a_hunk_whose_context_is_gone() {
        let files = parse(DIFF).expect("parses");
        assert!(apply_hunks("a\nb\nX\nd\n", &files[0].hunks).is_err());
    }
}

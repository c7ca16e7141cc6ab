//! Counting what a printing kernel's output delivered: every thread prints
//! `hello from thread <id>`; a line that is anything else was torn (cut or
//! interleaved with another), an id never seen was lost. On several devices
//! each id comes once from each.

use std::io::{self, BufRead};

/// What arrived of `expected` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCount {
    pub expected: u64,
    /// Lines (newline-terminated, or a last fragment).
    pub lines: u64,
    /// Well-formed lines with an id in range, each id counted as often as it
    /// is expected.
    pub distinct: u64,
    /// Well-formed lines whose id had been seen as often as expected already.
    pub duplicates: u64,
    /// Lines that are not one whole `hello from thread <id>`.
    pub torn: u64,
}

impl LineCount {
    pub fn lost(&self) -> u64 {
        self.expected - self.distinct
    }

    /// `lost=0 torn=0` (and `dup=N` when there were any).
    pub fn summary(&self) -> String {
        let mut s = format!("lost={} torn={}", self.lost(), self.torn);
        if self.duplicates > 0 {
            s += &format!(" dup={}", self.duplicates);
        }
        s
    }
}

/// Count the lines of `reader` against ids `0..expected`.
pub fn count(reader: impl BufRead, expected: u64) -> io::Result<LineCount> {
    count_copies(reader, expected, 1)
}

/// Count the lines of `reader` against ids `0..ids`, each expected `copies`
/// times (once from each of `copies` devices).
pub fn count_copies(mut reader: impl BufRead, ids: u64, copies: u64) -> io::Result<LineCount> {
    let mut seen = vec![0u64; usize::try_from(ids).unwrap_or(usize::MAX)];
    let mut c = LineCount { expected: ids * copies, ..LineCount::default() };
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(c);
        }
        c.lines += 1;
        let id = line
            .strip_suffix(b"\n")
            .and_then(|l| l.strip_prefix(b"hello from thread "))
            .filter(|d| {
                !d.is_empty() && d.len() <= 10 && d.iter().all(u8::is_ascii_digit) && (d[0] != b'0' || d.len() == 1)
            })
            .and_then(|d| std::str::from_utf8(d).ok()?.parse::<usize>().ok())
            .filter(|&id| id < seen.len());
        match id {
            Some(id) if seen[id] >= copies => c.duplicates += 1,
            Some(id) => {
                seen[id] += 1;
                c.distinct += 1;
            }
            None => c.torn += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_count_once_and_the_rest_is_torn_or_lost() {
        let out = b"hello from thread 1\nhello from thread 0\nhello from thread 1\nhello from thhello from thread 3\n\
                    hello from thread 9\nhello from thread 02\nhello from thread 2";
        let c = count(&out[..], 4).unwrap();
        assert_eq!(c.lines, 7);
        assert_eq!((c.distinct, c.duplicates), (2, 1));
        // Interleaved, out of range, a leading zero, no newline.
        assert_eq!(c.torn, 4);
        assert_eq!(c.lost(), 2);
        assert_eq!(c.summary(), "lost=2 torn=4 dup=1");
    }

    #[test]
    fn on_several_devices_each_id_is_expected_from_each() {
        let out = b"hello from thread 1\nhello from thread 0\nhello from thread 1\nhello from thread 1\n";
        let c = count_copies(&out[..], 2, 2).unwrap();
        assert_eq!((c.expected, c.distinct, c.duplicates), (4, 3, 1));
        assert_eq!(c.summary(), "lost=1 torn=0 dup=1");
    }

    #[test]
    fn nothing_printed_is_all_lost() {
        assert_eq!(count(&b""[..], 3).unwrap().summary(), "lost=3 torn=0");
    }
}

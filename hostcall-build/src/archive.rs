//! Reads the members of an rlib (a System V / GNU `ar` archive). On nvptx
//! the object files rustc puts in an rlib are LLVM bitcode, which is what
//! `llvm-link` wants; `lib.rmeta` and symbol tables are skipped.

/// One archive member: its name and contents.
pub struct Member<'a> {
    pub name: String,
    pub data: &'a [u8],
}

/// Raw bitcode magic `BC\xC0\xDE` and the bitcode wrapper magic.
pub fn is_bitcode(data: &[u8]) -> bool {
    data.starts_with(b"BC\xC0\xDE") || data.starts_with(&[0xDE, 0xC0, 0x17, 0x0B])
}

/// Lists the regular members of `archive`, in archive order.
pub fn members(archive: &[u8]) -> Result<Vec<Member<'_>>, String> {
    const MAGIC: &[u8] = b"!<arch>\n";
    const HEADER: usize = 60;
    let mut rest = archive.strip_prefix(MAGIC).ok_or("not an ar archive")?;
    let mut long_names: &[u8] = &[];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < HEADER || &rest[58..60] != b"`\n" {
            return Err("truncated or corrupt member header".into());
        }
        let field = |range: std::ops::Range<usize>| std::str::from_utf8(&rest[range]).map(str::trim_end).unwrap_or("");
        let raw_name = field(0..16).to_owned();
        let size: usize = field(48..58).parse().map_err(|_| "bad member size")?;
        let data = rest.get(HEADER..HEADER + size).ok_or("member runs past the end")?;
        rest = &rest[(HEADER + size + size % 2).min(rest.len())..];

        let name = match raw_name.as_str() {
            "/" | "/SYM64/" | "__.SYMDEF" | "__.SYMDEF SORTED" => continue,
            "//" => {
                long_names = data;
                continue;
            }
            long if long.starts_with('/') => {
                let offset: usize = long[1..].parse().map_err(|_| "bad long-name offset")?;
                let tail = long_names.get(offset..).ok_or("long-name offset out of range")?;
                let end = tail.iter().position(|&b| b == b'\n').unwrap_or(tail.len());
                String::from_utf8_lossy(&tail[..end]).trim_end_matches('/').to_owned()
            }
            short => short.trim_end_matches('/').to_owned(),
        };
        out.push(Member { name, data });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize) -> Vec<u8> {
        format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644).into_bytes()
    }

    #[test]
    fn reads_short_and_long_names() {
        let long = "a-very-long-member-name.rcgu.o/\n";
        let mut ar = b"!<arch>\n".to_vec();
        ar.extend(header("//", long.len()));
        ar.extend(long.as_bytes());
        ar.extend(header("/0", 5));
        ar.extend(b"BC\xC0\xDEx\n");
        ar.extend(header("lib.rmeta/", 2));
        ar.extend(b"hi");
        let members = members(&ar).expect("valid archive");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "a-very-long-member-name.rcgu.o");
        assert!(is_bitcode(members[0].data));
        assert_eq!(members[1].name, "lib.rmeta");
        assert!(!is_bitcode(members[1].data));
    }
}

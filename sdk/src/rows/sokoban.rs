//! LMM-R1's Sokoban rows: the LMM-R1 `message` layout with an empty or
//! missing `answer`, and `env_path` naming the level saved by LMM-R1's
//! `gen_sokoban_tasks.py` (`np.save` of gym-sokoban's `room_state`). The
//! level is read here and handed to the reward as the `level` metadata, one
//! text row per line in XSB symbols (`#` wall, space floor, `.` target, `$`
//! box, `*` box on target, `@` player), which reward-sokoban reads.

use super::images::resolve_image;
use super::layouts::{lmm_r1, Built};
use super::parse::RowCtx;
use serde_json::{Map, Value};

pub(super) fn sokoban(obj: &mut Map<String, Value>, ctx: &RowCtx) -> Result<Built, String> {
    let (messages, answer) = lmm_r1(obj, ctx, false)?;
    let answer = answer.filter(|a| !a.trim().is_empty());
    let cfg = ctx.config;
    let key = &cfg.level_file_key;
    match obj.remove(key) {
        Some(Value::String(p)) => {
            let path = resolve_image(&p, ctx.base, ctx.granted)
                .map_err(|e| format!("`{key}`: {}", e.replace("image", "level file")))?;
            let bytes =
                std::fs::read(&path).map_err(|e| format!("`{key}`: cannot read {path}: {e}"))?;
            let level = level_from_npy(&bytes).map_err(|e| format!("`{key}` ({path}): {e}"))?;
            obj.insert(cfg.level_key.clone(), Value::String(level));
        }
        Some(other) => {
            return Err(format!(
                "`{key}` must be the path of a .npy level file, got {}",
                super::kind(&other)
            ))
        }
        None if obj.contains_key(&cfg.level_key) => {}
        None => {
            return Err(format!(
                "a Sokoban row needs `{key}` (the level's .npy file) or `{}` (the level as text)",
                cfg.level_key
            ))
        }
    }
    Ok((messages, answer))
}

/// gym-sokoban's room codes as XSB text rows.
pub fn level_from_npy(bytes: &[u8]) -> Result<String, String> {
    let (shape, values) = npy_ints(bytes)?;
    let [rows, cols] = shape[..] else {
        return Err(format!("expected a 2-D level, got shape {shape:?}"));
    };
    if rows == 0 || cols == 0 {
        return Err(format!("the level is empty (shape {shape:?})"));
    }
    let mut out = String::with_capacity(rows * (cols + 1));
    for r in 0..rows {
        if r > 0 {
            out.push('\n');
        }
        for c in 0..cols {
            out.push(match values[r * cols + c] {
                0 => '#',
                1 => ' ',
                2 => '.',
                3 => '*',
                4 => '$',
                5 => '@',
                v => {
                    return Err(format!(
                        "cell ({r}, {c}) holds {v}; gym-sokoban codes are 0..=5"
                    ))
                }
            });
        }
    }
    Ok(out)
}

/// A NumPy `.npy` array of integers: its shape and values in row-major order.
fn npy_ints(b: &[u8]) -> Result<(Vec<usize>, Vec<i64>), String> {
    let rest = b
        .strip_prefix(b"\x93NUMPY")
        .ok_or("not a NumPy .npy file (bad magic)")?;
    let (major, rest) = rest.split_first().ok_or("truncated header")?;
    let rest = rest.get(1..).ok_or("truncated header")?;
    let (hlen, rest) = match major {
        1 if rest.len() >= 2 => (u16::from_le_bytes([rest[0], rest[1]]) as usize, &rest[2..]),
        2 | 3 if rest.len() >= 4 => (
            u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize,
            &rest[4..],
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = rest
        .get(..hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("truncated or non-text header")?;
    let data = &rest[hlen..];
    let descr = dict_str(header, "descr").ok_or("header has no `descr`")?;
    let fortran = header.contains("'fortran_order': True");
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("header has no `shape`")?;
    let shape: Vec<usize> = shape_text
        .trim_start_matches([' ', '('])
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("bad shape `{shape_text}`")))
        .collect::<Result<_, _>>()?;
    let (big, kind, size) = match (descr.as_bytes(), descr.get(2..)) {
        ([order, kind, ..], Some(bits)) => (
            *order == b'>',
            *kind,
            bits.parse::<usize>()
                .map_err(|_| format!("dtype `{descr}`"))?,
        ),
        _ => return Err(format!("dtype `{descr}`")),
    };
    // At most 8 bytes an element (checked below): n * size cannot overflow.
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if !matches!(kind, b'i' | b'u') || !matches!(size, 1 | 2 | 4 | 8) {
        return Err(format!("dtype `{descr}` is not an integer type"));
    }
    if data.len() < n * size {
        return Err(format!(
            "data holds {} bytes, the shape needs {}",
            data.len(),
            n * size
        ));
    }
    let mut values: Vec<i64> = data[..n * size]
        .chunks_exact(size)
        .map(|c| {
            let mut buf = [0u8; 8];
            if big {
                buf[8 - size..].copy_from_slice(c);
                buf.reverse();
            } else {
                buf[..size].copy_from_slice(c);
            }
            let raw = u64::from_le_bytes(buf);
            let shift = 64 - 8 * size as u32;
            if kind == b'i' {
                ((raw << shift) as i64) >> shift
            } else {
                raw as i64
            }
        })
        .collect();
    if fortran && shape.len() == 2 {
        let (r, c) = (shape[0], shape[1]);
        values = (0..r * c).map(|i| values[(i % c) * r + i / c]).collect();
    }
    Ok((shape, values))
}

fn dict_str<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let after = header.split(&format!("'{key}':")).nth(1)?.trim_start();
    let q = after.chars().next()?;
    after[q.len_utf8()..].split(q).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn reads_int64_and_uint8_levels() {
        let cells: [i64; 6] = [0, 5, 4, 2, 1, 3];
        let data: Vec<u8> = cells.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            level_from_npy(&npy("<i8", "(2, 3)", &data)).unwrap(),
            "#@$\n. *"
        );
        let small = npy("|u1", "(1, 3)", &[0, 1, 0]);
        assert_eq!(level_from_npy(&small).unwrap(), "# #");
        let e = level_from_npy(&npy("|u1", "(1, 1)", &[9])).unwrap_err();
        assert!(e.contains("0..=5"), "{e}");
        let e = level_from_npy(&npy("<f8", "(1, 1)", &[0; 8])).unwrap_err();
        assert!(e.contains("integer"), "{e}");
        assert!(level_from_npy(b"PK\x03\x04").unwrap_err().contains("magic"));
        let e = level_from_npy(&npy("<i8", "(2, 3)", &data[..16])).unwrap_err();
        assert!(e.contains("bytes"), "{e}");
    }
}
